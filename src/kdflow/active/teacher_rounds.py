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
from functools import partial
from typing import Any

import numpy as np
import torch

from .. import pipeline
from ..data.leakage import clean_part
from ..distillation.distiller import Distiller, freeze
from ..distillation.losses import label_loss
from ..distillation.teacher_cache import teacher_logits
from ..engine.train import FitJob, FitResult, make_accelerator
from .context import Context
from .rounds import Round, fit_round


def fresh_teacher(run) -> pipeline.Teacher:
    """``model.teacher`` with a new head for these labels (the rounds train it)."""
    spec = run.cfg.model.teacher
    tok = pipeline.tokenizer_for(spec, run.data)
    source = f"{spec.name or spec.kind} (head trained by the rounds)"
    return pipeline.Teacher(pipeline.new_teacher(run, tok), tok, source)


def _fit_teacher(ctx: Context, r: int) -> FitResult:
    """Fine-tune the teacher on the labelled split (warm start)."""
    cfg, ac, run = ctx.cfg, ctx.ac, ctx.run
    acc = run.acc = make_accelerator(cfg.teach)  # the same seed every round: a resumed round replays
    lab = ctx.with_labels(ctx.state.labelled_positions)
    teacher = ctx.teacher
    for p in teacher.parameters():
        p.requires_grad_(True)
    feat = pipeline.featurizer(run, ctx.tokenizer)
    settings = pipeline.train_settings(run, cfg.teach, "teacher", cfg.model.teacher, teacher)
    # A small labelled set is repeated within an epoch until ``teach.epochs`` epochs make ``min_steps`` steps
    # (on every process: the loader is split between them):
    # the teacher's validation pass (its cost on a CPU) then runs ``teach.epochs`` times, not once per step.
    per_epoch = math.ceil(ac.min_steps / cfg.teach.epochs)
    reps = max(1, math.ceil(per_epoch * cfg.teach.batch_size * acc.num_processes / max(len(lab), 1)))
    train = lab.subset(np.tile(np.arange(len(lab)), reps)) if reps > 1 else lab
    job = FitJob(f"teacher-round{r}", settings.model_copy(update={"epochs": cfg.teach.epochs}),
                 ctx.folder / "teacher-checkpoints", min_steps=ac.min_steps)
    result = fit_round(ctx, teacher, partial(label_loss, task=run.data.task), train, feat, cfg.teach, job, "teacher")
    ctx.teacher = freeze(acc.unwrap_model(teacher)).cpu().eval()
    return result


def _teacher_scores(ctx: Context) -> dict:
    d, run = ctx.run.data, ctx.run
    feat = pipeline.featurizer(run, ctx.tokenizer)
    out = {}
    test = d.test if ctx.ac.evaluate_test else None
    clean = clean_part(test, run.overlap["test"]) if test is not None and "test" in run.overlap else None
    for name, split in (("validation", d.validation), ("test", test), ("test_clean", clean)):
        if split is not None:  # the evaluation every fit uses (split over processes, gathered)
            out[name] = pipeline.eval_fn(run, split, feat, ctx.cfg.teach.eval_batch_size)(
                ctx.teacher.to(run.acc.device))
    ctx.teacher.cpu()
    return out


def _distil_student(ctx: Context, r: int) -> tuple[torch.nn.Module, FitResult]:
    """A student distilled from the round's teacher on the whole pool: every labelled example with its label,
    every candidate with ``IGNORE`` (the teacher's soft targets only); ignored examples (in validation or test,
    or skipped) never."""
    cfg, run, state = ctx.cfg, ctx.run, ctx.state
    acc = run.acc = make_accelerator(cfg.train)
    pool = ctx.with_labels(np.union1d(state.labelled_positions, state.candidates), unlabelled=True)
    distiller = Distiller(ctx.teacher, cfg.distill, run.data.task)
    # no cache: each round's teacher is new, so its outputs would only pile up in the cache folder
    distiller.set_targets(teacher_logits(run, ctx.teacher, pool, pipeline.featurizer(run, ctx.tokenizer), None))
    ctx.teacher.cpu()
    state.note_teacher(pool.ids)  # the teacher's soft targets for every pool example: free, but counted
    model = ctx.start_model(r)
    result = fit_round(ctx, model, distiller, pool, ctx.s_feat, cfg.train,
                       FitJob(f"round{r}", ctx.train_cfg, ctx.folder / "checkpoints"), "student")
    return acc.unwrap_model(model).cpu().eval(), result


class TeacherRounds:
    """``target: teacher``: each round fine-tunes the teacher, distils the student from it, scores both."""

    def fit(self, ctx: Context, r: int) -> Round:
        ctx.use_teacher_of(r - 1)
        teacher_fit = _fit_teacher(ctx, r)
        ctx.teacher_round = r
        teacher = {**_teacher_scores(ctx), "epochs_run": teacher_fit.epochs_run,
                   "train_seconds": round(teacher_fit.seconds, 2)}
        student, result = _distil_student(ctx, r)
        return Round(student, result, extra={"teacher": teacher})

    def save(self, ctx: Context, r: int) -> None:
        if ctx.run.acc.is_main_process:
            from ..engine.checkpoint import save_weights
            save_weights(ctx.teacher.state_dict(), ctx.teacher_file(r))

    def prune(self, ctx: Context, r: int) -> None:
        ctx.prune("teacher-round-*.safetensors", ctx.teacher_file(r))  # a kill before keeps r - 1's

    def view(self, ctx: Context) -> tuple[torch.nn.Module, Any]:
        """The teacher ranks the pool: its newest round's."""
        ctx.use_teacher_of(len(ctx.state.rounds) - 1)
        return ctx.teacher, ctx.tokenizer


__all__ = ["TeacherRounds", "fresh_teacher"]
