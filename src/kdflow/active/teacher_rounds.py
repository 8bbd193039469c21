"""``active.target: teacher`` — human labels make the teacher better, and the student follows it.

With ``distill.alpha`` near 1 the student learns almost only from the teacher's soft targets, so which
examples get a human label hardly matters to it directly; they matter through the teacher. Each round:

1. the teacher, warm-started from the last round's (round 0: the configured teacher, or a fresh head on
   ``model.teacher``), fine-tunes on the labelled set with ``teach``'s settings;
2. its soft targets for the **whole pool** (they cost no label) distil a student, with the human labels
   mixed in where the pool has them (``distill.alpha``);
3. both are evaluated: the student's record as in every run, the teacher's under ``teacher``.

Batches are chosen with the teacher's view of the pool (its probabilities for the uncertainty scores, its
embeddings for core-set, BADGE and the cold start). Round ``r``'s teacher is saved as
``active/teacher-round-NNN.safetensors`` (the newest kept), so a resumed run goes on from exactly the
teacher an uninterrupted one had.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import pipeline
from ..data import IGNORE, train_loader
from ..distiller import Distiller, freeze
from ..leakage import clean_part
from ..losses import hinton_loss
from ..runlog import RunLog
from ..teacher_cache import teacher_logits
from ..train import FitJob, fit, make_accelerator
from . import records

if TYPE_CHECKING:
    from .loop import Loop

def teacher_file(loop: "Loop", r: int) -> Path:
    return loop.folder / f"teacher-round-{r:03d}.safetensors"


def fresh_teacher(run) -> pipeline.Teacher:
    """``model.teacher`` with a new head for these labels (the rounds train it)."""
    spec = run.cfg.model.teacher
    tok = pipeline.tokenizer_for(spec, run.data)
    source = f"{spec.name or spec.kind} (head trained by the rounds)"
    return pipeline.Teacher(pipeline.new_teacher(run, tok), tok, source)


def restore_teacher(loop: "Loop", r: int) -> None:
    """The teacher of finished round ``r``, from disk (after a resume)."""
    from safetensors.torch import load_file
    freeze(loop.teacher).load_state_dict(load_file(teacher_file(loop, r)))
    loop.teacher_round = r


def teacher_of(loop: "Loop", r: int) -> None:
    """Make sure the loaded teacher is round ``r``'s (``-1``: the configured one, which the run starts from)."""
    if r >= 0 and loop.teacher_round != r:
        restore_teacher(loop, r)


def _fit_teacher(loop: "Loop", lab, r: int):
    """Fine-tune the teacher on the labelled split (warm start); returns the fit result."""
    cfg, ac, run = loop.cfg, loop.ac, loop.run
    acc = run.acc = make_accelerator(cfg.teach)  # the same seed every round: a resumed round replays
    teacher = loop.teacher
    for p in teacher.parameters():
        p.requires_grad_(True)
    feat = pipeline.featurizer(run, loop.tokenizer)
    settings = pipeline.train_settings(run, cfg.teach, "teacher", cfg.model.teacher, teacher)
    # A small labelled set is repeated within an epoch until ``teach.epochs`` epochs make ``min_steps`` steps
    # (on every process: the loader is split between them):
    # the teacher's validation pass (its cost on a CPU) then runs ``teach.epochs`` times, not once per step.
    per_epoch = math.ceil(ac.min_steps / cfg.teach.epochs)
    reps = max(1, math.ceil(per_epoch * cfg.teach.batch_size * acc.num_processes / max(len(lab), 1)))
    train = lab.subset(np.tile(np.arange(len(lab)), reps)) if reps > 1 else lab
    epochs = cfg.teach.epochs
    ckpt = loop.folder / "teacher-checkpoints"
    if acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
    acc.wait_for_everyone()

    def loss_fn(model, batch):
        return hinton_loss(model(**batch["inputs"]).logits, None, batch["labels"], 1.0, 0.0, "classification")

    log = RunLog(cfg.run_dir, acc, cfg.run.quiet, metrics_file="active/teacher_epochs.csv",
                 tensorboard="tensorboard/active_teacher")
    job = FitJob(f"teacher-round{r}", settings.model_copy(update={"epochs": epochs}), ckpt, min_steps=ac.min_steps)
    result = fit(teacher, loss_fn, train_loader(train, feat, None, cfg.teach.batch_size, cfg.teach.seed),
                 pipeline.eval_fn(run, run.data.validation, feat, cfg.teach.eval_batch_size), job, acc, log)
    log.close()
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
    loop.teacher = freeze(acc.unwrap_model(teacher)).cpu().eval()
    return result


def _teacher_scores(loop: "Loop") -> dict:
    d, run = loop.run.data, loop.run
    feat = pipeline.featurizer(run, loop.tokenizer)
    out = {}
    test = d.test if loop.ac.evaluate_test else None
    clean = clean_part(test, run.overlap["test"]) if test is not None and "test" in run.overlap else None
    for name, split in (("validation", d.validation), ("test", test), ("test_clean", clean)):
        if split is not None:  # the evaluation every fit uses (split over processes, gathered)
            out[name] = pipeline.eval_fn(run, split, feat, loop.cfg.teach.eval_batch_size)(
                loop.teacher.to(run.acc.device))
    loop.teacher.cpu()
    return out


def _pool_with_labels(loop: "Loop"):
    """The pool the student learns from: every labelled example with its label and every candidate with
    ``IGNORE`` (the teacher's soft targets only); ignored examples (in validation or test, or skipped) never."""
    state = loop.state
    part = loop.pool.subset(np.union1d(state.labelled_positions, state.candidates).astype(np.int64))
    index = {n: i for i, n in enumerate(loop.labels)}
    part.targets = np.asarray([index[loop.state.labels[k]["label"]] if k in loop.state.labels else IGNORE
                               for k in part.ids], dtype=np.int64)
    return part


def _distil_student(loop: "Loop", r: int):
    """A student distilled from the round's teacher on the whole pool; returns (student, fit result)."""
    cfg, run = loop.cfg, loop.run
    acc = run.acc = make_accelerator(cfg.train)
    pool = _pool_with_labels(loop)
    distiller = Distiller(loop.teacher, cfg.distill, "classification")
    # no cache: each round's teacher is new, so its outputs would only pile up in the cache folder
    distiller.set_targets(teacher_logits(run, loop.teacher, pool, pipeline.featurizer(run, loop.tokenizer), None))
    loop.teacher.cpu()
    loop.state.note_teacher(pool.ids)  # the teacher's soft targets for every pool example: free, but counted
    model = loop._start_model(r)
    log = RunLog(cfg.run_dir, acc, cfg.run.quiet, metrics_file="active/epochs.csv", tensorboard="tensorboard/active")
    ckpt = loop.folder / "checkpoints"
    if acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
    acc.wait_for_everyone()
    job = FitJob(f"round{r}", loop.train_cfg, ckpt)
    result = fit(model, distiller, train_loader(pool, loop.s_feat, None, cfg.train.batch_size, cfg.train.seed),
                 pipeline.eval_fn(run, run.data.validation, loop.s_feat, cfg.train.eval_batch_size), job, acc, log)
    log.close()
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
    return acc.unwrap_model(model).cpu().eval(), result


def train_round(loop: "Loop") -> dict:
    """Round ``r`` of ``target: teacher``: teacher fine-tuned, student distilled on the pool, both scored."""
    from safetensors.torch import save_file
    state = loop.state
    r = len(state.rounds)
    teacher_of(loop, r - 1)
    teacher_fit = _fit_teacher(loop, loop._labelled_split(), r)
    loop.teacher_round = r
    teacher = {**_teacher_scores(loop), "epochs_run": teacher_fit.epochs_run,
               "train_seconds": round(teacher_fit.seconds, 2)}
    student, result = _distil_student(loop, r)
    record = records.evaluate_round(loop, student, r, len(state.batches[r]), result)
    record["teacher"] = teacher
    if loop.run.acc.is_main_process:
        tmp = teacher_file(loop, r).with_suffix(".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in loop.teacher.state_dict().items()}, tmp)
        tmp.replace(teacher_file(loop, r))
    loop._save_round(student, [], r)
    state.rounds.append(record)
    state.save(loop.state_path)
    loop._prune_files(r)
    for old in loop.folder.glob("teacher-round-*.safetensors") if loop.run.acc.is_main_process else ():
        if old != teacher_file(loop, r):  # only once the state names round r: a kill before keeps r - 1's
            old.unlink()
    loop.current = student
    return record


def view_model(loop: "Loop") -> tuple[torch.nn.Module, object]:
    """The model (and tokenizer) whose outputs rank the pool: the teacher under ``target: teacher``."""
    if loop.ac.target == "teacher":
        teacher_of(loop, len(loop.state.rounds) - 1)
        return loop.teacher, loop.tokenizer
    return loop.current, loop.s_tokenizer


__all__ = ["train_round", "fresh_teacher", "restore_teacher", "view_model", "teacher_file", "teacher_of"]
