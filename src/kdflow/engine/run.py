"""One command's world -- its config, data, accelerator and log -- and the evaluation every fit uses.

Below :mod:`kdflow.pipeline` (which assembles a :class:`Run`) and below every module that receives one
(:mod:`kdflow.distillation.critical`, :mod:`kdflow.distillation.teacher_cache`, the active-learning loop, the frontier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import nn

from .. import models
from ..config import Config
from ..data import Featurizer, Split, TaskData, loader, make_collate
from ..metrics import quality
from ..tasks import task_kind
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
                                   rank_teacher_blocks, self.info)


def eval_fn(run: Run, split: Split, feat: Featurizer, batch_size: int, key: str = "inputs",
            decision: Optional[dict] = None) -> Callable[[nn.Module], dict]:
    """``evaluate(model) -> metrics`` on ``split`` (sharded over processes, gathered), by the task's default
    decision rule or ``decision`` (multilabel: thresholds tuned on validation)."""
    dl = run.acc.prepare_data_loader(loader(split, make_collate(split, feat), batch_size, shuffle=False))

    def evaluate(model) -> dict:
        logits, targets = predict(model, dl, run.acc, key)
        return quality(logits, targets, run.data.task, decision)
    return evaluate


def tuned_decision(run: Run, model: nn.Module, feat: Featurizer, batch_size: int) -> Optional[dict]:
    """The decision rule the task kind tunes on the validation split (multilabel: thresholds), or None."""
    tune = task_kind(run.data.task).tune
    if tune is None:
        return None
    dl = run.acc.prepare_data_loader(loader(run.data.validation, make_collate(run.data.validation, feat),
                                            batch_size, shuffle=False))
    logits, targets = predict(model, dl, run.acc)
    return tune(logits, targets)


__all__ = ["Run", "eval_fn", "tuned_decision"]
