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

import copy
import math
import shutil
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import models, pipeline
from ..config import Config, load_config
from ..data import Split, stratified_sample, train_loader
from ..distiller import Distiller, freeze
from ..errors import KdflowError
from ..leakage import overlapping
from ..metrics import quality
from ..runfolder import kept
from ..runlog import RunLog
from ..teacher_cache import cache_for, teacher_logits
from ..train import FitJob, fit, make_accelerator
from . import coldstart, oracles, proxy, records, settings, teacher_rounds
from .coldstart import COLD_STARTS
from .outputs import COMMITTEE, PoolPass, stream_pool
from .pool import PoolState
from .strategies import NEEDS, SCORES, PoolOutputs, select


class Loop:
    """State and models of one active-learning run (see the module docstring)."""

    def __init__(self, cfg: Config, resume: bool, overwrite: bool):
        cfg, resolved = settings.resolve(cfg)
        self.cfg, self.ac = cfg, cfg.active
        settings.check(cfg)
        self.run = pipeline.setup(cfg, cfg.train, "active", resume, overwrite)
        if resolved:
            self.run.info(resolved)
        d = self.run.data
        self.given = len(d.train) if d.unlabelled is not None else 0  # data.train is the seed set
        self.pool: Split = d.train + d.unlabelled if d.unlabelled is not None else d.train
        self.run.data = replace(d, train=self.pool, unlabelled=None)  # prune_vocab etc. see every pool text
        self.labels = d.label_names
        self.folder = cfg.run_dir / "active"
        self.state_path = self.folder / "state.json"
        self._load_models()
        self.current: Optional[torch.nn.Module] = None  # the student of the last finished round
        self.members: list[torch.nn.Module] = []
        self.teacher_val: Optional[dict] = None  # the teacher's validation quality (for stop_parity)
        self.teacher_view = None  # the teacher's embeddings and probabilities of the pool (a cold start)
        self.teacher_round = -1  # target teacher: the round whose fine-tuned teacher is loaded (-1: as given)
        self.command = "kdflow active CONFIG"  # how the user started it, for the instructions we print

    # ------------------------------------------------------------ set-up
    def _load_models(self) -> None:
        cfg, run = self.cfg, self.run
        own_head = self.ac.target == "teacher" and not pipeline.teacher_is_trained(run)  # the rounds train one
        if settings.needs_teacher(cfg) and not pipeline.teacher_is_trained(run) and not own_head:
            raise KdflowError(f"This active-learning run needs a trained teacher (distill.alpha > 0, oracle "
                              f"{self.ac.oracle}, strategy {self.ac.strategy}); run 'kdflow teach' with this config "
                              f"first (it saves {cfg.run_dir / 'teacher'}), or point model.teacher.name at a "
                              "fine-tuned classifier")
        if own_head and self.ac.initial_strategy == "balanced":
            raise KdflowError("active.initial_strategy balanced sorts the pool by the teacher's predictions, and this "
                              "teacher's head is untrained (the rounds train it); use typicality or random")
        found = teacher_rounds.fresh_teacher(run) if own_head else pipeline.load_teacher(run)
        if self.ac.target == "teacher" and not own_head:
            run.info(f"[active] warning: target teacher starts from {found.source}, already fine-tuned for these "
                     "labels; if that was on this pool's labels, the curves overstate what the new labels buy")
        self.teacher, self.tokenizer, self.teacher_source = found.model, found.tokenizer, found.source
        self.template, self.s_tokenizer = pipeline.build_student(run, self.teacher, self.tokenizer)
        pipeline.check_length(self.template, cfg.data.max_length, "student")
        self.train_cfg = pipeline.train_settings(run, cfg.train, "student", cfg.model.student, self.template)
        viewer = "teacher" if self.ac.target == "teacher" else "student"  # whose outputs rank the pool
        if self.ac.strategy == "bald" and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in (
                self.teacher if viewer == "teacher" else self.template).modules()):
            fix = ("use a teacher with dropout" if viewer == "teacher"
                   else "set model.student.dropout above 0 (e.g. 0.1)")
            raise KdflowError(f"active.strategy bald samples the {viewer} with MC dropout, but the {viewer} has no "
                              f"dropout; {fix} or pick another strategy")
        self.s_feat = pipeline.featurizer(run, self.s_tokenizer)
        self.cache = None
        if settings.needs_teacher(cfg):
            pipeline.check_length(self.teacher, cfg.data.max_length, "teacher")
            freeze(self.teacher).to(run.acc.device)
            self.cache = cache_for(run, self.teacher, self.tokenizer)

    def new_state(self) -> PoolState:
        d = self.run.data
        state = PoolState(list(self.pool.ids), signature=settings.signature(self.cfg))
        leaks = overlapping(self.pool.inputs, [d.validation, d.test], start=self.given)
        state.ignored.update({self.pool.ids[i]: "text also in validation or test" for i in leaks})
        if len(leaks):
            self.run.info(f"[active] {len(leaks)} pool texts also occur in validation or test: ignored (never "
                          "queried, never trained on)")
        return state

    # ------------------------------------------------------------ teacher
    def teacher_probs(self, positions: np.ndarray, count: bool = True) -> np.ndarray:
        """``[n, C]`` teacher probabilities for pool positions, through the cache, chunk by chunk."""
        if self.cache is None:
            raise KdflowError("internal: the teacher is not loaded for this run")
        out = []
        for start in range(0, len(positions), self.ac.pool_chunk):
            part = self.pool.subset(positions[start:start + self.ac.pool_chunk])
            logits = teacher_logits(self.run, self.teacher, part, pipeline.featurizer(self.run, self.tokenizer),
                                    self.cache)
            out.append(torch.softmax(logits.float(), -1).numpy())
            if count:
                self.state.note_teacher(part.ids)
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    # ------------------------------------------------------------ labels
    def ingest(self, path: str) -> None:
        """Add the human labels of the pending batch (checked whole first: nothing is kept on error)."""
        pending = self.state.pending
        given, skipped = oracles.read_labels(path, pending["ids"], self.labels)
        batch = {k: (v, "teacher") for k, v in pending.get("teacher", {}).items()}
        batch.update({k: (v, "human") for k, v in given.items()})
        self.state.pending = None
        self.state.add_batch(batch, {k: "skipped by the labeller" for k in skipped})
        self.state.save(self.state_path)
        self.run.info(f"[active] batch {pending['batch']}: {len(given)} human labels read from {path}"
                      + (f", {len(skipped)} skipped" if skipped else "")
                      + (f", {len(pending.get('teacher', {}))} by the teacher" if pending.get("teacher") else ""))

    def initial_batch(self) -> Optional[dict]:
        state, ac = self.state, self.ac
        if self.given:
            state.batch_meta.append({"batch": 0, "strategy": "given (data.train)", "k": self.given,
                                     "select_seconds": None})
            state.add_batch({self.pool.ids[i]: (self.labels[int(self.pool.targets[i])], "given")
                             for i in range(self.given)})
            return None
        cands = state.candidates
        k = min(ac.initial, len(cands), ac.budget or ac.initial)
        state.batch_meta.append({"batch": 0, "strategy": f"initial ({ac.initial_strategy})", "k": int(k),
                                 "select_seconds": None})
        if ac.initial_strategy in COLD_STARTS:  # the teacher's view of the pool, no gold labels
            pick = coldstart.pick_for(self, k, cands)
        elif ac.initial_strategy == "stratified":
            pick = cands[stratified_sample(self.pool.targets[cands], k, ac.seed, True)]
        else:
            pick = cands[np.sort(np.random.default_rng(ac.seed).permutation(len(cands))[:k])]
        return oracles.label_batch(self, pick, 0)

    # ------------------------------------------------------------ rounds
    def _labelled_split(self) -> Split:
        pos = self.state.labelled_positions
        index = {n: i for i, n in enumerate(self.labels)}
        part = self.pool.subset(pos)
        part.targets = np.asarray([index[self.state.labels[k]["label"]] for k in part.ids], dtype=np.int64)
        return part

    def _student_file(self, r: int) -> Path:
        return self.folder / f"student-round-{r:03d}.safetensors"

    def restore(self, r: int) -> None:
        """The student (and committee) of finished round ``r``, from disk (after a resume)."""
        from safetensors.torch import load_file
        self.current = copy.deepcopy(self.template)
        self.current.load_state_dict(load_file(self._student_file(r)))
        self.members = [self._from_weights(load_file(f))
                        for f in sorted((self.folder / "committee").glob("member-*.safetensors"))]

    def train_round(self) -> dict:
        """Train this round's student on the labelled set, evaluate it, save it and the state."""
        if self.ac.target == "teacher":  # the labels fine-tune the teacher, which distils the student
            return teacher_rounds.train_round(self)
        cfg, ac, state = self.cfg, self.ac, self.state
        r = len(state.rounds)
        acc = make_accelerator(cfg.train)  # fresh state and the same seed every round: a resumed round replays
        self.run.acc = acc
        lab = self._labelled_split()
        model = self._start_model(r)
        distiller = Distiller(self.teacher if cfg.distill.alpha > 0 else None, cfg.distill, "classification")
        if distiller.uses_teacher:
            logits = teacher_logits(self.run, self.teacher, lab, pipeline.featurizer(self.run, self.tokenizer),
                                    self.cache)
            state.note_teacher(lab.ids)
            distiller.set_targets(logits)
        snaps: deque = deque(maxlen=ac.committee_size)

        def snapshot(epoch: int, m) -> None:
            if ac.strategy in COMMITTEE and ac.committee == "checkpoints":
                snaps.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})

        log = RunLog(cfg.run_dir, acc, cfg.run.quiet, metrics_file="active/epochs.csv",
                     tensorboard="tensorboard/active")
        ckpt = self.folder / "checkpoints"
        if acc.is_main_process:
            shutil.rmtree(ckpt, ignore_errors=True)
        acc.wait_for_everyone()
        steps = math.ceil(len(lab) / cfg.train.batch_size)  # small sets get epochs enough for min_steps
        epochs = max(cfg.train.epochs, math.ceil(ac.min_steps / max(steps, 1)))
        job = FitJob(f"round{r}", self.train_cfg.model_copy(update={"epochs": epochs}), ckpt, on_epoch_end=snapshot,
                     min_steps=ac.min_steps)
        result = fit(model, distiller, train_loader(lab, self.s_feat, None, cfg.train.batch_size, cfg.train.seed),
                     pipeline.eval_fn(self.run, self.run.data.validation, self.s_feat, cfg.train.eval_batch_size),
                     job, acc, log)
        log.close()
        acc.wait_for_everyone()  # every process has read the best weights back
        if acc.is_main_process:
            shutil.rmtree(ckpt, ignore_errors=True)
        model = acc.unwrap_model(model).cpu().eval()
        record = records.evaluate_round(self, model, r, len(state.batches[r]), result)
        self._save_round(model, snaps, r)
        state.rounds.append(record)
        state.save(self.state_path)
        self._prune_files(r)
        self.current = model
        if snaps:
            self.members = [self._from_weights(sd) for sd in snaps]
        return record

    def _start_model(self, r: int) -> torch.nn.Module:
        """The last round's student (warm start) or a fresh copy of the initial one (scratch)."""
        if self.ac.retrain == "warm" and r > 0:
            if self.current is None:
                self.restore(r - 1)
            return self.current
        return copy.deepcopy(self.template)

    def _from_weights(self, state_dict: dict) -> torch.nn.Module:
        m = copy.deepcopy(self.template)
        m.load_state_dict(state_dict)
        return m.eval()

    def _save_round(self, model, snaps, r: int) -> None:
        from safetensors.torch import save_file
        if not self.run.acc.is_main_process:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._student_file(r).with_suffix(".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp)
        tmp.replace(self._student_file(r))
        if snaps:  # this round's members replace the last round's whole: never a mix after a resume
            folder, tmp = self.folder / "committee", self.folder / "committee.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for i, sd in enumerate(snaps):
                save_file({k: v.contiguous() for k, v in sd.items()}, tmp / f"member-{i}.safetensors")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)

    def _prune_files(self, r: int) -> None:
        for f in self.folder.glob("student-round-*.safetensors") if self.run.acc.is_main_process else ():
            if f != self._student_file(r):
                f.unlink()

    def stop_reason(self) -> Optional[str]:
        ac, state = self.ac, self.state
        last = state.rounds[-1]
        metric = self.cfg.train.metric
        if ac.budget and self.spent() >= ac.budget:
            return f"budget of {ac.budget} {'teacher calls' if ac.target == 'teacher_calls' else 'labels'} reached"
        if ac.rounds and len(state.rounds) >= ac.rounds:
            return f"{ac.rounds} rounds done"
        if ac.stop_parity and self.teacher_val is not None:
            if last["validation"][metric] >= (1 - ac.stop_parity) * self.teacher_val[metric]:
                return (f"teacher parity: student validation {metric} {last['validation'][metric]:.4f} within "
                        f"{ac.stop_parity:.0%} of the teacher's {self.teacher_val[metric]:.4f}")
        if ac.stop_kappa:
            kappas = [rec.get("kappa") for rec in state.rounds[-ac.stop_window:]]
            if len(kappas) == ac.stop_window and all(k is not None and k >= ac.stop_kappa for k in kappas):
                return f"predictions stable: kappa >= {ac.stop_kappa} for {ac.stop_window} rounds"
        if len(state.candidates) == 0:
            return "pool exhausted"
        return None

    def batch_size(self, b: int) -> int:
        ac = self.ac
        k = int(round(ac.per_round * ac.growth ** (b - 1)))
        if ac.budget:
            k = min(k, ac.budget - self.spent())
        return max(k, 0)

    def spent(self) -> int:
        """What the budget counts: teacher calls under ``target: teacher_calls``, labels otherwise."""
        return len(self.state.teacher_queries) if self.ac.target == "teacher_calls" else len(self.state.labels)

    def select_batch(self) -> Optional[dict]:
        """Score the pool with the last round's student and label the chosen batch."""
        state = self.state
        b = len(state.batches)
        if self.current is None:
            self.restore(len(state.rounds) - 1)
        k = self.batch_size(b)
        cands = state.candidates
        started = time.perf_counter()
        picked, strategy = self.choose(k, cands, b)
        seconds = time.perf_counter() - started
        state.batch_meta.append({"batch": b, "strategy": strategy, "k": int(len(picked)),
                                 "select_seconds": round(seconds, 3)})
        pending = oracles.label_batch(self, np.asarray(picked, dtype=np.int64), b)
        self.run.info(f"[active] batch {b}: {len(picked)} examples selected by {strategy} in {seconds:.1f} s "
                      f"({len(cands)} candidates)")
        return pending

    def choose(self, k: int, cands: np.ndarray, b: int) -> tuple[np.ndarray, str]:
        """Batch ``b``: ``k`` of the pool positions ``cands``, and the name of what chose them (timed as the
        selection step; a subclass may choose otherwise, as bench/peers_active.py does)."""
        ac, state = self.ac, self.state
        strategy, seed = ac.strategy, ac.seed * 100_003 + b
        outputs = PoolOutputs(n=len(self.pool))
        cold = ac.cold_start_labels and len(state.labels) < ac.cold_start_labels
        if cold:
            return coldstart.pick_for(self, k, cands), f"{ac.initial_strategy} (cold start)"
        if strategy != "random":
            positions = np.union1d(cands, state.labelled_positions) if strategy == "coreset" else cands
            model, tok = teacher_rounds.view_model(self)  # the student, or the teacher under target: teacher
            outputs = stream_pool(model, self.pool, positions, lambda: pipeline.featurizer(self.run, tok),
                                  self.run.acc.device, self._pool_pass(k, seed))
        return select(strategy, outputs, k, cands, state.labelled_positions, seed=seed,
                      diversity=ac.diversity if strategy in SCORES else 1), strategy

    def _pool_pass(self, k: int, seed: int) -> PoolPass:
        """What this run's strategy needs from a pass over the pool, for a batch of ``k``."""
        ac = self.ac
        checkpoints = ac.strategy in COMMITTEE and ac.committee == "checkpoints"
        use_teacher = "teacher_probs" in NEEDS[ac.strategy] or (ac.strategy in COMMITTEE
                                                                and ac.committee == "teacher_student")
        diverse = ac.diversity > 1 and ac.strategy in SCORES
        teacher = proxy.estimated_teacher(self) if use_teacher and ac.target == "teacher_calls" else self.teacher_probs
        return PoolPass(ac.strategy, len(self.labels), ac.pool_batch_size, ac.pool_chunk, ac.mc_samples,
                        members=self.members if checkpoints else None, teacher_probs=teacher if use_teacher else None,
                        keep_top=ac.diversity * k if diverse else 0, seed=seed, need_embeddings=diverse)


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
    loop = Loop(cfg, resume, overwrite)
    cfg, loop.command = loop.cfg, command  # its unset keys resolved
    if cfg.active.stop_parity:  # before the resume checks: a run that stopped at parity stays stopped
        v = loop.run.data.validation
        t_logits = teacher_logits(loop.run, loop.teacher, v, pipeline.featurizer(loop.run, loop.tokenizer),
                                  loop.cache)
        loop.teacher_val = quality(t_logits.numpy(), v.targets, "classification")
    state = loop.state = settings.open_state(loop, resume)
    if labels is not None and state.phase != "wait":
        raise KdflowError(f"No batch is waiting for labels in '{cfg.run_dir}' (the run is at its "
                          f"'{state.phase}' step); drop --labels")
    loop.run.info(f"[active] pool {len(loop.pool)} examples ({len(state.ignored)} ignored), strategy "
                  f"{cfg.active.strategy}, oracle {cfg.active.oracle}; teacher {loop.teacher_source}; student "
                  f"{type(loop.template).__name__} ({models.count_parameters(loop.template):,} params)")
    if not state.batches and not state.pending:
        state.pending = loop.initial_batch()
        state.save(loop.state_path)
    while True:
        phase = state.phase
        if phase == "wait":
            if labels is None:
                return records.waiting(loop, cfg)
            loop.ingest(labels)
            labels = None
        elif phase == "train":
            loop.run.info(records.round_line(loop.train_round(), cfg.train.metric))
            reason = loop.stop_reason()
            if reason:
                state.stopped = reason
                state.save(loop.state_path)
        elif phase == "select":
            state.pending = loop.select_batch()
            state.save(loop.state_path)
        else:
            break
    return records.finish(loop, cfg)
