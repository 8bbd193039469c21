"""Training one round: the interface both targets implement, the fit they share, and the student target.

A :class:`RoundTrainer` trains round ``r``'s model(s) on the labels bought so far (:meth:`fit`), writes the
files the round needs besides the student's (:meth:`save`, before the state names the round), deletes its
earlier rounds' files (:meth:`prune`, after), and says whose outputs rank the pool (:meth:`view`).
:class:`StudentRounds` serves ``target: student`` and ``teacher_calls`` (the student learns from the labels,
mixed with the teacher's cached soft targets); ``teacher_rounds.TeacherRounds`` serves ``target: teacher``.
"""

from __future__ import annotations

import math
import shutil
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from .. import pipeline
from ..config import TrainConfig
from ..data import Featurizer, Split, train_loader
from ..distillation.distiller import Distiller
from ..distillation.teacher_cache import teacher_logits
from ..engine.runlog import RunLog
from ..engine.train import FitJob, FitResult, fit, make_accelerator
from .context import Context
from .outputs import needs_members

# (epoch metrics file, tensorboard folder) of each model a round trains
LOGS = {"student": ("active/epochs.csv", "tensorboard/active"),
        "teacher": ("active/teacher_epochs.csv", "tensorboard/active_teacher")}


@dataclass
class Round:
    """What :meth:`RoundTrainer.fit` hands back: the round's student (unwrapped, on the CPU, in eval mode), its
    fit result, the weights of its committee (checkpoints) and entries for the round's record."""

    student: torch.nn.Module
    result: FitResult
    snaps: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class RoundTrainer(Protocol):
    def fit(self, ctx: Context, r: int) -> Round: ...

    def save(self, ctx: Context, r: int) -> None: ...

    def prune(self, ctx: Context, r: int) -> None: ...

    def view(self, ctx: Context) -> tuple[torch.nn.Module, Any]: ...


def fit_round(ctx: Context, model: torch.nn.Module, loss_fn: Callable, data: Split, feat: Featurizer,
              section: TrainConfig, job: FitJob, who: str) -> FitResult:
    """Fit ``model`` on ``data`` with ``section``'s batch sizes and seed, evaluated on the validation split,
    on ``ctx.run.acc``. ``job.ckpt_dir`` is a throwaway folder, emptied before and deleted after (on process 0,
    the others waiting): a killed round is replayed whole, never resumed mid-fit."""
    run, acc = ctx.run, ctx.run.acc
    if acc.is_main_process:
        shutil.rmtree(job.ckpt_dir, ignore_errors=True)
    acc.wait_for_everyone()
    metrics_file, tensorboard = LOGS[who]
    log = RunLog(ctx.cfg.run_dir, acc, ctx.cfg.run.quiet, metrics_file=metrics_file, tensorboard=tensorboard)
    result = fit(model, loss_fn, train_loader(data, feat, None, section.batch_size, section.seed),
                 pipeline.selection_fn(run, run.data.validation, feat, section.eval_batch_size), job, acc, log)
    log.close()
    acc.wait_for_everyone()  # every process has read the best weights back
    if acc.is_main_process:
        shutil.rmtree(job.ckpt_dir, ignore_errors=True)
    return result


class StudentRounds:
    """``target: student`` / ``teacher_calls``: the student trains on the labelled set each round."""

    def fit(self, ctx: Context, r: int) -> Round:
        cfg, ac, state = ctx.cfg, ctx.ac, ctx.state
        acc = ctx.run.acc = make_accelerator(cfg.train)  # fresh, and the same seed every round: a resumed round
        lab = ctx.with_labels(state.labelled_positions)  # replays
        model = ctx.start_model(r)
        distiller = Distiller(ctx.teacher if cfg.distill.alpha > 0 else None, cfg.distill, ctx.run.data.task)
        if distiller.uses_teacher:
            distiller.set_targets(teacher_logits(ctx.run, ctx.teacher, lab,
                                                 pipeline.featurizer(ctx.run, ctx.tokenizer), ctx.cache))
            state.note_teacher(lab.ids)
        snaps: deque = deque(maxlen=ac.committee_size)
        checkpoints = needs_members(ac.strategy) and ac.committee == "checkpoints"

        def snapshot(epoch: int, m) -> None:
            if checkpoints:
                snaps.append({k: v.detach().cpu().clone() for k, v in m.state_dict().items()})

        steps = math.ceil(len(lab) / cfg.train.batch_size)  # small sets get epochs enough for min_steps
        epochs = max(cfg.train.epochs, math.ceil(ac.min_steps / max(steps, 1)))
        job = FitJob(f"round{r}", ctx.train_cfg.model_copy(update={"epochs": epochs}), ctx.folder / "checkpoints",
                     on_epoch_end=snapshot, min_steps=ac.min_steps)
        result = fit_round(ctx, model, distiller, lab, ctx.s_feat, cfg.train, job, "student")
        return Round(acc.unwrap_model(model).cpu().eval(), result, list(snaps))

    def save(self, ctx: Context, r: int) -> None:
        return None  # the student's file is every target's (Context.save_student)

    def prune(self, ctx: Context, r: int) -> None:
        return None

    def view(self, ctx: Context) -> tuple[torch.nn.Module, Any]:
        return ctx.current, ctx.s_tokenizer


__all__ = ["RoundTrainer", "Round", "StudentRounds", "fit_round", "LOGS"]
