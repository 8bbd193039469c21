"""Which student layer learns from which teacher layer, and how to read the layers.

A *layer map* is a list of :class:`LayerPair` ``(student, teacher, kind, weight)``.
Layers are 0-based indices of Transformer blocks (``hidden_states[i + 1]`` and
``attentions[i]`` of a Hugging Face encoder) or, for any other model (CNNs
included), dotted module paths read through forward hooks.

Named maps for an ``n_s``-layer student and an ``n_t``-layer teacher:

* ``last:k`` (default ``last:3``): the teacher's last ``k`` blocks, paired with the
  student's last ``min(k, n_s)`` blocks (with fewer student blocks, the teacher's
  last-``k`` set is thinned evenly, always keeping its final block);
* ``uniform``: student block ``i`` ↔ teacher block ``round(i·(n_t−1)/(n_s−1))``
  (first to first, last to last);
* ``skip``: PKD-skip: student block ``i`` ↔ teacher block ``(i+1)·n_t/n_s − 1``;
* ``auto:k``: the ``k`` teacher blocks ranked highest by :mod:`kdflow.distillation.critical`,
  paired like ``last:k``.

Kinds: ``hidden`` (MSE through a learned projection; for CNN maps FitNets' hint
through a learned 1x1 projection), ``cosine``, ``pkd`` ([CLS] state), ``attention``
(KL of attention distributions; Transformer blocks only), ``at`` (attention transfer,
Zagoruyko & Komodakis 2017: CNN stages, or any block's output).

For a CNN (a model whose config lists ``kdflow_stages``, :mod:`kdflow.models.vision`)
the blocks are its stages, read through forward hooks: ``last:3`` pairs the
teacher's last 3 stages with the student's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..errors import KdflowError

KINDS = ("hidden", "attention", "pkd", "cosine", "at")
Layer = Union[int, str]


@dataclass(frozen=True)
class LayerPair:
    student: Layer
    teacher: Layer
    kind: str = "hidden"
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.kind}_s{self.student}_t{self.teacher}"


def _thin(layers: Sequence[int], n: int) -> list[int]:
    """``n`` of ``layers`` evenly spread, the last one always kept."""
    if n >= len(layers):
        return list(layers)
    step = len(layers) / n
    return [layers[int(round(step * (i + 1))) - 1] for i in range(n)]


def pair_layers(teacher_layers: Sequence[int], n_student: int) -> list[tuple[int, int]]:
    """The chosen teacher blocks (ascending) paired with the student's last blocks."""
    t = _thin(sorted(teacher_layers), n_student)
    return list(zip(range(n_student - len(t), n_student), t))


def resolve(spec: "str | list", n_student: int, n_teacher: int, kinds: dict[str, float],
            ranking: Optional[Sequence[int]] = None) -> list[LayerPair]:
    """A layer map from a name (``last:k``, ``uniform``, ``skip``, ``auto:k``) or explicit entries.

    ``kinds`` gives the kinds (and their weights) each named pair gets; ``ranking``
    (teacher blocks, most critical first) is needed by ``auto:k``. Explicit entries
    are dicts ``{student, teacher, kind, weight}`` and keep their own kind and weight.
    """
    if isinstance(spec, list):
        out = []
        for i, e in enumerate(spec):
            e = dict(e) if isinstance(e, dict) else dict(zip(("student", "teacher", "kind", "weight"), e))
            kind = e.get("kind", "hidden")
            if kind not in KINDS:
                raise KdflowError(f"distill.layers entry {i}: kind '{kind}' is not one of {', '.join(KINDS)}")
            for side, n in (("student", n_student), ("teacher", n_teacher)):
                v = e.get(side)
                if isinstance(v, int) and not 0 <= v < n:
                    raise KdflowError(f"distill.layers entry {i}: {side} layer {v} does not exist "
                                      f"(the {side} has blocks 0..{n - 1})")
                if v is None:
                    raise KdflowError(f"distill.layers entry {i} needs '{side}' (a block index or a module path)")
            out.append(LayerPair(e["student"], e["teacher"], kind, float(e.get("weight", 1.0))))
        return out
    m = re.fullmatch(r"(last|auto):(\d+)|uniform|skip", str(spec))
    if not m:
        raise KdflowError(f"distill.layers '{spec}' is not a layer map; use last:K, auto:K, uniform, skip "
                          "or a list of {student, teacher, kind, weight}")
    if m.group(1):
        k = int(m.group(2))
        if not 1 <= k <= n_teacher:
            raise KdflowError(f"distill.layers {spec}: k must be between 1 and the teacher's {n_teacher} blocks")
        if m.group(1) == "last":
            chosen = list(range(n_teacher - k, n_teacher))
        else:
            if ranking is None:
                raise KdflowError("distill.layers auto:K needs the teacher's layer ranking (kdflow layers)")
            chosen = list(ranking)[:k]
        pairs = pair_layers(chosen, n_student)
    elif spec == "uniform":
        pairs = [(i, int(round(i * (n_teacher - 1) / max(1, n_student - 1)))) for i in range(n_student)]
        if n_student == 1:
            pairs = [(0, n_teacher - 1)]
    else:
        pairs = [(i, int(round((i + 1) * n_teacher / n_student)) - 1) for i in range(n_student)]
    return [LayerPair(s, t, kind, w) for s, t in pairs for kind, w in kinds.items() if w > 0]


def resolve_for(layers: "str | list", student: nn.Module, teacher: nn.Module, kinds: dict[str, float],
                ranking: Optional[Sequence[int]] = None) -> list[LayerPair]:
    """:func:`resolve` for ``distill.layers`` as configured (a name, or entries as dicts or config
    objects) between two models: block counts are read from the models, except on a side that an
    explicit map addresses only by module path (any number of blocks is fine there)."""
    if isinstance(layers, str):
        return resolve(layers, num_blocks(student), num_blocks(teacher), kinds, ranking)
    spec = [e.model_dump() if hasattr(e, "model_dump") else dict(e) for e in layers]
    n_s = num_blocks(student) if any(isinstance(e.get("student"), int) for e in spec) else 10 ** 6
    n_t = num_blocks(teacher) if any(isinstance(e.get("teacher"), int) for e in spec) else 10 ** 6
    return resolve(spec, n_s, n_t, kinds, ranking)


class Taps:
    """Reads outputs of modules by dotted path with forward hooks (for models that do not
    return hidden states, e.g. CNNs). Use as a context manager around the forward pass."""

    def __init__(self, model: nn.Module, paths: Sequence[str]):
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            near = [n for n in modules if n and n.split(".")[-1] == missing[0].split(".")[-1]][:3]
            raise KdflowError(f"{type(model).__name__} has no module '{missing[0]}'"
                              + (f"; similar: {', '.join(near)}" if near else "; list them with model.named_modules()"))
        self.model, self.paths, self.outputs, self._handles = model, list(paths), {}, []
        self._modules = {p: modules[p] for p in paths}

    def __enter__(self) -> "Taps":
        self.outputs = {}
        for p, mod in self._modules.items():
            def hook(_m, _inp, out, p=p):
                self.outputs[p] = out[0] if isinstance(out, (tuple, list)) else out
            self._handles.append(mod.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[B, L, D]`` stays; a CNN map ``[B, C, H, W]`` becomes ``[B, H·W, C]``; ``[B, D]`` becomes ``[B, 1, D]``."""
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    if x.dim() == 2:
        return x[:, None]
    return x


def match_length(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Pool the student's positions to the teacher's count when they differ (e.g. CNN maps)."""
    if s.shape[1] == t.shape[1]:
        return s
    side_s, side_t = int(round(s.shape[1] ** 0.5)), int(round(t.shape[1] ** 0.5))
    if side_s ** 2 == s.shape[1] and side_t ** 2 == t.shape[1]:
        grid = s.transpose(1, 2).reshape(s.shape[0], s.shape[2], side_s, side_s)
        return nn.functional.adaptive_avg_pool2d(grid, side_t).flatten(2).transpose(1, 2)
    raise KdflowError(f"Matched layers have {s.shape[1]} and {t.shape[1]} positions; pair layers of equal length")


def match_positions(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two square grids of positions ``[B, side², D]`` average-pooled to the smaller side (a CNN student's
    4x4 map against a teacher's 7x7 compares 4x4 with 4x4); equal counts are returned as they are."""
    if s.shape[1] == t.shape[1]:
        return s, t
    return (match_length(s, t), t) if s.shape[1] > t.shape[1] else (s, match_length(t, s))


def common_grid(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two CNN maps ``[B, C, H, W]`` average-pooled to the smaller height and the smaller width (square or
    not); maps of one size are returned as they are."""
    size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
    pool = nn.functional.adaptive_avg_pool2d
    return (s if tuple(s.shape[-2:]) == size else pool(s, size)), (t if tuple(t.shape[-2:]) == size else pool(t, size))


def stage_paths(model: nn.Module) -> list[str]:
    """The module paths of a CNN's stages (``config.kdflow_stages``, set by the vision kind); [] otherwise."""
    return list(getattr(getattr(model, "config", None), "kdflow_stages", None) or [])


def num_blocks(model: nn.Module) -> int:
    if stage_paths(model):
        return len(stage_paths(model))
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None)  # a Hugging Face config
    if n is None:
        n = getattr(cfg, "num_layers", None)  # kdflow's encoder
    if n is None:
        n = getattr(model, "num_layers", None)
    if n is None:
        raise KdflowError(f"Cannot tell how many blocks {type(model).__name__} has; give distill.layers as "
                          "explicit module paths")
    return int(n)


__all__ = ["LayerPair", "KINDS", "resolve", "pair_layers", "Taps", "as_tokens", "match_length", "match_positions",
           "common_grid",
           "stage_paths", "num_blocks"]
