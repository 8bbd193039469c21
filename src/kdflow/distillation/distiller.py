"""Composes a teacher, where its targets come from, and the loss terms (the logit loss from
:data:`LOGIT_LOSSES`, the intermediate terms of a layer map).

offline / guide: the teacher's logits for every training example sit in
``self.targets`` (``[N, C]``, row i = example i) and a batch picks its rows by
position. online: the teacher runs on each batch. The teacher is frozen
(``eval()``, ``requires_grad_(False)``, ``no_grad``) except in guide mode, where
the caller trains it between epochs and calls :meth:`set_targets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..config import DistillConfig
from ..errors import KdflowError
from ..tasks import task_kind
from ..tasks.tokens import words_of
from .layers import LayerPair, Taps, as_tokens, common_grid, match_positions, stage_paths
from .losses import (
    HARD_LOSSES,
    attention_kl,
    attention_transfer,
    binary_kd_loss,
    cosine_hidden_loss,
    dkd_loss,
    hidden_mse,
    kd_loss,
    mse_loss,
    multi_teacher_kd,
    pkd_loss,
)


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def use_eager_attention(model: nn.Module) -> None:
    """Attention maps are only returned by the eager implementation (not SDPA/flash)."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")


def extract(model: nn.Module, inputs: dict, pairs: list[LayerPair], side: str):
    """Run ``model`` once; return its output and ``{pair.name: tensor}`` for ``side``
    (``student`` or ``teacher``): block outputs ``[B, L, D]`` (hidden, cosine), the
    first position ``[B, D]`` (pkd) or attention maps ``[B, H, L, L]``."""
    stages = stage_paths(model)  # a CNN: block i is stage i, read by its module path
    layers = [(p, stages[ref] if stages and isinstance(ref, int) else ref)
              for p in pairs for ref in [getattr(p, side)]]
    kwargs = {}
    if any(isinstance(ref, int) and p.kind != "attention" for p, ref in layers):
        kwargs["output_hidden_states"] = True
    if any(isinstance(ref, int) and p.kind == "attention" for p, ref in layers):
        kwargs["output_attentions"] = True
    with Taps(model, sorted({ref for _, ref in layers if isinstance(ref, str)})) as taps:
        out = model(**inputs, **kwargs)
    feats = {}
    for p, layer in layers:
        if isinstance(layer, str):
            x = taps.outputs[layer]
        elif p.kind == "attention":
            maps = getattr(out, "attentions", None)
            if not maps:
                raise KdflowError(f"The {side} ({type(model).__name__}) returns no attention maps; drop 'attention' "
                                  "from distill.layer_losses or use a Hugging Face encoder")
            x = maps[layer]
        else:
            states = getattr(out, "hidden_states", None)
            if not states:
                raise KdflowError(f"The {side} ({type(model).__name__}) returns no hidden states; give its layers "
                                  "as module paths in distill.layers")
            x = states[layer + 1]
        if p.kind == "pkd":
            x = x.mean((2, 3)) if x.dim() == 4 else as_tokens(x)[:, 0]
        elif p.kind not in ("attention", "at") and x.dim() != 4:  # CNN maps stay [B, C, H, W] until paired
            x = as_tokens(x)
        feats[p.name] = x
    return out, feats


def _key(name: str) -> str:
    return name.replace(".", "-")  # module paths inside a ModuleDict key


class FeatureStudent(nn.Module):
    """The student plus the learned projections that map its layer outputs to the teacher's
    widths. ``forward(**inputs)`` is the student's own forward (evaluation, export);
    ``forward(**inputs, kd_features=True)`` also returns the projected features, so one
    forward (also under DDP) yields everything the intermediate losses need. Only
    ``.student`` is saved as the distilled model."""

    def __init__(self, student: nn.Module, pairs: list[LayerPair], widths: dict[str, tuple[int, int]]):
        super().__init__()
        self.student, self.pairs = student, pairs
        self.projections = nn.ModuleDict({_key(name): nn.Linear(ds, dt) for name, (ds, dt) in widths.items()
                                          if ds != dt})

    def forward(self, *args, kd_features: bool = False, **inputs):
        if not kd_features:
            return self.student(*args, **inputs)
        out, feats = extract(self.student, inputs, self.pairs, "student")
        for p in self.pairs:
            if _key(p.name) in self.projections:
                x, proj = feats[p.name].float(), self.projections[_key(p.name)]
                # on a CNN map [B, C, H, W] the channel map is a 1x1 convolution (FitNets' regressor)
                feats[p.name] = proj(x.movedim(1, -1)).movedim(-1, 1) if x.dim() == 4 else proj(x)
        return out, feats


def feature_widths(student: nn.Module, teacher: nn.Module, pairs: list[LayerPair], batch: dict) -> dict:
    """``{pair.name: (student width, teacher width)}`` of the pairs that compare states, by one probe pass."""
    was = student.training
    student.eval()
    with torch.no_grad():
        _, s = extract(student, batch["inputs"], pairs, "student")
        _, t = extract(teacher, batch["teacher_inputs"], pairs, "teacher")
    student.train(was)
    def width(x: torch.Tensor) -> int:
        return x.shape[1] if x.dim() == 4 else x.shape[-1]
    return {p.name: (width(s[p.name]), width(t[p.name])) for p in pairs if p.kind not in ("attention", "at")}


@dataclass(frozen=True)
class LogitLoss:
    """A soft-target loss: ``fn(student_logits, teacher_logits_list, labels, distill_config, weights)``
    returns ``{"soft": tensor, **extra named terms}``; the Distiller mixes ``soft`` with the hard-label
    loss. ``tasks``: the task kinds it is for; ``many``: whether it takes several teachers' targets."""

    fn: Callable[..., dict]
    tasks: tuple[str, ...] = ("classification",)
    many: bool = False


def _hinton(s: torch.Tensor, teachers: list, labels, dc: DistillConfig, weights) -> dict:
    return {"soft": kd_loss(s, teachers[0], dc.temperature)}


def _dkd(s: torch.Tensor, teachers: list, labels, dc: DistillConfig, weights) -> dict:
    parts = dkd_loss(s, teachers[0], labels, dc.temperature, dc.dkd_alpha, dc.dkd_beta)
    return {"soft": parts["loss"], "loss_tckd": parts["tckd"], "loss_nckd": parts["nckd"]}


def _multi_teacher(s: torch.Tensor, teachers: list, labels, dc: DistillConfig, weights) -> dict:
    return {"soft": multi_teacher_kd(s, teachers, weights, dc.temperature),
            "loss_kd_single": kd_loss(s, teachers[0], dc.temperature).detach()}


def _binary_kd(s: torch.Tensor, teachers: list, labels, dc: DistillConfig, weights) -> dict:
    return {"soft": binary_kd_loss(s, teachers[0], dc.temperature)}


def _mse(s: torch.Tensor, teachers: list, labels, dc: DistillConfig, weights) -> dict:
    return {"soft": mse_loss(s, teachers[0])}


# A new logit loss: a pure function in kdflow.losses, an adapter above and one entry here
# (tests/test_losses.py runs every entry; distill.logit_loss accepts its name).
LOGIT_LOSSES: dict[str, LogitLoss] = {
    # tokens: the words are the rows (kdflow.tasks.tokens.words_of), so the classification losses apply per word
    # Hinton et al. 2015: T^2 KL of the softened distributions
    "hinton": LogitLoss(_hinton, tasks=("classification", "tokens")),
    # Decoupled KD, Zhao et al. 2022: dkd_alpha * TCKD + dkd_beta * NCKD
    "dkd": LogitLoss(_dkd, tasks=("classification", "tokens")),
    # KD to the weighted mean of several teachers
    "multi_teacher": LogitLoss(_multi_teacher, tasks=("classification", "tokens"), many=True),
    "mse": LogitLoss(_mse, tasks=("regression", "multilabel")),  # MSE to the teacher's logits (regression: its
    # prediction)
    "binary_kd": LogitLoss(_binary_kd, tasks=("multilabel",)),  # per label: T^2 KL of the softened sigmoids
}


def resolve_logit_loss(name: str, task: str, teachers: int) -> str:
    """The table entry that ``distill.logit_loss`` means for this task and number of teachers:
    ``hinton`` is the task kind's own (MSE for regression, per-label KD for multilabel) and the multi-teacher
    average for several teachers."""
    asked, kind = name, task_kind(task)
    if name == "hinton" and kind.hinton != "hinton":
        name = kind.hinton
    elif name == "hinton" and teachers > 1:
        name = "multi_teacher"
    entry = LOGIT_LOSSES[name]
    if task not in entry.tasks:
        raise KdflowError(f"distill.logit_loss {name} is for {' and '.join(entry.tasks)}, and this data is {task}; "
                          "use hinton (soft targets for classification, per-label soft targets for multilabel, MSE "
                          "to the teacher for regression)")
    if teachers > 1 and not entry.many:
        if asked == "hinton":  # regression, multilabel: their own loss to one teacher
            raise KdflowError(f"distill.extra_teachers averages softmax targets over classes, and {task} distils "
                              f"one teacher ({name}); drop distill.extra_teachers")
        raise KdflowError(f"distill.logit_loss {name} distils one teacher's targets; drop distill.extra_teachers, "
                          "or use hinton (the weighted mean of every teacher's soft targets)")
    return name


class Distiller:
    """Loss of one batch: the logit loss (an entry of :data:`LOGIT_LOSSES`) mixed with the hard-label
    loss, ``alpha · soft + (1 − alpha) · hard``, plus the weighted intermediate terms of the layer
    map. Every term is returned by name."""

    def __init__(self, teacher: Optional[nn.Module], dc: DistillConfig, task: str,
                 pairs: Optional[list[LayerPair]] = None):
        self.teacher, self.mode, self.alpha, self.task = teacher, dc.mode, dc.alpha, task
        self.dc, self.pairs = dc, pairs or []
        self.teacher_weights = [dc.teacher_weight] + [e.weight for e in dc.extra_teachers] \
            if dc.extra_teachers else None
        self.loss = LOGIT_LOSSES[resolve_logit_loss(dc.logit_loss, task, 1 + len(dc.extra_teachers))] \
            if dc.alpha > 0 else None
        self.targets: Optional[torch.Tensor] = None
        self.extra_targets: list[torch.Tensor] = []  # further teachers' logits (offline, multi-teacher)
        self.teacher_calls = 0  # examples the teacher ran on inside the training loop
        self.refreshes = 0      # times the targets were (re)set: 1 offline, every k epochs in guide
        if teacher is not None and self.mode != "guide":
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
        if not self.pairs:
            logits = student(**batch["inputs"]).logits
            return self.logit_terms(logits, self.teacher_logits(batch, logits.device), batch)
        out, s_feats = student(**batch["inputs"], kd_features=True)
        logits = out.logits
        device = logits.device
        self.teacher.eval()
        with torch.no_grad():  # the teacher runs on each batch for its layers (states are not cached)
            t_out, t_feats = extract(self.teacher, {k: v.to(device) for k, v in batch["teacher_inputs"].items()},
                                     self.pairs, "teacher")
        self.teacher_calls += len(batch["index"])
        t_logits = t_out.logits.float() if self.mode == "online" else self.teacher_logits(batch, device)
        terms = self.logit_terms(logits, t_logits, batch)
        total = terms["loss"]
        for p in self.pairs:
            value = layer_term(p, s_feats[p.name], t_feats[p.name].float(), batch["inputs"].get("attention_mask"))
            terms[f"loss_{p.name}"] = value
            total = total + p.weight * value
        terms["loss"] = total
        return terms

    def logit_terms(self, logits: torch.Tensor, teacher: Optional[torch.Tensor], batch: dict) -> dict:
        """The logit loss mixed with the hard-label loss: ``alpha · soft + (1 − alpha) · hard``."""
        labels, kind = batch["labels"].to(logits.device), task_kind(self.task)
        idx = batch["index"].cpu()
        teachers = [] if teacher is None else [teacher, *(t[idx].to(logits.device) for t in self.extra_targets)]
        if kind.per_word:  # tags: the real words are the rows (padding positions dropped)
            logits, labels, *teachers = words_of(logits, labels, *teachers)
        hard = HARD_LOSSES[kind.hard_loss](logits, labels)
        if teacher is None:
            return {"loss": hard, "loss_hard": hard}
        # a teacher answer dropped as unusable (kdflow.models.remote) is NaN: its example has no soft term
        known = torch.isfinite(teachers[0]).reshape(len(teachers[0]), -1).all(-1)
        if not known.all():
            if not known.any():
                return {"loss": (1.0 - self.alpha) * hard, "loss_kd": hard.new_zeros(()), "loss_hard": hard}
            logits, labels, teachers = logits[known], labels[known], [t[known] for t in teachers]
        extra = self.loss.fn(logits, teachers, labels, self.dc, self.teacher_weights)
        soft = extra.pop("soft") * known.float().mean()
        return {"loss": self.alpha * soft + (1.0 - self.alpha) * hard, "loss_kd": soft, "loss_hard": hard, **extra}


def layer_term(p: LayerPair, s: torch.Tensor, t: torch.Tensor, s_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The intermediate loss of one layer pair from the two sides' features (see :func:`extract`)."""
    if p.kind == "attention":
        if s.shape[-1] != t.shape[-1]:
            raise KdflowError(f"Attention maps of {p.name} cover {s.shape[-1]} and {t.shape[-1]} tokens; "
                              "student and teacher must tokenize alike to match attention")
        return attention_kl(s, t, s_mask)
    if p.kind == "pkd":
        return pkd_loss(s, t)
    if p.kind == "at":
        if s.dim() != t.dim():
            raise KdflowError(f"{p.name} pairs a CNN map with a Transformer block's tokens; attention transfer "
                              "compares stages with stages or blocks with blocks")
        if s.dim() == 3 and s.shape[1] != t.shape[1]:
            raise KdflowError(f"Block outputs of {p.name} cover {s.shape[1]} and {t.shape[1]} tokens; attention "
                              "transfer needs student and teacher to tokenize alike")
        return attention_transfer(s, t, s_mask if s.dim() == 3 else None)
    if s.dim() == 4 and t.dim() == 4:
        s, t = common_grid(s, t)
    s, t = as_tokens(s), as_tokens(t)
    if s.shape[1] != t.shape[1] and s_mask is not None:
        raise KdflowError(f"Layer outputs of {p.name} have {s.shape[1]} and {t.shape[1]} tokens; student "
                          "and teacher must tokenize alike to match hidden states")
    s, t = match_positions(s, t)
    mask = s_mask if s_mask is not None and s_mask.shape[1] == s.shape[1] else None
    return (hidden_mse if p.kind == "hidden" else cosine_hidden_loss)(s, t, mask)
