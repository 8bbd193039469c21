"""The config sections ``distill``, ``train`` / ``teach`` and ``run``, and ``Config``, which holds them with
``model`` (:mod:`~kdflow.config.specs`), ``data`` (:mod:`~kdflow.config.data_section`), ``active`` and ``frontier``
(:mod:`~kdflow.config.commands`)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..metrics import TASK_METRICS
from .base import Strict
from .checks import dump_yaml
from .commands import ActiveConfig, FrontierConfig
from .data_section import DataConfig
from .glue import GLUE_TASKS
from .specs import ModelConfig

# the names of kdflow.distillation.distiller.LOGIT_LOSSES, in its order (tests/test_losses.py: the same)
LOGIT_LOSS_NAMES = ("hinton", "dkd", "multi_teacher", "mse", "binary_kd")




class LayerEntry(Strict):
    """One explicit pair: a block index (0-based) or a module path on each side."""

    student: "int | str"
    teacher: "int | str"
    kind: Literal["hidden", "attention", "pkd", "cosine", "at"] = "hidden"
    weight: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _attention_needs_blocks(self) -> "LayerEntry":
        if self.kind == "attention" and (isinstance(self.student, str) or isinstance(self.teacher, str)):
            raise ValueError("kind attention pairs blocks by index (attention maps come from the encoder), "
                             "not module paths")
        return self


class ExtraTeacher(Strict):
    name: str
    weight: float = Field(1.0, ge=0.0)


class DistillConfig(Strict):
    """Hinton distillation: ``alpha * KD(T) + (1 - alpha) * CE``; MSE for regression.

    ``offline``: teacher outputs computed once and cached on disk.
    ``online``: teacher forward on every batch.
    ``guide``: the teacher keeps training; every ``guide_every`` epochs its
    current soft labels become the student's targets.
    """

    mode: Literal["offline", "online", "guide"] = "offline"
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    guide_every: int = Field(1, ge=1)
    cache_dir: Optional[str] = None
    # logit loss, by name in kdflow.distillation.distiller.LOGIT_LOSSES: hinton (KD; several teachers' soft targets averaged;
    # MSE to the teacher for regression), dkd (Decoupled KD, Zhao et al. 2022), multi_teacher, mse
    logit_loss: str = "hinton"
    dkd_alpha: float = Field(1.0, ge=0.0)
    dkd_beta: float = Field(8.0, ge=0.0)
    # multi-teacher: further fine-tuned teachers (saved folders) whose soft targets are averaged in
    extra_teachers: list[ExtraTeacher] = Field(default_factory=list)
    teacher_weight: float = Field(1.0, ge=0.0)
    # critical-layer (intermediate) distillation; off unless intermediate: true
    intermediate: bool = False
    layers: Any = "last:3"
    layer_losses: dict[Literal["hidden", "attention", "pkd", "cosine", "at"], float] = Field(
        default_factory=lambda: {"hidden": 1.0, "attention": 1.0})
    layer_score: Literal["drop", "probe"] = "drop"
    layer_score_examples: int = Field(1000, ge=20)

    @field_validator("logit_loss")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        if v not in LOGIT_LOSS_NAMES:  # the table lives beside the losses (torch); its names equal these (a test)
            close = difflib.get_close_matches(v, list(LOGIT_LOSS_NAMES), n=1, cutoff=0.5)
            raise ValueError(f"choose one of {', '.join(LOGIT_LOSS_NAMES)}" + (f" (did you mean {close[0]}?)"
                                                                               if close else ""))
        return v

    @field_validator("layers")
    @classmethod
    def _layer_map(cls, v):
        import re
        if isinstance(v, str):
            if not re.fullmatch(r"(last|auto):[1-9]\d*|uniform|skip", v):
                raise ValueError(f"'{v}' is not a layer map; use last:K, auto:K, uniform, skip or a list of "
                                 "{student, teacher, kind, weight}")
            return v
        if isinstance(v, list):
            return [LayerEntry.model_validate(e) if not isinstance(e, LayerEntry) else e for e in v]
        raise ValueError("give a layer map name (last:3, auto:3, uniform, skip) or a list of "
                         "{student, teacher, kind, weight}")

    @field_validator("layer_losses")
    @classmethod
    def _weights(cls, v):
        bad = {k: w for k, w in v.items() if w < 0}
        if bad:
            raise ValueError(f"layer loss weights must be >= 0, got {bad}")
        return v


class TrainConfig(Strict):
    """How one model trains. ``lr: null`` (the default) = auto: 1e-4 for a student that starts from
    pretrained blocks (copied from the teacher, or a named model), 5e-5 for a pretrained teacher,
    1e-3 for a model whose blocks start random (:func:`learning_rate`)."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    lr: Optional[float] = Field(None, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    max_grad_norm: Optional[float] = Field(1.0, gt=0.0)
    # 5, not 3: a student with the teacher's blocks and head plateaus after 2 epochs and climbs again as the
    # rate decays (CLINC150 Small: best epoch 2, then 8; patience 3 stopped at 5, 1.2 points short on test)
    patience: Optional[int] = Field(5, ge=1)
    # classification: accuracy, macro_f1, f1 (binary: of label 1), mcc; regression: pearson, spearman, neg_mse
    metric: str = "accuracy"  # one of the task kind's metrics (kdflow.tasks; checked with the data section)
    seed: int = Field(42, ge=0, lt=2**32)  # numpy's seeds: 0 .. 2**32 - 1
    deterministic: bool = False
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


def _default_teach() -> TrainConfig:
    return TrainConfig(epochs=10, batch_size=32)


AUTO_LR = {("student", True): 1e-4, ("teacher", True): 5e-5, ("student", False): 1e-3, ("teacher", False): 1e-3}


def learning_rate(cfg: TrainConfig, role: str, pretrained: bool) -> float:
    """``cfg.lr``, or the auto rate for a ``role`` (teacher or student) whose blocks start
    ``pretrained`` or random."""
    return cfg.lr if cfg.lr is not None else AUTO_LR[("teacher" if role == "teacher" else "student", pretrained)]




class RunConfig(Strict):
    name: str = "kdflow"
    output_dir: str = "runs"
    quiet: bool = False

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v.startswith("."):
            raise ValueError(f"run.name {v!r} must be a plain folder name (no slashes, not starting with '.')")
        return v


class Config(Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teach: TrainConfig = Field(default_factory=_default_teach)
    active: ActiveConfig = Field(default_factory=ActiveConfig)
    frontier: FrontierConfig = Field(default_factory=FrontierConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _task_metric(self) -> "Config":
        glue = GLUE_TASKS.get(self.data.glue) if self.data.glue else None
        for section in ("train", "teach"):
            part = getattr(self, section)
            if "metric" not in part.model_fields_set:  # the default follows the task (GLUE: its own metric)
                default = glue.metrics[0] if glue else TASK_METRICS[self.data.task][0]
                if part.metric != default:
                    part.metric = default
                continue
            if part.metric not in TASK_METRICS[self.data.task]:
                raise ValueError(f"{section}.metric {part.metric!r} is not a {self.data.task} metric; use one of "
                                 f"{', '.join(TASK_METRICS[self.data.task])}")
        return self

    @model_validator(mode="after")
    def _augmented_inputs_are_never_cached(self) -> "Config":
        """Augmented images change every epoch: a teacher output cached once (offline) or pushed every k
        epochs (guide) would describe another image than the student sees. ``online`` is then the default."""
        if not self.data.augment:
            return self
        if "mode" not in self.distill.model_fields_set:
            if self.distill.mode != "online":
                self.distill.mode = "online"
            return self
        if self.distill.mode != "online":
            raise ValueError(f"distill.mode {self.distill.mode} gives the student teacher outputs computed once per "
                             "image, but data.augment changes the images every epoch, so they would not match; "
                             "use distill.mode: online (the default with augment) or drop data.augment")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    def to_yaml(self) -> str:
        return dump_yaml(self.model_dump(mode="json"))
