"""Saving and identifying models, whatever their kind: one folder per model (``save_pretrained``
weights as safetensors, the tokenizer, ``kdflow_labels.json``), parameter counts, weight fingerprints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn

LABELS_FILE = "kdflow_labels.json"


def save_model(model: nn.Module, folder: "str | Path", tokenizer=None, label_names=None, task="classification"):
    """``save_pretrained`` (safetensors), tokenizer and the label map, in one folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from .hf import quiet_transformers
    quiet_transformers()
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    (folder / LABELS_FILE).write_text(json.dumps({"task": task, "labels": label_names}, indent=2))


def saved_labels(folder: Path) -> tuple[Optional[list[str]], str]:
    """(label names, task) of a saved model folder (``None`` labels when it has no label file)."""
    meta = json.loads((folder / LABELS_FILE).read_text()) if (folder / LABELS_FILE).is_file() else {}
    return meta.get("labels"), meta.get("task", "classification")


def count_parameters(model: nn.Module) -> int:
    """Its parameters, and the buffers that hold learned weights where the model names them
    (``learned_buffers()``: a DKVB's keys and random projections, fitted or drawn once and then frozen)."""
    extra = getattr(model, "learned_buffers", lambda: [])()
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in extra)


def fingerprint(model: nn.Module, extra: str = "") -> str:
    """A hash of the weights (and ``extra``, e.g. the tokenization settings): the teacher cache key."""
    h = hashlib.sha256(extra.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


__all__ = ["LABELS_FILE", "save_model", "saved_labels", "count_parameters", "fingerprint"]
