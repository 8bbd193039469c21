"""Vocabulary pruning: keep only the tokens the task's training text uses.

In a small text student the embedding matrix dominates (30,522 × 128 = 3.9M of a
4.4M-parameter BERT student). Rows of tokens that never occur in training were
never trained either; dropping them loses nothing the student learnt. The
tokenizer is rebuilt with the kept WordPiece vocabulary in the same relative
order, and the embedding rows are sliced to match, so the pruned pair still
saves with ``save_pretrained`` and exports to ONNX. A word whose pieces were
pruned becomes ``[UNK]``.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional

import torch
from torch import nn

from ..errors import KdflowError

# prune_vocab auto keeps the vocabulary whole above this share of unseen validation word pieces. Measured
# (BENCHMARKS, GLUE): with 2,250 training texts, 4-9 % of a GLUE task's validation pieces are unseen, and
# pruning cost up to 8 points of the task metric; CLINC150 Small (7,500 texts) misses 2.7 % and still prunes.
PRUNE_AUTO_MAX_UNSEEN = 0.03


def token_rows(tokenizer, texts: Iterable[str], pairs: Optional[Iterable[str]] = None,
               max_length: Optional[int] = None) -> list[list[int]]:
    """The ids each text (or pair) tokenizes to; with ``max_length``, only the tokens the model will
    read (each text truncated as the featurizer truncates it)."""
    texts = list(texts)
    if not texts:
        return []
    return tokenizer(texts, list(pairs) if pairs is not None else None, truncation=max_length is not None,
                     max_length=max_length)["input_ids"]


def used_token_ids(tokenizer, texts: Iterable[str], pairs: Optional[Iterable[str]] = None,
                   max_length: Optional[int] = None) -> list[int]:
    """Sorted ids the texts tokenize to (:func:`token_rows`), plus every special token."""
    used = {i for row in token_rows(tokenizer, texts, pairs, max_length) for i in row}
    used.update(tokenizer.all_special_ids)
    return sorted(used)


def unseen_share(tokenizer, kept: Iterable[int], texts: Iterable[str], pairs: Optional[Iterable[str]] = None,
                 max_length: Optional[int] = None) -> float:
    """The share of the word pieces ``texts`` tokenize to (as the model reads them) whose ids are not in
    ``kept``: what a vocabulary pruned to ``kept`` would turn into ``[UNK]``."""
    kept, total, missed = set(kept), 0, 0
    for row in token_rows(tokenizer, texts, pairs, max_length):
        total += len(row)
        missed += sum(i not in kept for i in row)
    return missed / max(total, 1)


def tokenizer_unprunable(tokenizer) -> Optional[str]:
    """None when ``tokenizer``'s vocabulary can be pruned, else why not (in words)."""
    if tokenizer is None:
        return "the student reads no text through a tokenizer"
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        return "the student's tokenizer is not a fast (Rust) tokenizer"
    kind = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]
    if kind != "WordPiece":
        return f"the student's tokenizer is {kind}, and pruning supports WordPiece (the BERT family)"
    return None


def prunable(model: nn.Module, tokenizer) -> Optional[str]:
    """None when ``model``'s vocabulary can be pruned, else why not (in words)."""
    why = tokenizer_unprunable(tokenizer)
    if why:
        return why
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else getattr(model, "embed", None)
    if not isinstance(emb, nn.Embedding):
        return "the student does not read token ids through an nn.Embedding"
    return None


def prune_tokenizer(tokenizer, kept: list[int]):
    """A fast WordPiece tokenizer over ``kept`` (old ids, ascending); ids are renumbered 0..len-1."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise KdflowError("Vocabulary pruning needs a fast (Rust) tokenizer; this model's tokenizer is not one")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece":
        raise KdflowError(f"Vocabulary pruning supports WordPiece tokenizers (BERT family), not "
                          f"{spec['model']['type']}")
    new_id = {old: new for new, old in enumerate(kept)}
    old_vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = {tok: new_id[i] for tok, i in sorted(old_vocab.items(), key=lambda kv: kv[1])
                              if i in new_id}
    for added in spec.get("added_tokens") or []:
        added["id"] = new_id[added["id"]]
    post = spec.get("post_processor") or {}
    for entry in (post.get("special_tokens") or {}).values():  # TemplateProcessing
        entry["ids"] = [new_id[i] for i in entry["ids"]]
    for key in ("cls", "sep"):  # BertProcessing
        if key in post:
            post[key][1] = new_id[post[key][1]]
    backend = Tokenizer.from_str(json.dumps(spec))
    special = {k: getattr(tokenizer, k) for k in ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token")
               if getattr(tokenizer, k, None)}
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tokenizer.model_max_length, **special)


def prune_embeddings(model: nn.Module, kept: list[int]) -> nn.Module:
    """Keep the rows ``kept`` of the input embedding (in place); returns the model."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.embed
    if not isinstance(emb, nn.Embedding):
        raise KdflowError("Vocabulary pruning needs a model that reads token ids through an nn.Embedding")
    small = nn.Embedding(len(kept), emb.embedding_dim, padding_idx=None)
    with torch.no_grad():
        small.weight.copy_(emb.weight[torch.tensor(kept)])
    if hasattr(model, "set_input_embeddings"):
        model.set_input_embeddings(small)
        model.config.vocab_size = len(kept)
        if getattr(model.config, "pad_token_id", None) is not None and model.config.pad_token_id in kept:
            model.config.pad_token_id = kept.index(model.config.pad_token_id)
    else:
        model.embed = small
        model.config.vocab_size = len(kept)
    return model


def prune_vocabulary(model: nn.Module, tokenizer, texts: Iterable[str], pairs: Optional[Iterable[str]] = None,
                     max_length: Optional[int] = None):
    """(pruned model, pruned tokenizer, kept old ids) for a model reading ``tokenizer``'s ids."""
    kept = used_token_ids(tokenizer, texts, pairs, max_length)
    return prune_embeddings(model, kept), prune_tokenizer(tokenizer, kept), kept
