"""One command's world -- its config, data, accelerator and log -- and the evaluation every fit uses.

Below :mod:`kdflow.pipeline` (which assembles a :class:`Run`) and below every module that receives one
(:mod:`kdflow.distillation.critical`, :mod:`kdflow.distillation.teacher_cache`, the active-learning loop, the frontier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from .. import models
from ..config import Config
from ..data import Featurizer, Split, TaskData, loader, make_collate
from ..metrics import quality, tuned_quality
from .runlog import RunLog
from .train import predict


@dataclass
class Run:
    """One command's world: its config, data, accelerator and log (``None`` for read-only commands)."""

    cfg: Config
    data: TaskData
    acc: Any
    log: Optional[RunLog]
    findings: list = field(default_factory=list)  # warnings of the checks before training (kdflow.diagnose.check)
    overlap: dict = field(default_factory=dict)  # held-out split -> its examples in the training data (leakage)

    def info(self, message: str) -> None:
        if self.log is not None:
            self.log.info(message)

    def build_context(self, tokenizer=None, teacher: Optional[nn.Module] = None,
                      rank_teacher_blocks: Optional[Callable[[], list[int]]] = None) -> models.BuildContext:
        d = self.data
        return models.BuildContext(d.label_names, d.task, self.cfg.data.max_length, tokenizer, teacher,
                                   rank_teacher_blocks, self.info, examples=d.train, cache_dir=cache_root(self))


def cache_root(run: Run) -> Path:
    """``distill.cache_dir``, else ``<run.output_dir>/.teacher_cache`` (shared by the runs of one output folder):
    the teacher's cached outputs, and the answers of a teacher paid per call."""
    dc = run.cfg.distill
    return Path(dc.cache_dir) if dc.cache_dir else Path(run.cfg.run.output_dir) / ".teacher_cache"


def eval_fn(run: Run, split: Split, feat: Featurizer, batch_size: int, key: str = "inputs",
            decision: Optional[dict] = None) -> Callable[[nn.Module], dict]:
    """``evaluate(model) -> metrics`` on ``split`` (sharded over processes, gathered), by the task's default
    decision rule or ``decision`` (multilabel: thresholds tuned on validation)."""
    outputs = predict_fn(run, split, feat, batch_size, key)

    def evaluate(model) -> dict:
        logits, targets = outputs(model)
        return quality(logits, targets, run.data.task, decision, run.data.label_names)
    return evaluate


def selection_fn(run: Run, split: Split, feat: Featurizer, batch_size: int, key: str = "inputs"
                 ) -> Callable[[nn.Module], dict]:
    """``evaluate(model) -> metrics`` on ``split`` (validation) to choose epochs by: at the decision rule the task
    kind tunes there (multilabel: thresholds), as the chosen model is finally scored; the default rule for the
    others. (At a fixed 0.5 a multi-label model trained on a few examples predicts no label for epochs, and the
    selection would take an untrained one.)"""
    outputs = predict_fn(run, split, feat, batch_size, key)

    def evaluate(model) -> dict:
        logits, targets = outputs(model)
        return tuned_quality(logits, targets, run.data.task, run.data.label_names)[1]
    return evaluate


def predict_fn(run: Run, split: Split, feat: Featurizer, batch_size: int, key: str = "inputs"
               ) -> Callable[[nn.Module], tuple]:
    """``outputs(model) -> (logits, targets)`` on ``split`` (sharded over processes, gathered)."""
    dl = run.acc.prepare_data_loader(loader(split, make_collate(split, feat), batch_size, shuffle=False))
    return lambda model: predict(model, dl, run.acc, key)


def validation_scores(run: Run, model: nn.Module, feat: Featurizer, batch_size: int) -> tuple[Optional[dict], dict]:
    """One pass over the validation split: the decision rule the task kind tunes there (multilabel: thresholds;
    None for the others) and the validation metrics by it."""
    logits, targets = predict_fn(run, run.data.validation, feat, batch_size)(model)
    return tuned_quality(logits, targets, run.data.task, run.data.label_names)


__all__ = ["Run", "cache_root", "eval_fn", "selection_fn", "predict_fn", "validation_scores"]
