"""Distillation losses as pure tensor functions.

Shapes: ``B`` examples, ``C`` classes. ``mask`` (optional, ``[B]`` bool) picks
the examples that count; every loss is a mean over the picked examples and is
exactly zero (with zero gradient) when none is picked.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

IGNORE = -100


def _masked_mean(per_example: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    if mask is None:
        return per_example.mean()
    mask = mask.to(per_example.dtype)
    return (per_example * mask).sum() / mask.sum().clamp(min=1.0)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

    ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` averaged over examples, with
    ``s, t: [B, C]``. The T² factor keeps the gradient magnitude of the soft
    term comparable to the hard-label term as T changes (the gradient of the
    KL term scales as 1/T²). Zero iff the two distributions agree.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # fp16/bf16 -> fp32, fp64 stays
    log_p_s = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    per_example = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return _masked_mean(per_example, mask) * temperature ** 2


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy with the hard labels ``[B]``; labels equal to -100 are skipped."""
    valid = labels != IGNORE
    if mask is not None:
        valid = valid & mask.bool()
    per_example = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    return _masked_mean(per_example, valid)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error for regression; ``pred`` ``[B]`` or ``[B, 1]``, ``target`` ``[B]``."""
    pred, target = pred.float().reshape(-1), target.float().reshape(-1)
    valid = ~torch.isnan(target)
    if mask is not None:
        valid = valid & mask.bool()
    # replace skipped targets before subtracting: (pred - nan) would poison the gradient
    safe = torch.where(valid, target, pred.detach())
    return _masked_mean((pred - safe) ** 2, valid)


def hinton_loss(student_logits: torch.Tensor, teacher_logits: Optional[torch.Tensor], labels: torch.Tensor,
                temperature: float, alpha: float, task: str = "classification") -> dict[str, torch.Tensor]:
    """``loss = alpha · KD + (1 − alpha) · hard`` as named terms.

    Classification: KD is :func:`kd_loss`, hard is :func:`ce_loss`.
    Regression: KD is MSE to the teacher's prediction, hard is MSE to the target.
    ``alpha = 1`` ignores labels (pure distillation, e.g. unlabelled pool);
    ``alpha = 0`` or no teacher is plain supervised training.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if task == "regression":
        hard = mse_loss(student_logits, labels)
        soft = mse_loss(student_logits, teacher_logits) if teacher_logits is not None else None
    else:
        hard = ce_loss(student_logits, labels)
        soft = kd_loss(student_logits, teacher_logits, temperature) if teacher_logits is not None else None
    if soft is None:
        return {"loss": hard, "loss_hard": hard}
    return {"loss": alpha * soft + (1.0 - alpha) * hard, "loss_kd": soft, "loss_hard": hard}
