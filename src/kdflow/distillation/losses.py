"""Distillation losses as pure tensor functions.

Shapes: ``B`` examples, ``C`` classes. ``mask`` (optional, ``[B]`` bool) picks
the examples that count; every loss is a mean over the picked examples and is
exactly zero (with zero gradient) when none is picked.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..tasks import task_kind
from ..tasks.classification import IGNORE  # the label of an example without one (cross-entropy skips it)
from ..tasks.tokens import words_of


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


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Multi-label: binary cross-entropy of one sigmoid per label, ``logits`` and multi-hot ``targets`` ``[B, C]``,
    summed over labels (each label's logit gets the gradient ``p - y``, as a class logit does under cross-entropy;
    a mean over 40 labels would train 40 times slower), averaged over examples; a row holding NaN (no label
    known) is skipped."""
    targets = targets.float()
    valid = ~torch.isnan(targets).any(-1)
    if mask is not None:
        valid = valid & mask.bool()
    safe = torch.where(valid[:, None], targets, torch.zeros_like(targets))  # NaN would poison the gradient
    per_example = F.binary_cross_entropy_with_logits(logits.float(), safe, reduction="none").sum(-1)
    return _masked_mean(per_example, valid)


def binary_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Multi-label KD: for each label, the KL between the teacher's and the student's temperature-softened
    sigmoids (two-outcome distributions), ``T² · Σ_c KL(Bern(σ(t_c/T)) ‖ Bern(σ(s_c/T)))`` (summed over labels,
    as :func:`bce_loss` is), averaged over examples; zero iff they agree on every label."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    s, t = student_logits.to(dtype) / temperature, teacher_logits.to(dtype) / temperature
    p_t = torch.sigmoid(t)
    per_label = (p_t * (F.logsigmoid(t) - F.logsigmoid(s))
                 + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s)))
    return _masked_mean(per_label.sum(-1), mask) * temperature ** 2


def _mse_to(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    return mse_loss(student, teacher)


# the losses a task kind names (kdflow.tasks): to the gold targets, and Hinton's term to one teacher
HARD_LOSSES = {"ce": ce_loss, "mse": mse_loss, "bce": bce_loss}
SOFT_LOSSES = {"kd": kd_loss, "mse": _mse_to, "binary_kd": binary_kd_loss}


def hinton_loss(student_logits: torch.Tensor, teacher_logits: Optional[torch.Tensor], labels: torch.Tensor,
                temperature: float, alpha: float, task: str = "classification") -> dict[str, torch.Tensor]:
    """``loss = alpha · KD + (1 − alpha) · hard`` as named terms.

    The task kind names both (:data:`HARD_LOSSES`, :data:`SOFT_LOSSES`): classification: KD is :func:`kd_loss`,
    hard is :func:`ce_loss`; regression: KD is MSE to the teacher's prediction, hard is MSE to the target.
    ``alpha = 1`` ignores labels (pure distillation, e.g. unlabelled pool);
    ``alpha = 0`` or no teacher is plain supervised training.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    kind = task_kind(task)
    if kind.per_word:  # tags: the real words are the rows (padding positions dropped)
        student_logits, labels, *t = words_of(student_logits, labels,
                                              *([teacher_logits] if teacher_logits is not None else []))
        teacher_logits = t[0] if t else None
    hard = HARD_LOSSES[kind.hard_loss](student_logits, labels)
    soft = (SOFT_LOSSES[kind.soft_loss](student_logits, teacher_logits, temperature) if teacher_logits is not None
            else None)
    if soft is None:
        return {"loss": hard, "loss_hard": hard}
    return {"loss": alpha * soft + (1.0 - alpha) * hard, "loss_kd": soft, "loss_hard": hard}


def label_loss(model, batch: dict, task: str, inputs: str = "inputs") -> dict[str, torch.Tensor]:
    """A model's loss on the gold targets of ``batch`` alone, as named terms (a teacher in training: it has no
    soft targets to learn from); ``inputs``: the batch's key of the model's inputs."""
    return hinton_loss(model(**batch[inputs]).logits, None, batch["labels"], 1.0, 0.0, task)


# ------------------------------------------------------------ more logit losses

def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             temperature: float, alpha: float = 1.0, beta: float = 8.0,
             mask: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Decoupled KD (Zhao, Cui, Song, Qiu & Liang, CVPR 2022), logits ``[B, C]``, labels ``[B]``.

    Hinton's KD splits into a target-class term and a non-target term:
    ``KD = TCKD + (1 − p_t^T) · NCKD`` where, at temperature ``T``,

    * TCKD = ``KL(b^T ‖ b^S)``, ``b = [p_target, 1 − p_target]`` (binary: how sure of the gold class),
    * NCKD = ``KL(p̂^T ‖ p̂^S)``, ``p̂`` = the softmax over the non-target classes only.

    DKD weights them freely: ``alpha · TCKD + beta · NCKD`` (times ``T²``), so the
    "dark knowledge" among wrong classes is not suppressed when the teacher is
    confident. Examples labelled -100 are skipped. Returns ``loss``, ``tckd``, ``nckd``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    valid = labels != IGNORE
    if mask is not None:
        valid = valid & mask.bool()
    y = labels.clamp(min=0)
    s, t = student_logits.float() / temperature, teacher_logits.float() / temperature
    gold = F.one_hot(y, s.shape[-1]).bool()
    p_s, p_t = F.softmax(s, -1), F.softmax(t, -1)
    eps = 1e-12
    bs = torch.stack([p_s[gold], 1 - p_s[gold]], -1).clamp_min(eps)
    bt = torch.stack([p_t[gold], 1 - p_t[gold]], -1).clamp_min(eps)
    tckd = (bt * (bt.log() - bs.log())).sum(-1)
    big = torch.finfo(s.dtype).max / 4  # remove the gold class from the non-target softmax
    log_q_s = F.log_softmax(s.masked_fill(gold, -big), -1)
    log_q_t = F.log_softmax(t.masked_fill(gold, -big), -1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).masked_fill(gold, 0.0).sum(-1)
    tckd_m, nckd_m = _masked_mean(tckd, valid), _masked_mean(nckd, valid)
    scale = temperature ** 2
    return {"loss": scale * (alpha * tckd_m + beta * nckd_m), "tckd": scale * tckd_m, "nckd": scale * nckd_m}


def multi_teacher_kd(student_logits: torch.Tensor, teacher_logits: "list[torch.Tensor]",
                     weights: "Optional[list[float]]", temperature: float,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """KD against the weighted average of several teachers' soft targets (each ``[B, C]``).

    ``T² · KL(Σ_k w_k softmax(t_k/T) ‖ softmax(s/T))`` with ``w`` normalised to sum
    to 1 (equal weights when ``None``). Averaging probabilities, not logits, keeps
    each teacher's distribution intact (an ensemble's predictive distribution).
    One teacher with weight 1 is exactly :func:`kd_loss`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    w = torch.tensor(weights if weights is not None else [1.0] * len(teacher_logits), dtype=torch.float32)
    if len(w) != len(teacher_logits) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("teacher weights must be one non-negative number per teacher, not all zero")
    w = (w / w.sum()).to(student_logits.device)
    p_t = sum(wk * F.softmax(t.float() / temperature, -1) for wk, t in zip(w, teacher_logits))
    log_p_s = F.log_softmax(student_logits.float() / temperature, -1)
    per_example = (p_t * (p_t.clamp_min(1e-12).log() - log_p_s)).sum(-1)
    return _masked_mean(per_example, mask) * temperature ** 2


# ------------------------------------------------------------ intermediate losses
# Shapes: ``L`` tokens, ``D`` widths, ``H`` heads; ``token_mask`` ``[B, L]`` (1 = real token).

def _token_mean(per_token: torch.Tensor, token_mask: Optional[torch.Tensor]) -> torch.Tensor:
    if token_mask is None:
        return per_token.mean()
    m = token_mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp(min=1.0)


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               token_mask: Optional[torch.Tensor] = None, projection: Optional[torch.nn.Module] = None
               ) -> torch.Tensor:
    """FitNets (Romero et al. 2015) / TinyBERT (Jiao et al. 2020) hidden-state loss.

    ``mean over real tokens of mean_d (W·h_s − h_t)²`` with ``h_s: [B, L, D_s]``,
    ``h_t: [B, L, D_t]``. ``projection`` (a learned ``D_s → D_t`` linear map,
    trained with the student) is required when the widths differ.
    """
    s = student_hidden.float() if projection is None else projection(student_hidden.float())
    if s.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(f"hidden widths differ ({s.shape[-1]} vs {teacher_hidden.shape[-1]}); give a projection")
    return _token_mean(((s - teacher_hidden.float()) ** 2).mean(-1), token_mask)


def cosine_hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       token_mask: Optional[torch.Tensor] = None,
                       projection: Optional[torch.nn.Module] = None) -> torch.Tensor:
    """DistilBERT's cosine embedding loss (Sanh et al. 2019): ``1 − cos(W·h_s, h_t)`` per
    real token, averaged. Aligns directions of the hidden states, not their scale."""
    s = student_hidden.float() if projection is None else projection(student_hidden.float())
    if s.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(f"hidden widths differ ({s.shape[-1]} vs {teacher_hidden.shape[-1]}); give a projection")
    return _token_mean(1.0 - F.cosine_similarity(s, teacher_hidden.float(), dim=-1, eps=1e-8), token_mask)


def pkd_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor,
             projection: Optional[torch.nn.Module] = None, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Patient KD (Sun et al. 2019): ``‖ h_s/‖h_s‖₂ − h_t/‖h_t‖₂ ‖²₂`` on the [CLS]
    states ``[B, D]`` of matched layers, averaged over examples. Normalising makes
    it scale-free; its value lies in ``[0, 4]``."""
    s = student_cls.float() if projection is None else projection(student_cls.float())
    if s.shape[-1] != teacher_cls.shape[-1]:
        raise ValueError(f"[CLS] widths differ ({s.shape[-1]} vs {teacher_cls.shape[-1]}); give a projection")
    d = F.normalize(s, dim=-1, eps=1e-8) - F.normalize(teacher_cls.float(), dim=-1, eps=1e-8)
    return _masked_mean((d ** 2).sum(-1), mask)


def attention_kl(student_attention: torch.Tensor, teacher_attention: torch.Tensor,
                 token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Attention-distribution KL (TinyBERT uses MSE of the maps; MiniLM the KL of the
    distributions, which we follow): ``KL(A_t[q] ‖ A_s[q])`` for every head and every
    real query ``q``, averaged. Maps are ``[B, H, L, L]`` softmax rows over keys.

    When the head counts differ, each model's heads are averaged first (one map per
    layer). Padded queries are excluded; padded keys carry (near-)zero probability in
    both maps and are skipped by the mask.
    """
    s, t = student_attention.float(), teacher_attention.float()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    eps = 1e-12
    per = t * (t.clamp_min(eps).log() - s.clamp_min(eps).log())
    if token_mask is not None:
        per = per * token_mask[:, None, None, :].to(per.dtype)  # keys
    per_query = per.sum(-1).mean(1)  # [B, L]: sum over keys, mean over heads
    return _token_mean(per_query, token_mask)


def spatial_attention(feature_map: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Zagoruyko & Komodakis's activation-based attention map: ``Q = mean_c |A_c|^p`` of a
    ``[B, C, H, W]`` feature map, ``[B, H, W]`` (for tokens ``[B, L, D]``: ``[B, L]``)."""
    x = feature_map.float()
    return x.abs().pow(p).mean(1 if x.dim() == 4 else -1)


def attention_transfer(student_map: torch.Tensor, teacher_map: torch.Tensor, token_mask: Optional[torch.Tensor] = None,
                       p: float = 2.0) -> torch.Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017): ``‖ Q_s/‖Q_s‖₂ − Q_t/‖Q_t‖₂ ‖²₂``
    per example, averaged, with ``Q`` the spatial attention map (:func:`spatial_attention`) of
    matched stages (Transformer blocks: over tokens, ``token_mask`` zeroing the padding). Channel counts
    may differ (``Q`` averages over them); when the grids differ,
    the larger map is average-pooled to the smaller. Scale-free; its value lies in ``[0, 4]``
    (the paper's code weights the mean over the ``H·W`` positions by β/2 = 500, which is this loss
    weighted by ``500 / (H·W)``: about 30 where two maps meet on a 4x4 grid)."""
    qs, qt = spatial_attention(student_map, p), spatial_attention(teacher_map, p)
    if token_mask is not None and qs.dim() == 2:  # tokens [B, L]: padding carries no attention
        qs, qt = qs * token_mask.to(qs.dtype), qt * token_mask.to(qt.dtype)
    if qs.dim() == 3 and qs.shape[-2:] != qt.shape[-2:]:
        side = (min(qs.shape[-2], qt.shape[-2]), min(qs.shape[-1], qt.shape[-1]))
        qs = F.adaptive_avg_pool2d(qs[:, None], side)[:, 0]
        qt = F.adaptive_avg_pool2d(qt[:, None], side)[:, 0]
    if qs.shape[1:] != qt.shape[1:]:
        raise ValueError(f"attention maps cover {tuple(qs.shape[1:])} and {tuple(qt.shape[1:])} positions")
    d = F.normalize(qs.flatten(1), dim=1, eps=1e-8) - F.normalize(qt.flatten(1), dim=1, eps=1e-8)
    return (d ** 2).sum(1).mean()
