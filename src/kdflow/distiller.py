"""Composes a teacher, where its targets come from, and the loss terms.

offline / guide: the teacher's logits for every training example sit in
``self.targets`` (``[N, C]``, row i = example i) and a batch picks its rows by
position. online: the teacher runs on each batch. The teacher is frozen
(``eval()``, ``requires_grad_(False)``, ``no_grad``) except in guide mode, where
the caller trains it between epochs and calls :meth:`set_targets`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .losses import hinton_loss


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


class Distiller:
    def __init__(self, teacher: Optional[nn.Module], mode: str, temperature: float, alpha: float, task: str):
        self.teacher, self.mode, self.temperature, self.alpha, self.task = teacher, mode, temperature, alpha, task
        self.targets: Optional[torch.Tensor] = None
        self.teacher_calls = 0  # examples the teacher ran on inside the training loop
        self.refreshes = 0      # times the targets were (re)set: 1 offline, every k epochs in guide
        if teacher is not None and mode != "guide":
            freeze(teacher)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 and self.teacher is not None

    def set_targets(self, targets: torch.Tensor) -> None:
        self.targets = targets.float()
        self.refreshes += 1

    def teacher_logits(self, batch: dict, device: torch.device) -> Optional[torch.Tensor]:
        if not self.uses_teacher:
            return None
        if self.mode == "online":
            self.teacher.eval()
            with torch.no_grad():
                inputs = {k: v.to(device) for k, v in batch["teacher_inputs"].items()}
                self.teacher_calls += len(batch["index"])
                return self.teacher(**inputs).logits.float()
        if self.targets is None:
            raise RuntimeError(f"{self.mode} distillation needs set_targets() before training")
        return self.targets[batch["index"].cpu()].to(device)

    def __call__(self, student: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = student(**batch["inputs"]).logits
        teacher = self.teacher_logits(batch, logits.device)
        return hinton_loss(logits, teacher, batch["labels"], self.temperature, self.alpha, self.task)
