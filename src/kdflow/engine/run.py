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


def eval_fn(run: Run, split: Split, feat: Featurizer, batch_size: int, key: str = "inputs"
            ) -> Callable[[nn.Module], dict]:
    """``evaluate(model) -> metrics`` on ``split`` (sharded over processes, gathered)."""
    dl = run.acc.prepare_data_loader(loader(split, make_collate(split, feat), batch_size, shuffle=False))

    def evaluate(model) -> dict:
        logits, targets = predict(model, dl, run.acc, key)
        return quality(logits, targets, run.data.task)
    return evaluate


__all__ = ["Run", "eval_fn"]
