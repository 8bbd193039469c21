"""Saving and identifying models, whatever their kind: one folder per model (``save_pretrained``
weights as safetensors, the tokenizer, ``kdflow_labels.json``), parameter counts, weight fingerprints."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..errors import KdflowError, first_line
from ..files import json_type, must_be_folder, read_json
from ..tasks import TASKS

LABELS_FILE = "kdflow_labels.json"
WEIGHTS_FILE = "model.safetensors"
DAMAGED = "the model folder is damaged: save the model again, or copy the folder over again from where it was saved"


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # "name" or "org/name"; anything else is a local path


def check_source(name: str, what: str) -> None:
    """A model named by a folder or a hub id: a local path that does not exist, is a file or is an empty folder
    is one sentence saying so (a hub id is left to the hub, which says whether it could be reached)."""
    path = Path(name).expanduser()
    if path.exists() or not HUB_ID.fullmatch(name):
        must_be_folder(path, f"{what} '{name}'", "give a saved model folder (kdflow teach saves RUN/teacher) or a "
                       "hub id such as org/name")


def quiet_transformers() -> None:
    """transformers' own warnings and progress bars off: kdflow says what matters in its log."""
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def save_model(model: nn.Module, folder: "str | Path", tokenizer=None, label_names=None, task="classification"):
    """``save_pretrained`` (safetensors), tokenizer and the label map, in one folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quiet_transformers()
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    (folder / LABELS_FILE).write_text(json.dumps({"task": task, "labels": label_names}, indent=2))


def save_decision(folder: "str | Path", decision: dict) -> None:
    """Add the decision rule tuned on validation (multilabel: thresholds) to a saved model's label file."""
    path = Path(folder) / LABELS_FILE
    meta = json.loads(path.read_text())
    meta["decision"] = decision
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)


def saved_decision(folder: "str | Path") -> Optional[dict]:
    """The decision rule saved with a model (None: the task's default rule)."""
    path = Path(folder) / LABELS_FILE
    if not path.exists():
        return None
    decision = read_json(path, f"Label file '{path}'", DAMAGED, dict).get("decision")
    if decision is not None and not (isinstance(decision, dict) and isinstance(decision.get("per_label"), list)):
        raise KdflowError(f"Label file '{path}' holds {json_type(decision)} under 'decision', not the thresholds "
                          f"kdflow writes; {DAMAGED}")
    return decision


def saved_labels(folder: Path) -> tuple[Optional[list[str]], str]:
    """(label names, task) of a saved model folder (``None`` labels when it has no label file); a damaged
    label file is an error naming it."""
    path = Path(folder) / LABELS_FILE
    if not path.exists():
        return None, "classification"
    meta = read_json(path, f"Label file '{path}'", DAMAGED, dict)
    labels, task = meta.get("labels"), meta.get("task", "classification")
    if task not in TASKS:
        raise KdflowError(f"Label file '{path}' names task {task!r}, not one of {', '.join(TASKS)}; {DAMAGED}")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(n, str) for n in labels)
                                   and len(set(labels)) == len(labels) > 0):
        raise KdflowError(f"Label file '{path}' holds {json_type(labels)} under 'labels', not a list of distinct "
                          f"label names; {DAMAGED}")
    return labels, task


def read_model_json(folder: "str | Path", name: str) -> dict:
    """A JSON object file of a saved model folder (``config.json``, ``kdflow_*.json``); damaged: one sentence."""
    path = Path(folder) / name
    return read_json(path, f"'{path}'", DAMAGED, dict)


def check_sizes(meta: dict, path: Path, sizes: dict[str, tuple[int, int]]) -> None:
    """Each key of ``sizes`` that ``meta`` holds (not null) is a whole number within its ``(low, high)``: a damaged
    config must not build a model of any size."""
    for key, (low, high) in sizes.items():
        v = meta.get(key)
        if v is not None and not (type(v) is int and low <= v <= high):
            raise KdflowError(f"'{path}' holds {v!r} for '{key}', not a whole number from {low} to {high}; {DAMAGED}")


def load_weights(model: nn.Module, folder: "str | Path") -> nn.Module:
    """``model`` with the weights of ``folder/model.safetensors``; missing, truncated or not matching the
    model (another config): one sentence naming the file."""
    from safetensors.torch import load_file
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise KdflowError(f"'{folder}' has no {WEIGHTS_FILE} (the weights); {DAMAGED}")
    try:
        state = load_file(path)
    except Exception as err:  # safetensors' own error type: a truncated or overwritten file
        raise KdflowError(f"'{path}' cannot be read ({first_line(err)}); {DAMAGED}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise KdflowError(f"'{path}' does not fit the model its config describes ({first_line(err)}); "
                          f"{DAMAGED}") from None
    return model


def count_parameters(model: nn.Module) -> int:
    """Its parameters, and the buffers that hold learned weights where the model names them
    (``learned_buffers()``: a DKVB's keys and random projections, fitted or drawn once and then frozen)."""
    extra = getattr(model, "learned_buffers", lambda: [])()
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in extra)


def fingerprint(model: nn.Module, extra: str = "") -> str:
    """A hash of the weights, of ``extra`` (e.g. the tokenization settings) and of the model's ``identity``
    where it has one (what else decides its outputs: an LLM teacher's prompts): the teacher cache key."""
    h = hashlib.sha256((extra + str(getattr(model, "identity", ""))).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


__all__ = ["LABELS_FILE", "WEIGHTS_FILE", "check_source", "quiet_transformers", "save_model", "saved_labels", "read_model_json", "check_sizes",
           "load_weights", "count_parameters", "fingerprint"]
