"""The pool-based active-learning loop (``kdflow active CONFIG``; :func:`active`).

One round: train the student on the labelled set (the oracle's labels, mixed with the
teacher's cached soft targets as in ``distill``) -> evaluate (validation; test for the
curve only) -> check the stopping rules -> score the unlabelled pool -> select a batch
-> label it -> next round. Everything a round decides is saved in
``<run>/active/state.json`` before the next step starts, so a killed run resumes at its
last finished step and replays it exactly (each round re-seeds from ``train.seed``,
each selection from ``active.seed`` and the batch number).

Run folder additions::

    active/state.json        labels (by example id, with their source), ignored ids, rounds, pending batch
    active/rounds.csv        one row per round: labels, teacher queries, validation and test quality, kappa
    active/epochs.csv        per-epoch rows of every round's training (role roundN); tensorboard/active/
    active/batch-NNN/        a batch for human labelling: to_label.csv / .jsonl, Label Studio tasks + config
    active/student/          the final student (save_pretrained, tokenizer, label map)
    metrics.json "active"    the summary; report.md / report.html gain the label-efficiency curve
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import api, models
from ..config import Config, load_config
from ..data import Featurizer, Split, loader, make_collate, stratified_sample
from ..distiller import Distiller, freeze
from ..errors import KdflowError
from ..metrics import quality
from ..train import RunLog, fit, make_accelerator, predict
from . import oracles
from .oracles import SKIP
from .outputs import stream_pool
from .pool import PoolState
from .strategies import NEEDS, SCORES, PoolOutputs, select

COMMITTEE = ("vote_entropy", "committee_kl")


def _needs_teacher(cfg: Config) -> bool:
    ac = cfg.active
    return (cfg.distill.alpha > 0 or ac.oracle in ("teacher", "hybrid") or ac.strategy == "disagreement"
            or (ac.strategy in COMMITTEE and ac.committee == "teacher_student") or ac.stop_parity is not None)


def _check(cfg: Config) -> None:
    """Settings that cannot work together, named before any work starts."""
    ac, d = cfg.active, cfg.data
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise KdflowError("kdflow active runs in one process (it scores the whole pool between rounds); start it "
                          "without torchrun / accelerate launch")
    if d.task != "classification":
        raise KdflowError("kdflow active needs data.task: classification (its strategies score class "
                          "probabilities)")
    if d.values_column:
        raise KdflowError("kdflow active reads text pools; numeric sequences (data.values_column) are not supported")
    dc = cfg.distill
    unsupported = [name for name, on in (("distill.mode " + dc.mode, dc.mode != "offline"),
                                         ("distill.intermediate", dc.intermediate),
                                         ("distill.extra_teachers", bool(dc.extra_teachers)),
                                         ("distill.logit_loss dkd", dc.logit_loss != "hinton")) if on]
    if unsupported:
        raise KdflowError(f"kdflow active trains each round with Hinton KD on cached teacher logits (distill.mode "
                          f"offline), so {unsupported[0]} would be ignored; drop it for active learning (kdflow "
                          "distill supports it)")
    if d.unlabelled and (ac.oracle == "gold" or (ac.oracle == "hybrid" and ac.hybrid_human == "gold")):
        raise KdflowError("The pool is data.unlabelled, which has no gold labels, so active.oracle gold (or hybrid "
                          "with hybrid_human gold) cannot label it; use oracle human, teacher or hybrid")
    simulated = ac.oracle == "gold" or (ac.oracle == "hybrid" and ac.hybrid_human == "gold")
    if ac.initial_strategy == "stratified" and not d.unlabelled and not simulated:
        raise KdflowError(f"active.initial_strategy stratified draws the seed set by the pool's gold labels, which "
                          f"oracle {ac.oracle} does not have; set active.initial_strategy: random")
    spec = cfg.model.student
    if ac.strategy == "bald" and not spec.name and spec.dropout <= 0:  # a named student is checked once built
        raise KdflowError("active.strategy bald samples the student with MC dropout, but model.student.dropout is 0; "
                          "set it above 0 (e.g. 0.1) or pick another strategy")
    if ac.strategy in COMMITTEE and ac.committee == "checkpoints" and ac.committee_size > cfg.train.epochs:
        raise KdflowError(f"active.committee_size {ac.committee_size} exceeds train.epochs {cfg.train.epochs}: the "
                          "committee is the student after each of its last epochs; lower committee_size")
    if ac.strategy in COMMITTEE and ac.committee == "checkpoints" and cfg.train.patience \
            and ac.committee_size > cfg.train.patience + 1:
        raise KdflowError(f"active.committee_size {ac.committee_size} exceeds train.patience + 1 = "
                          f"{cfg.train.patience + 1}: early stopping may end a round with fewer epochs than members; "
                          "lower committee_size or raise train.patience")


def _signature(cfg: Config) -> dict:
    """Settings a resumed run must share with the run it continues (budget, rounds and the
    stopping rules may change: raise the budget to buy more labels)."""
    ac = cfg.active
    return {"strategy": ac.strategy, "oracle": ac.oracle, "initial": ac.initial, "initial_strategy": ac.initial_strategy,
            "per_round": ac.per_round, "growth": ac.growth, "retrain": ac.retrain, "seed": ac.seed,
            "diversity": ac.diversity, "student": cfg.model.student.model_dump(mode="json"),
            "alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature, "max_length": cfg.data.max_length,
            "train_seed": cfg.train.seed}


def _inputs(split: Split, i: int) -> tuple:
    """What the model reads of example i (text, and text_pair where there is one)."""
    return tuple(split.inputs[k][i] for k in ("text", "text_pair") if k in split.inputs)


class Loop:
    """State and models of one active-learning run (see the module docstring)."""

    def __init__(self, cfg: Config, resume: bool, overwrite: bool):
        self.cfg, self.ac = cfg, cfg.active
        _check(cfg)
        self.ctx = api._setup(cfg, cfg.train, "active", resume, overwrite)
        d = self.ctx.data
        self.given = len(d.train) if d.unlabelled is not None else 0  # data.train is the seed set
        self.pool: Split = d.train + d.unlabelled if d.unlabelled is not None else d.train
        self.ctx.data = replace(d, train=self.pool, unlabelled=None)  # prune_vocab etc. see every pool text
        self.labels = d.label_names
        self.folder = cfg.run_dir / "active"
        self.state_path = self.folder / "state.json"
        self._load_models()
        self.current: Optional[torch.nn.Module] = None  # the student of the last finished round
        self.members: list[torch.nn.Module] = []
        self.teacher_val: Optional[dict] = None  # the teacher's validation quality (for stop_parity)
        self.command = "kdflow active CONFIG"  # how the user started it, for the instructions we print

    # ------------------------------------------------------------ set-up
    def _load_models(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        own = cfg.run_dir / "teacher"
        spec = cfg.model.teacher
        trained = own.is_dir() or (spec.kind == "hf" and spec.name and models.has_task_head(
            models.resolve_name(spec.name), self.labels, "classification"))
        if _needs_teacher(cfg) and not trained:
            raise KdflowError(f"This active-learning run needs a trained teacher (distill.alpha > 0, oracle "
                              f"{self.ac.oracle}, strategy {self.ac.strategy}); run 'kdflow teach' with this config "
                              f"first (it saves {own}), or point model.teacher.name at a fine-tuned classifier")
        self.teacher, self.tokenizer, self.teacher_source = api._load_teacher(ctx)
        self.template, self.s_tokenizer = api._build_student(ctx, self.teacher, self.tokenizer)
        api._check_length(self.template, cfg.data.max_length, "student")
        if self.ac.strategy == "bald" and not any(isinstance(m, torch.nn.Dropout) and m.p > 0
                                                  for m in self.template.modules()):
            raise KdflowError("active.strategy bald samples the student with MC dropout, but the student has no "
                              "dropout; set model.student.dropout above 0 (e.g. 0.1) or pick another strategy")
        self.s_feat = api._featurizer(cfg.model.student, self.s_tokenizer, cfg.data.max_length)
        self.cache = None
        if _needs_teacher(cfg):
            api._check_length(self.teacher, cfg.data.max_length, "teacher")
            freeze(self.teacher).to(ctx.acc.device)
            self.cache = api.teacher_cache(ctx, self.teacher, self.tokenizer)

    def _new_state(self) -> PoolState:
        d = self.ctx.data
        state = PoolState(list(self.pool.ids), signature=_signature(self.cfg))
        held = {_inputs(s, i) for s in (d.validation, d.test) if s is not None for i in range(len(s))}
        leaks = {self.pool.ids[i]: "text also in validation or test" for i in range(self.given, len(self.pool))
                 if _inputs(self.pool, i) in held}
        state.ignored.update(leaks)
        if leaks:
            self.ctx.log.info(f"[active] {len(leaks)} pool texts also occur in validation or test: ignored (never "
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
            logits = api.teacher_logits(self.ctx, self.teacher, part, Featurizer(self.tokenizer,
                                                                                 self.cfg.data.max_length), self.cache)
            out.append(torch.softmax(logits.float(), -1).numpy())
            if count:
                self.state.note_teacher(part.ids)
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    # ------------------------------------------------------------ labels
    def _label(self, positions: np.ndarray, batch: int) -> Optional[dict]:
        """Label ``positions`` with the oracle; returns the pending request when humans must label."""
        ac, ids = self.ac, [self.pool.ids[p] for p in positions]
        if ac.oracle == "gold":
            self.state.add_batch(oracles.gold_labels(self.pool, positions, self.labels))
            return None
        if ac.oracle == "teacher":
            self.state.add_batch(oracles.teacher_labels(ids, self.teacher_probs(positions), self.labels))
            return None
        by_teacher: dict = {}
        rest = positions
        if ac.oracle == "hybrid":
            probs = self.teacher_probs(positions)
            sure = oracles.confident(probs, ac.hybrid_threshold)
            by_teacher = oracles.teacher_labels([k for k, s in zip(ids, sure) if s], probs[sure], self.labels)
            rest = positions[~sure]
            if ac.hybrid_human == "gold" or len(rest) == 0:
                self.state.add_batch({**by_teacher, **oracles.gold_labels(self.pool, rest, self.labels)})
                return None
        folder = self.folder / f"batch-{batch:03d}"
        files = oracles.write_request(folder, self.pool, rest, self.labels)
        return {"batch": batch, "ids": [self.pool.ids[p] for p in rest],
                "teacher": {k: v[0] for k, v in by_teacher.items()}, "files": files}

    def ingest(self, path: str) -> None:
        """Add the human labels of the pending batch (checked whole first: nothing is kept on error)."""
        pending = self.state.pending
        given, skipped = oracles.read_labels(path, pending["ids"], self.labels)
        batch = {k: (v, "teacher") for k, v in pending.get("teacher", {}).items()}
        batch.update({k: (v, "human") for k, v in given.items()})
        self.state.pending = None
        self.state.add_batch(batch, {k: "skipped by the labeller" for k in skipped})
        self.state.save(self.state_path)
        self.ctx.log.info(f"[active] batch {pending['batch']}: {len(given)} human labels read from {path}"
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
        if ac.initial_strategy == "stratified":
            pick = cands[stratified_sample(self.pool.targets[cands], k, ac.seed, True)]
        else:
            pick = cands[np.sort(np.random.default_rng(ac.seed).permutation(len(cands))[:k])]
        return self._label(pick, 0)

    # ------------------------------------------------------------ rounds
    def _labelled_split(self) -> Split:
        pos = self.state.labelled_positions
        index = {n: i for i, n in enumerate(self.labels)}
        part = self.pool.subset(pos)
        part.targets = np.asarray([index[self.state.labels[k]["label"]] for k in part.ids], dtype=np.int64)
        return part

    def _student_file(self, r: int) -> Path:
        return self.folder / f"student-round-{r:03d}.safetensors"

    def _restore(self, r: int) -> None:
        """The student (and committee) of finished round ``r``, from disk (after a resume)."""
        from safetensors.torch import load_file
        self.current = copy.deepcopy(self.template)
        self.current.load_state_dict(load_file(self._student_file(r)))
        self.members = []
        for f in sorted((self.folder / "committee").glob("member-*.safetensors")):
            m = copy.deepcopy(self.template)
            m.load_state_dict(load_file(f))
            self.members.append(m.eval())

    def train_round(self) -> dict:
        cfg, ac, state = self.cfg, self.ac, self.state
        r = len(state.rounds)
        acc = make_accelerator(cfg.train)  # fresh state and the same seed every round: a resumed round replays
        self.ctx.acc = acc
        lab = self._labelled_split()
        if ac.retrain == "warm" and r > 0:
            if self.current is None:
                self._restore(r - 1)
            model = self.current
        else:
            model = copy.deepcopy(self.template)
        distiller = Distiller(self.teacher if cfg.distill.alpha > 0 else None, "offline", cfg.distill.temperature,
                              cfg.distill.alpha, "classification")
        if distiller.uses_teacher:
            logits = api.teacher_logits(self.ctx, self.teacher, lab, Featurizer(self.tokenizer, cfg.data.max_length),
                                        self.cache)
            state.note_teacher(lab.ids)
            distiller.set_targets(logits)
        bs = cfg.train.batch_size
        steps = math.ceil(len(lab) / bs)
        epochs = max(cfg.train.epochs, math.ceil(ac.min_steps / max(steps, 1)))
        train_cfg = cfg.train.model_copy(update={"epochs": epochs})
        snaps: deque = deque(maxlen=ac.committee_size)

        def snapshot(epoch: int, m) -> None:
            if ac.strategy in COMMITTEE and ac.committee == "checkpoints":
                snaps.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})

        log = RunLog(cfg.run_dir, acc, cfg.run.quiet, metrics_file="active/epochs.csv",
                     tensorboard="tensorboard/active")
        ckpt = self.folder / "checkpoints"
        shutil.rmtree(ckpt, ignore_errors=True)
        train_dl = loader(lab, make_collate(lab, self.s_feat), bs, True, cfg.train.seed)
        evaluate = api._eval_fn(self.ctx, self.ctx.data.validation, self.s_feat, cfg.train.eval_batch_size)
        result = fit(model, distiller, train_dl, evaluate, train_cfg, acc, log, ckpt, f"round{r}",
                     on_epoch_end=snapshot, min_steps=ac.min_steps)
        log.close()
        shutil.rmtree(ckpt, ignore_errors=True)
        model = acc.unwrap_model(model).cpu().eval()
        record = self._evaluate(model, r, len(state.batches[r]), result)
        self._save_round(model, snaps, r)
        state.rounds.append(record)
        state.save(self.state_path)
        self._prune_files(r)
        self.current = model
        if snaps:
            self.members = []
            for sd in snaps:
                m = copy.deepcopy(self.template)
                m.load_state_dict(sd)
                self.members.append(m.eval())
        return record

    def _evaluate(self, model, r: int, new: int, result) -> dict:
        cfg, d, acc = self.cfg, self.ctx.data, self.ctx.acc
        model.to(acc.device)

        def run(split: Split) -> np.ndarray:
            dl = loader(split, make_collate(split, self.s_feat), cfg.train.eval_batch_size, shuffle=False)
            logits, _ = predict(model, dl, acc, gather=False)
            return logits
        val_logits = run(d.validation)
        pred = val_logits.argmax(-1)
        kappa = None
        if self.state.rounds and self.state.rounds[-1].get("_val_pred") is not None:
            from sklearn.metrics import cohen_kappa_score
            prev = np.asarray(self.state.rounds[-1]["_val_pred"])
            kappa = 1.0 if (prev == pred).all() else float(np.nan_to_num(cohen_kappa_score(prev, pred)))
        for old in self.state.rounds:  # keep only the newest predictions in the state file
            old.pop("_val_pred", None)
        record = {"round": r, "labels": len(self.state.labels), "new": new, "sources": self.state.sources(),
                  "teacher_queries": len(self.state.teacher_queries), "epochs_run": result.epochs_run,
                  "best_epoch": result.best_epoch + 1, "train_seconds": round(result.seconds, 2),
                  "select_seconds": (self.state.batch_meta[r] if r < len(self.state.batch_meta) else {}
                                     ).get("select_seconds"),
                  "validation": quality(val_logits, d.validation.targets, "classification"), "kappa": kappa}
        if self.ac.evaluate_test and d.test is not None:
            record["test"] = quality(run(d.test), d.test.targets, "classification")
        record["_val_pred"] = pred.tolist()
        model.cpu()
        return record

    def _save_round(self, model, snaps, r: int) -> None:
        from safetensors.torch import save_file
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
        for f in self.folder.glob("student-round-*.safetensors"):
            if f != self._student_file(r):
                f.unlink()

    def stop_reason(self) -> Optional[str]:
        ac, state = self.ac, self.state
        last = state.rounds[-1]
        metric = self.cfg.train.metric
        if ac.budget and len(state.labels) >= ac.budget:
            return f"budget of {ac.budget} labels reached"
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
            k = min(k, ac.budget - len(self.state.labels))
        return max(k, 0)

    def select_batch(self) -> Optional[dict]:
        """Score the pool with the last round's student and label the chosen batch."""
        ac, state = self.ac, self.state
        b = len(state.batches)
        if self.current is None:
            self._restore(len(state.rounds) - 1)
        k = self.batch_size(b)
        cands = state.candidates
        started = time.perf_counter()
        strategy = ac.strategy
        positions = cands
        if strategy == "coreset":
            positions = np.union1d(cands, state.labelled_positions)
        outputs = None
        if strategy != "random":
            needs = NEEDS[strategy]
            use_teacher = "teacher_probs" in needs or (strategy in COMMITTEE and ac.committee == "teacher_student")
            diverse = ac.diversity > 1 and strategy in SCORES
            outputs = stream_pool(
                self.current, self.pool, positions, self.s_tokenizer, self.cfg.data.max_length, strategy,
                len(self.labels), self.ctx.acc.device, ac.pool_batch_size, ac.pool_chunk, ac.mc_samples,
                members=self.members if strategy in COMMITTEE and ac.committee == "checkpoints" else None,
                teacher_probs=self.teacher_probs if use_teacher else None,
                keep_top=ac.diversity * k if diverse else 0, seed=ac.seed * 100_003 + b, need_embeddings=diverse)
        picked = select(strategy, outputs if outputs is not None else PoolOutputs(n=len(self.pool)), k, cands,
                        state.labelled_positions, seed=ac.seed * 100_003 + b,
                        diversity=ac.diversity if strategy in SCORES else 1)
        seconds = time.perf_counter() - started
        state.batch_meta.append({"batch": b, "strategy": strategy, "k": int(len(picked)),
                                 "select_seconds": round(seconds, 3)})
        pending = self._label(np.asarray(picked, dtype=np.int64), b)
        self.ctx.log.info(f"[active] batch {b}: {len(picked)} examples selected by {strategy} in {seconds:.1f} s "
                          f"({len(cands)} candidates)")
        return pending


# ---------------------------------------------------------------- the entry point

def active(config, overrides: Optional[list[str]] = None, resume: bool = False, overwrite: bool = False,
           labels: Optional[str] = None) -> dict:
    """Run (or continue) pool-based active learning; see :class:`kdflow.config.ActiveConfig`.

    Returns the summary (also ``metrics.json["active"]``): ``status`` is ``done`` (with
    ``stopped``, the reason) or ``waiting`` (humans must label ``pending["files"]["csv"]``,
    then call again with ``resume=True, labels=FILE``).
    """
    cfg = load_config(config, overrides)
    resume = resume or labels is not None
    loop = Loop(cfg, resume, overwrite)
    loop.command = "kdflow active " + (str(config) if isinstance(config, (str, Path)) else "CONFIG") + "".join(
        f" --set {o}" for o in overrides or [] if not o.startswith("run.quiet"))
    log = loop.ctx.log
    if cfg.active.stop_parity:  # before the resume checks: a run that stopped at parity stays stopped
        v = loop.ctx.data.validation
        t_logits = api.teacher_logits(loop.ctx, loop.teacher, v, Featurizer(loop.tokenizer, cfg.data.max_length),
                                      loop.cache)
        loop.teacher_val = quality(t_logits.numpy(), v.targets, "classification")
    if resume and loop.state_path.is_file():
        loop.state = PoolState.load(loop.state_path, list(loop.pool.ids))
        _check_resume(loop.state, cfg)
        if loop.state.stopped and loop.state.rounds and loop.stop_reason() is None:
            log.info(f"[active] continuing a run that had stopped ({loop.state.stopped}): its limits were raised")
            loop.state.stopped = None
        log.info(f"[active] resumed: {len(loop.state.labels)} labels, {len(loop.state.rounds)} rounds done")
    elif resume:
        raise KdflowError(f"There is no active-learning run to resume in '{cfg.run_dir}'; drop --resume to start one")
    else:
        loop.state = loop._new_state()
    state = loop.state
    if labels is not None and state.phase != "wait":
        raise KdflowError(f"No batch is waiting for labels in '{cfg.run_dir}' (the run is at its "
                          f"'{state.phase}' step); drop --labels")
    log.info(f"[active] pool {len(loop.pool)} examples ({len(state.ignored)} ignored), strategy "
             f"{cfg.active.strategy}, oracle {cfg.active.oracle}; teacher {loop.teacher_source}; student "
             f"{type(loop.template).__name__} ({models.count_parameters(loop.template):,} params)")
    if not state.batches and not state.pending:
        state.pending = loop.initial_batch()
        state.save(loop.state_path)
    while True:
        phase = state.phase
        if phase == "wait":
            if labels is None:
                return _waiting(loop, cfg)
            loop.ingest(labels)
            labels = None
        elif phase == "train":
            rec = loop.train_round()
            log.info(_round_line(rec, cfg.train.metric))
            reason = loop.stop_reason()
            if reason:
                state.stopped = reason
                state.save(loop.state_path)
        elif phase == "select":
            state.pending = loop.select_batch()
            state.save(loop.state_path)
        else:
            break
    return _finish(loop, cfg)


def _check_resume(state: PoolState, cfg: Config) -> None:
    now = _signature(cfg)
    changed = [k for k, v in now.items() if state.signature.get(k) != v]
    if changed:
        k = changed[0]
        raise KdflowError(f"Cannot resume: active setting {k} was {state.signature.get(k)!r} and is now {now[k]!r}; "
                          "resume with the settings of the run, or --overwrite to start again")


def _round_line(rec: dict, metric: str) -> str:
    test = f", test {metric} {rec['test'][metric]:.4f}" if "test" in rec else ""
    kappa = f", kappa {rec['kappa']:.3f}" if rec.get("kappa") is not None else ""
    src = ", ".join(f"{k} {v}" for k, v in rec["sources"].items())
    return (f"[active] round {rec['round']}: {rec['labels']} labels ({src}), teacher queries "
            f"{rec['teacher_queries']}; validation {metric} {rec['validation'][metric]:.4f}{test}{kappa}")


def _waiting(loop: "Loop", cfg: Config) -> dict:
    p = loop.state.pending
    csv_path = p["files"]["csv"]
    by_teacher = f" (the teacher labelled {len(p['teacher'])} it was sure of)" if p.get("teacher") else ""
    loop.ctx.log.info(
        f"[active] batch {p['batch']}: {len(p['ids'])} examples wait for human labels in {csv_path}{by_teacher}: "
        f"fill in the label column ({SKIP} drops an example; {Path(p['files']['jsonl']).name} and the Label Studio "
        f"tasks {Path(p['files']['label_studio']).name} with {Path(p['files']['label_studio_config']).name} sit "
        f"beside it), then run: {loop.command} --resume --labels {csv_path}")
    p["command"] = f"{loop.command} --resume --labels {csv_path}"
    summary = _summary(loop, cfg, "waiting")
    _write(loop, summary)
    return summary


def _summary(loop: "Loop", cfg: Config, status: str) -> dict:
    state = loop.state
    rounds = [{k: v for k, v in r.items() if not k.startswith("_")} for r in state.rounds]
    return {"status": status, "stopped": state.stopped, "strategy": cfg.active.strategy, "metric": cfg.train.metric,
            "oracle": cfg.active.oracle, "labels": len(state.labels), "sources": state.sources(),
            "ignored": len(state.ignored), "teacher_queries": len(state.teacher_queries),
            "pool": len(loop.pool), "rounds": rounds, "batches": state.batch_meta,
            "pending": state.pending, "teacher_validation": loop.teacher_val,
            "student": str(loop.folder / "student") if status == "done" else None}


def _write(loop: "Loop", summary: dict) -> None:
    """metrics.json["active"], active/rounds.csv, and the report."""
    run_dir = loop.cfg.run_dir
    path = run_dir / "metrics.json"
    blob = json.loads(path.read_text()) if path.is_file() else {}
    blob["active"] = summary
    path.write_text(json.dumps(blob, indent=2))
    rows = []
    for r in summary["rounds"]:
        row = {k: r[k] for k in ("round", "labels", "new", "teacher_queries", "epochs_run", "train_seconds",
                                 "select_seconds", "kappa")}
        row.update({f"{src}_labels": n for src, n in r["sources"].items()})
        row.update({f"val_{k}": v for k, v in r["validation"].items()})
        row.update({f"test_{k}": v for k, v in r.get("test", {}).items()})
        rows.append(row)
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(loop.folder / "rounds.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    from ..report import write_report
    write_report(run_dir)


def _finish(loop: "Loop", cfg: Config) -> dict:
    if loop.current is None and loop.state.rounds:
        loop._restore(len(loop.state.rounds) - 1)
    if loop.current is not None:
        models.save_model(loop.current, loop.folder / "student", loop.s_tokenizer, loop.labels, "classification")
    loop.ctx.log.info(f"[active] stopped: {loop.state.stopped}; final student in {loop.folder / 'student'}")
    summary = _summary(loop, cfg, "done")
    _write(loop, summary)
    return summary

