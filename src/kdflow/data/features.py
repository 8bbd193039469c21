"""Featurizers: the inputs of some examples -> model keyword arguments.

One protocol for every modality. ``encode(split)`` is deterministic (tokenizing a
text, parsing a sequence, later decoding an image): its rows are cached by example
id, so each example is encoded once whatever subset asks for it. ``collate(rows,
train)`` builds the batch tensors; anything random (image augmentation) belongs
there, applied only when ``train`` is true, so a cached row is never a frozen
augmentation. ``augments`` marks a featurizer that does that: teacher outputs cached
once would not match what its student sees, so offline targets must be refused for it
(no modality augments yet; the image modality will, and its refusal comes with it).

A new modality is one class here (its ``field``: the input it reads) plus an entry in
:data:`FEATURIZERS`; the data's modality follows (:func:`modality_of`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ..errors import KdflowError
from .splits import Split


class Featurizer(Protocol):
    augments: bool
    max_length: int

    def encode(self, split: Split) -> list[dict]:
        """Encoded rows of ``split`` in order (deterministic; cached by example id)."""

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        """A batch of model keyword arguments from encoded rows."""


class CachedFeaturizer:
    """The id cache every featurizer shares: ``_encode`` runs once per example id."""

    augments = False
    field = ""  # the input field this featurizer reads

    def __init__(self, max_length: int = 128):
        self.max_length = max_length
        self._rows: dict[str, dict] = {}  # example id -> encoded row; ids are content-derived

    def encode(self, split: Split) -> list[dict]:
        missing = [i for i, key in enumerate(split.ids) if key not in self._rows]
        if missing:
            if self.field not in split.inputs:
                raise KdflowError(f"Split '{split.name}' has inputs {list(split.inputs)}; this model reads "
                                  f"{self.field}")
            for i, row in zip(missing, self._encode(split, missing)):
                self._rows[split.ids[i]] = row
        return [self._rows[key] for key in split.ids]

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        raise NotImplementedError


class TextFeaturizer(CachedFeaturizer):
    """Text (and text pairs): tokenized once per example (no padding), padded per batch."""

    field = "text"

    def __init__(self, tokenizer, max_length: int = 128):
        super().__init__(max_length)
        self.tokenizer = tokenizer

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        if self.tokenizer is None:
            raise KdflowError("This model reads text but has no tokenizer; use an hf model, or give an "
                              "encoder a tokenizer through model.teacher.name")
        texts = [split.inputs["text"][i] for i in positions]
        pair = [split.inputs["text_pair"][i] for i in positions] if "text_pair" in split.inputs else None
        enc = self.tokenizer(texts, pair, truncation=True, max_length=self.max_length)
        names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in enc]
        return [{n: enc[n][j] for n in names} for j in range(len(positions))]

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id or 0
        length = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for name in rows[0]:
            fill = pad if name == "input_ids" else 0
            t = torch.full((len(rows), length), fill, dtype=torch.long)
            for i, r in enumerate(rows):
                t[i, : len(r[name])] = torch.tensor(r[name], dtype=torch.long)
            batch[name] = t
        return batch


class ValuesFeaturizer(CachedFeaturizer):
    """Numeric sequences (``inputs["values"]``, each ``[L]`` or ``[L, D]``): padded into
    ``[B, L, D]`` float tensors with an attention mask. Reads no tokens (``tokenizer`` is ignored)."""

    field = "values"

    def __init__(self, tokenizer=None, max_length: int = 128):
        super().__init__(max_length)

    def _encode(self, split: Split, positions: list[int]) -> list[dict]:
        return [{"values": np.asarray(split.inputs["values"][i], dtype=np.float32)} for i in positions]

    def collate(self, rows: list[dict], train: bool = False) -> dict[str, torch.Tensor]:
        length = min(self.max_length, max(len(r["values"]) for r in rows))
        first = rows[0]["values"]
        dim = first.shape[1] if first.ndim == 2 else 1
        if any((r["values"].shape[1] if r["values"].ndim == 2 else 1) != dim for r in rows):
            raise KdflowError(f"Numeric sequences mix vector sizes (first is {dim}); every step of every "
                              "example must have the same number of values")
        out = torch.zeros(len(rows), length, dim)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            v = torch.from_numpy(r["values"][:length]).reshape(-1, dim)
            out[i, : len(v)] = v
            mask[i, : len(v)] = 1
        return {"values": out, "attention_mask": mask}


# modality -> featurizer class, constructed as cls(tokenizer, max_length); the first whose field the data has wins
FEATURIZERS: dict[str, type[CachedFeaturizer]] = {"values": ValuesFeaturizer, "text": TextFeaturizer}


def modality_of(inputs: dict) -> str:
    """The modality of examples with these input fields (``text`` when none matches: its featurizer says so)."""
    return next((m for m, cls in FEATURIZERS.items() if cls.field in inputs), "text")


def make_featurizer(modality: str, tokenizer=None, max_length: int = 128) -> Featurizer:
    """The featurizer of a modality (``TaskData.modality``); ``tokenizer`` is used by text only."""
    return FEATURIZERS[modality](tokenizer, max_length)


__all__ = ["Featurizer", "CachedFeaturizer", "TextFeaturizer", "ValuesFeaturizer", "FEATURIZERS", "modality_of",
           "make_featurizer"]
