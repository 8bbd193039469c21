"""Heads that change what a Hugging Face encoder reads out: one output per *word* for token tagging
(:class:`WordTagger`), and the mean of the last hidden states for sentence tasks (:func:`set_pooling`).

A tagger's sub-token logits ``[B, L, C]`` become word logits ``[B, W, C]``: each word's is the mean over its
sub-tokens that ``word_ids`` names (the featurizer names the first only, or all of them; see
:class:`kdflow.data.features.WordsFeaturizer`), zero at positions past the sentence. Word outputs make every
tokenizer agree: a teacher and a student that split words differently still compare word by word.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import KdflowError
from .base import mean_over_tokens


def words_from(logits: torch.Tensor, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L, C]`` sub-token logits -> ``[B, W, C]`` word logits (``W = word_mask.shape[1]``): the mean over
    the sub-tokens whose ``word_ids`` is the word's number (-1: none); 0 where a word has no sub-token."""
    slots = torch.ones_like(word_mask).cumsum(1) - 1  # [B, W]: 0 .. W-1 (shape-free, so ONNX keeps W dynamic)
    member = (word_ids.unsqueeze(-1) == slots.unsqueeze(1)).to(logits.dtype)  # [B, L, W]
    sums = member.transpose(1, 2) @ logits
    return sums / member.sum(1).clamp(min=1.0).unsqueeze(-1)


class WordTagger(nn.Module):
    """A token-classification model read out per word: ``forward(**inputs, word_ids, word_mask)`` returns the
    model's output with ``logits`` ``[B, W, C]``. Everything else (``config``, ``save_pretrained``, its
    blocks) is the wrapped model's, so a saved tagger is a plain ``...ForTokenClassification`` folder."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, word_ids=None, word_mask=None, **inputs):
        out = self.model(**inputs)
        if word_ids is None or word_mask is None:
            raise KdflowError("A word tagger reads word_ids and word_mask beside the tokens; feed it batches of "
                              "kdflow's word featurizer (data.task: tokens)")
        out["logits"] = words_from(out["logits"], word_ids, word_mask)
        return out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


class MeanPooler(nn.Module):
    """Stands in for a BERT-like model's pooler: the mean of the last hidden states over real tokens (the
    attention mask reaches it through :func:`_hand_mask`, a hook on the base model)."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        return mean_over_tokens(hidden, mask if mask is not None and mask.shape[:2] == hidden.shape[:2] else None)


def _hand_mask(module: nn.Module, args, kwargs) -> None:
    # the hooked module passes itself: a deep copy of the model hands its mask to its own pooler
    module.pooler.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)


def set_pooling(model: nn.Module, pooling: "str | None") -> nn.Module:
    """Make a BERT-like sequence classifier read the mean of its last hidden states (``mean``) or keep its own
    pooler (``cls``/None); recorded in its config (``kdflow_pooling``), so the saved model reloads alike."""
    config = getattr(model, "config", None)
    pooling = pooling or getattr(config, "kdflow_pooling", None)
    if pooling in (None, "cls"):
        return model
    base = getattr(model, "base_model", None)
    if base is None or getattr(base, "pooler", None) is None:
        raise KdflowError(f"pooling: mean replaces a BERT-like model's pooler, and {type(model).__name__} has "
                          "none; drop pooling for this model")
    if not isinstance(base.pooler, MeanPooler):
        base.pooler = MeanPooler()
        base.register_forward_pre_hook(_hand_mask, with_kwargs=True)
    config.kdflow_pooling = "mean"
    return model


__all__ = ["words_from", "WordTagger", "MeanPooler", "set_pooling"]
