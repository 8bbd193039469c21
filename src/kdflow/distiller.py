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

from .errors import KdflowError
from .layers import LayerPair, Taps, as_tokens, match_length
from .losses import (attention_kl, ce_loss, cosine_hidden_loss, dkd_loss, hidden_mse, hinton_loss, kd_loss,
                     multi_teacher_kd, pkd_loss)


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
    layers = [(p, getattr(p, side)) for p in pairs]
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
        elif p.kind != "attention":
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
                feats[p.name] = self.projections[_key(p.name)](feats[p.name].float())
        return out, feats


def feature_widths(student: nn.Module, teacher: nn.Module, pairs: list[LayerPair], batch: dict) -> dict:
    """``{pair.name: (student width, teacher width)}`` of the pairs that compare states, by one probe pass."""
    was = student.training
    student.eval()
    with torch.no_grad():
        _, s = extract(student, batch["inputs"], pairs, "student")
        _, t = extract(teacher, batch["teacher_inputs"], pairs, "teacher")
    student.train(was)
    return {p.name: (s[p.name].shape[-1], t[p.name].shape[-1]) for p in pairs if p.kind != "attention"}


class Distiller:
    """Loss of one batch: the logit loss (Hinton KD or DKD, optionally against several
    teachers' averaged soft targets) mixed with the hard-label loss, plus the weighted
    intermediate terms of the layer map. Every term is returned by name."""

    def __init__(self, teacher: Optional[nn.Module], mode: str, temperature: float, alpha: float, task: str,
                 logit_loss: str = "hinton", dkd_alpha: float = 1.0, dkd_beta: float = 8.0,
                 pairs: Optional[list[LayerPair]] = None, teacher_weights: Optional[list[float]] = None):
        self.teacher, self.mode, self.temperature, self.alpha, self.task = teacher, mode, temperature, alpha, task
        self.logit_loss, self.dkd_alpha, self.dkd_beta = logit_loss, dkd_alpha, dkd_beta
        self.pairs = pairs or []
        self.teacher_weights = teacher_weights
        self.targets: Optional[torch.Tensor] = None
        self.extra_targets: list[torch.Tensor] = []  # further teachers' logits (offline, multi-teacher)
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
        s_mask = batch["inputs"].get("attention_mask")
        total = terms["loss"]
        for p in self.pairs:
            s, t = s_feats[p.name], t_feats[p.name].float()
            if p.kind == "attention":
                if s.shape[-1] != t.shape[-1]:
                    raise KdflowError(f"Attention maps of {p.name} cover {s.shape[-1]} and {t.shape[-1]} tokens; "
                                      "student and teacher must tokenize alike to match attention")
                value = attention_kl(s, t, s_mask)
            elif p.kind == "pkd":
                value = pkd_loss(s, t)
            else:
                if s.shape[1] != t.shape[1] and s_mask is not None:
                    raise KdflowError(f"Layer outputs of {p.name} have {s.shape[1]} and {t.shape[1]} tokens; student "
                                      "and teacher must tokenize alike to match hidden states")
                s = match_length(s, t)
                mask = s_mask if s_mask is not None and s_mask.shape[1] == s.shape[1] else None
                value = (hidden_mse if p.kind == "hidden" else cosine_hidden_loss)(s, t, mask)
            terms[f"loss_{p.name}"] = value
            total = total + p.weight * value
        terms["loss"] = total
        return terms

    def logit_terms(self, logits: torch.Tensor, teacher: Optional[torch.Tensor], batch: dict) -> dict:
        """The logit loss mixed with the hard-label loss: ``alpha · soft + (1 − alpha) · hard``."""
        labels = batch["labels"]
        if teacher is None or self.task == "regression" or (self.logit_loss == "hinton" and not self.extra_targets):
            return hinton_loss(logits, teacher, labels, self.temperature, self.alpha, self.task)
        hard = ce_loss(logits, labels)
        if self.logit_loss == "dkd":
            parts = dkd_loss(logits, teacher, labels, self.temperature, self.dkd_alpha, self.dkd_beta)
            soft = parts["loss"]
            extra = {"loss_tckd": parts["tckd"], "loss_nckd": parts["nckd"]}
        else:
            idx = batch["index"].cpu()
            others = [t[idx].to(logits.device) for t in self.extra_targets]
            soft = multi_teacher_kd(logits, [teacher, *others], self.teacher_weights, self.temperature)
            extra = {"loss_kd_single": kd_loss(logits, teacher, self.temperature).detach()}
        return {"loss": self.alpha * soft + (1 - self.alpha) * hard, "loss_kd": soft, "loss_hard": hard, **extra}
