"""The pool-based active-learning loop (``kdflow active CONFIG``; :func:`active`).

One round: train the student on the labelled set (the oracle's labels, mixed with the
teacher's cached soft targets as in ``distill``) -> evaluate (validation; test for the
curve only) -> check the stopping rules -> score the unlabelled pool -> select a batch
-> label it -> next round. Everything a round decides is saved in
``<run>/active/state.json`` before the next step starts, so a killed run resumes at its
last finished step and replays it exactly (each round re-seeds from ``train.seed``,
each selection from ``active.seed`` and the batch number). What the run folder gains is
listed in :mod:`kdflow.active.records`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import models, pipeline
from ..config import Config, load_config
from ..data import stratified_sample
from ..data.leakage import overlapping
from ..distillation.distiller import freeze
from ..distillation.teacher_cache import cache_for, teacher_logits
from ..engine.runfolder import kept
from ..errors import KdflowError
from ..metrics import quality
from ..tasks import task_kind
from . import coldstart, oracles, proxy, records, settings
from .coldstart import COLD_STARTS
from .context import Context
from .outputs import PoolPass, needs_members, stream_pool
from .pool import PoolState
from .rounds import RoundTrainer, StudentRounds
from .strategies import NEEDS, SCORES, PoolOutputs, select
from .teacher_rounds import TeacherRounds, fresh_teacher

# who learns from the labels, by active.target
TRAINERS: dict[str, type] = {"student": StudentRounds, "teacher_calls": StudentRounds, "teacher": TeacherRounds}


def open_context(cfg: Config, resume: bool, overwrite: bool) -> Context:
    """The run folder opened, the pool assembled, the teacher and the student template loaded (settings that
    cannot work together refused first)."""
    cfg, resolved = settings.resolve(cfg)
    settings.check(cfg)
    ac = cfg.active
    run = pipeline.setup(cfg, cfg.train, "active", resume, overwrite)
    if resolved:
        run.info(resolved)
    d = run.data
    given = len(d.train) if d.unlabelled is not None else 0  # data.train is the seed set
    pool = d.train + d.unlabelled if d.unlabelled is not None else d.train
    run.data = replace(d, train=pool, unlabelled=None)  # prune_vocab etc. see every pool text
    own_head = ac.target == "teacher" and not pipeline.teacher_is_trained(run)  # the rounds train one
    if settings.needs_teacher(cfg) and not pipeline.teacher_is_trained(run) and not own_head:
        raise KdflowError(f"This active-learning run needs a trained teacher (distill.alpha > 0, oracle "
                          f"{ac.oracle}, strategy {ac.strategy}); run 'kdflow teach' with this config "
                          f"first (it saves {cfg.run_dir / 'teacher'}), or point model.teacher.name at a "
                          "fine-tuned classifier")
    if own_head and ac.initial_strategy == "balanced":
        raise KdflowError("active.initial_strategy balanced sorts the pool by the teacher's predictions, and this "
                          "teacher's head is untrained (the rounds train it); use typicality or random")
    found = fresh_teacher(run) if own_head else pipeline.load_teacher(run)
    if ac.target == "teacher" and not own_head:
        run.info(f"[active] warning: target teacher starts from {found.source}, already fine-tuned for these "
                 "labels; if that was on this pool's labels, the curves overstate what the new labels buy")
    template, s_tokenizer = pipeline.build_student(run, found.model, found.tokenizer)
    pipeline.check_length(template, cfg.data.max_length, "student")
    train_cfg = pipeline.train_settings(run, cfg.train, "student", cfg.model.student, template)
    viewer = "teacher" if ac.target == "teacher" else "student"  # whose outputs rank the pool
    if "mc_probs" in NEEDS[ac.strategy] and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in (
            found.model if viewer == "teacher" else template).modules()):
        fix = ("use a teacher with dropout" if viewer == "teacher"
               else "set model.student.dropout above 0 (e.g. 0.1)")
        raise KdflowError(f"active.strategy {ac.strategy} samples the {viewer} with MC dropout, but the {viewer} has "
                          f"no dropout; {fix} or pick another strategy")
    ctx = Context(cfg, run, pool, given, d.label_names, found.model, found.tokenizer, found.source, template,
                  s_tokenizer, pipeline.featurizer(run, s_tokenizer), train_cfg)
    if settings.needs_teacher(cfg):
        pipeline.check_length(ctx.teacher, cfg.data.max_length, "teacher")
        freeze(ctx.teacher).to(run.acc.device)
        ctx.cache = cache_for(run, ctx.teacher, ctx.tokenizer)
    return ctx


def stop_reason(ctx: Context) -> Optional[str]:
    """Why the run stops after its last finished round, or None."""
    ac, state = ctx.ac, ctx.state
    last = state.rounds[-1]
    metric = ctx.cfg.train.metric
    if ac.budget and spent(ctx) >= ac.budget:
        return f"budget of {ac.budget} {'teacher calls' if ac.target == 'teacher_calls' else 'labels'} reached"
    if ac.rounds and len(state.rounds) >= ac.rounds:
        return f"{ac.rounds} rounds done"
    if ac.stop_parity and ctx.teacher_val is not None:
        if last["validation"][metric] >= (1 - ac.stop_parity) * ctx.teacher_val[metric]:
            return (f"teacher parity: student validation {metric} {last['validation'][metric]:.4f} within "
                    f"{ac.stop_parity:.0%} of the teacher's {ctx.teacher_val[metric]:.4f}")
    if ac.stop_kappa:
        kappas = [rec.get("kappa") for rec in state.rounds[-ac.stop_window:]]
        if len(kappas) == ac.stop_window and all(k is not None and k >= ac.stop_kappa for k in kappas):
            return f"predictions stable: kappa >= {ac.stop_kappa} for {ac.stop_window} rounds"
    if len(state.candidates) == 0:
        return "pool exhausted"
    return None


def spent(ctx: Context) -> int:
    """What the budget counts: teacher calls under ``target: teacher_calls``, labels otherwise."""
    return len(ctx.state.teacher_queries) if ctx.ac.target == "teacher_calls" else len(ctx.state.labels)


class Loop:
    """One active-learning run's steps over its :class:`Context` (see the module docstring)."""

    def __init__(self, ctx: Context, trainer: Optional[RoundTrainer] = None):
        self.ctx = ctx
        self.trainer: RoundTrainer = trainer or TRAINERS[ctx.ac.target]()

    # ------------------------------------------------------------ state
    def open_state(self, resume: bool) -> PoolState:
        """The saved state of the run to resume (its settings checked), or a new one."""
        ctx = self.ctx
        if not resume:
            ctx.state = self.new_state()
            return ctx.state
        if not ctx.state_path.is_file():
            raise KdflowError(f"There is no active-learning run to resume in '{ctx.cfg.run_dir}'; drop --resume to "
                              "start one")
        ctx.state = PoolState.load(ctx.state_path, list(ctx.pool.ids))
        settings.check_resume(ctx.state.signature, ctx.cfg)
        if ctx.state.stopped and ctx.state.rounds and stop_reason(ctx) is None:
            ctx.run.info(f"[active] continuing a run that had stopped ({ctx.state.stopped}): its limits were raised")
            ctx.state.stopped = None
        ctx.run.info(f"[active] resumed: {len(ctx.state.labels)} labels, {len(ctx.state.rounds)} rounds done")
        return ctx.state

    def new_state(self) -> PoolState:
        ctx = self.ctx
        d = ctx.run.data
        state = PoolState(list(ctx.pool.ids), signature=settings.signature(ctx.cfg))
        leaks = overlapping(ctx.pool.inputs, [d.validation, d.test], start=ctx.given)
        state.ignored.update({ctx.pool.ids[i]: "text also in validation or test" for i in leaks})
        if len(leaks):
            ctx.run.info(f"[active] {len(leaks)} pool texts also occur in validation or test: ignored (never "
                         "queried, never trained on)")
        return state

    # ------------------------------------------------------------ labels
    def label(self, positions: np.ndarray, batch: int) -> Optional[dict]:
        ctx = self.ctx
        return oracles.label_batch(positions, batch, ac=ctx.ac, pool=ctx.pool, names=ctx.labels, state=ctx.state,
                                   teacher_probs=ctx.teacher_probs, folder=ctx.folder)

    def ingest(self, path: str) -> None:
        """Add the human labels of the pending batch (checked whole first: nothing is kept on error)."""
        ctx = self.ctx
        pending = ctx.state.pending
        if "words" in ctx.pool.inputs:  # token tagging: the sentences come back with their tags
            wanted = set(pending["ids"])
            words = {key: ctx.pool.inputs["words"][p] for p, key in enumerate(ctx.pool.ids) if key in wanted}
            given, skipped = oracles.read_tags(path, pending["ids"], ctx.labels, words)
        else:
            given, skipped = oracles.read_labels(path, pending["ids"], ctx.labels)
        batch = {k: (v, "teacher") for k, v in pending.get("teacher", {}).items()}
        batch.update({k: (v, "human") for k, v in given.items()})
        ctx.state.pending = None
        ctx.state.add_batch(batch, {k: "skipped by the labeller" for k in skipped})
        ctx.save_state()
        ctx.run.info(f"[active] batch {pending['batch']}: {len(given)} human labels read from {path}"
                     + (f", {len(skipped)} skipped" if skipped else "")
                     + (f", {len(pending.get('teacher', {}))} by the teacher" if pending.get("teacher") else ""))

    def initial_batch(self) -> Optional[dict]:
        ctx = self.ctx
        state, ac = ctx.state, ctx.ac
        if ctx.given:
            state.batch_meta.append({"batch": 0, "strategy": "given (data.train)", "k": ctx.given,
                                     "select_seconds": None})
            gold = oracles.gold_labels(ctx.pool, np.arange(ctx.given), ctx.labels)  # a name, or a label set
            state.add_batch({key: (label, "given") for key, (label, _) in gold.items()})
            return None
        cands = state.candidates
        k = min(ac.initial, len(cands), ac.budget or ac.initial)
        state.batch_meta.append({"batch": 0, "strategy": f"initial ({ac.initial_strategy})", "k": int(k),
                                 "select_seconds": None})
        if ac.initial_strategy in COLD_STARTS:  # the teacher's view of the pool, no gold labels
            pick = coldstart.pick_for(ctx, k, cands)
        elif ac.initial_strategy == "stratified":
            pick = cands[stratified_sample(ctx.pool.targets[cands], k, ac.seed, True)]
        else:
            pick = cands[np.sort(np.random.default_rng(ac.seed).permutation(len(cands))[:k])]
        return self.label(pick, 0)

    # ------------------------------------------------------------ rounds
    def train_round(self) -> dict:
        """Train this round's model(s) on the labelled set, evaluate the student, save it and the state."""
        ctx = self.ctx
        state = ctx.state
        r = len(state.rounds)
        done = self.trainer.fit(ctx, r)
        record = records.evaluate_round(ctx, done.student, r, len(state.batches[r]), done.result)
        record.update(done.extra)
        self.trainer.save(ctx, r)
        ctx.save_student(done.student, done.snaps, r)
        state.rounds.append(record)
        ctx.save_state()
        ctx.prune("student-round-*.safetensors", ctx.student_file(r))  # only once the state names round r
        self.trainer.prune(ctx, r)
        ctx.current = done.student
        if done.snaps:
            ctx.members = [ctx.from_weights(sd) for sd in done.snaps]
        return record

    def batch_size(self, b: int) -> int:
        ac = self.ctx.ac
        k = int(round(ac.per_round * ac.growth ** (b - 1)))
        if ac.budget:
            k = min(k, ac.budget - spent(self.ctx))
        return max(k, 0)

    def select_batch(self) -> Optional[dict]:
        """Score the pool with the last round's model and label the chosen batch."""
        ctx = self.ctx
        state = ctx.state
        b = len(state.batches)
        if ctx.current is None:
            ctx.restore(len(state.rounds) - 1)
        k = self.batch_size(b)
        cands = state.candidates
        started = time.perf_counter()
        picked, strategy = self.choose(k, cands, b)
        seconds = time.perf_counter() - started
        state.batch_meta.append({"batch": b, "strategy": strategy, "k": int(len(picked)),
                                 "select_seconds": round(seconds, 3)})
        pending = self.label(np.asarray(picked, dtype=np.int64), b)
        ctx.run.info(f"[active] batch {b}: {len(picked)} examples selected by {strategy} in {seconds:.1f} s "
                     f"({len(cands)} candidates)")
        return pending

    def choose(self, k: int, cands: np.ndarray, b: int) -> tuple[np.ndarray, str]:
        """Batch ``b``: ``k`` of the pool positions ``cands``, and the name of what chose them (timed as the
        selection step; a subclass may choose otherwise, as bench/peers_active.py does)."""
        ctx = self.ctx
        ac, state = ctx.ac, ctx.state
        strategy, seed = ac.strategy, ac.seed * 100_003 + b
        outputs = PoolOutputs(n=len(ctx.pool))
        cold = ac.cold_start_labels and len(state.labels) < ac.cold_start_labels
        if cold:
            return coldstart.pick_for(ctx, k, cands), f"{ac.initial_strategy} (cold start)"
        if NEEDS[strategy]:
            positions = np.union1d(cands, state.labelled_positions) if strategy == "coreset" else cands
            model, tok = self.trainer.view(ctx)  # the student, or the teacher under target: teacher
            outputs = stream_pool(model, ctx.pool, positions, lambda: pipeline.featurizer(ctx.run, tok),
                                  ctx.run.acc.device, self.pool_pass(k, seed))
        try:
            return select(strategy, outputs, k, cands, state.labelled_positions, seed=seed,
                          diversity=ac.diversity if strategy in SCORES else 1), strategy
        except ValueError as e:
            raise KdflowError(f"active.strategy {strategy}: {e}") from None

    def pool_pass(self, k: int, seed: int) -> PoolPass:
        """What this run's strategy needs from a pass over the pool, for a batch of ``k``."""
        ctx = self.ctx
        ac = ctx.ac
        checkpoints = needs_members(ac.strategy) and ac.committee == "checkpoints"
        use_teacher = "teacher_probs" in NEEDS[ac.strategy] or (needs_members(ac.strategy)
                                                                and ac.committee == "teacher_student")
        diverse = ac.diversity > 1 and ac.strategy in SCORES
        teacher = proxy.estimated_teacher(ctx) if use_teacher and ac.target == "teacher_calls" else ctx.teacher_probs
        return PoolPass(ac.strategy, len(ctx.labels), ac.pool_batch_size, ac.pool_chunk, ac.mc_samples,
                        members=ctx.members if checkpoints else None, teacher_probs=teacher if use_teacher else None,
                        keep_top=ac.diversity * k if diverse else 0, seed=seed, need_embeddings=diverse,
                        activation=task_kind(ctx.run.data.task).activation)


# ---------------------------------------------------------------- the entry point

def active(config, overrides: Optional[list[str]] = None, resume: bool = False, overwrite: bool = False,
           labels: Optional[str] = None) -> dict:
    """Run (or continue) pool-based active learning; see :class:`kdflow.config.ActiveConfig`.

    Returns the summary (also ``metrics.json["active"]``): ``status`` is ``done`` (with ``stopped``, the reason)
    or ``waiting`` (humans must label ``pending["files"]["csv"]``, then call again with ``resume=True, labels=FILE``).
    """
    if labels is not None:  # the file comes first: nothing else is worth checking without it
        oracles.label_file(labels)
    cfg = load_config(config, overrides)
    command = "kdflow active " + (str(config) if isinstance(config, (str, Path)) else "CONFIG") + "".join(
        f" --set {o}" for o in overrides or [] if not o.startswith("run.quiet"))
    with kept(cfg.run_dir):  # a failure before the first saved step leaves the run folder as it was
        return _active(cfg, command, resume or labels is not None, overwrite, labels)


def _active(cfg: Config, command: str, resume: bool, overwrite: bool, labels: Optional[str]) -> dict:
    ctx = open_context(cfg, resume, overwrite)
    cfg, ctx.command = ctx.cfg, command  # its unset keys resolved
    loop = Loop(ctx)
    if cfg.active.stop_parity:  # before the resume checks: a run that stopped at parity stays stopped
        v = ctx.run.data.validation
        t_logits = teacher_logits(ctx.run, ctx.teacher, v, pipeline.featurizer(ctx.run, ctx.tokenizer), ctx.cache)
        ctx.teacher_val = quality(t_logits.numpy(), v.targets, ctx.run.data.task, names=ctx.run.data.label_names)
    state = loop.open_state(resume)
    if labels is not None and state.phase != "wait":
        raise KdflowError(f"No batch is waiting for labels in '{cfg.run_dir}' (the run is at its "
                          f"'{state.phase}' step); drop --labels")
    ctx.run.info(f"[active] pool {len(ctx.pool)} examples ({len(state.ignored)} ignored), strategy "
                 f"{cfg.active.strategy}, oracle {cfg.active.oracle}; teacher {ctx.teacher_source}; student "
                 f"{type(ctx.template).__name__} ({models.count_parameters(ctx.template):,} params)")
    if not state.batches and not state.pending:
        state.pending = loop.initial_batch()
        ctx.save_state()
    while True:
        phase = state.phase
        if phase == "wait":
            if labels is None:
                return records.waiting(ctx, cfg)
            loop.ingest(labels)
            labels = None
        elif phase == "train":
            ctx.run.info(records.round_line(loop.train_round(), cfg.train.metric))
            reason = stop_reason(ctx)
            if reason:
                state.stopped = reason
                ctx.save_state()
        elif phase == "select":
            state.pending = loop.select_batch()
            ctx.save_state()
        else:
            break
    return records.finish(ctx, cfg)
