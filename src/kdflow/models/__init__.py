"""Teachers and students, one module per kind, one entry per kind in :data:`KINDS`.

* :mod:`~kdflow.models.base` — :class:`ModelKind` (what a kind provides), :class:`BuildContext`
* :mod:`~kdflow.models.hf` — ``kind: hf``: Hugging Face classifiers; students of the teacher's family
* :mod:`~kdflow.models.encoder` — ``kind: encoder``: kdflow's own Transformer encoder (text or numeric sequences)
* :mod:`~kdflow.models.vision` — ``kind: vision``: image classifiers (ResNet, MobileNetV2, any Auto image model)
* :mod:`~kdflow.models.dkvb` — ``kind: dkvb``: a Discrete Key-Value Bottleneck student over a frozen encoder
* :mod:`~kdflow.models.llm` — ``kind: llm`` (teachers): a causal LM as a zero/few-shot classifier
* :mod:`~kdflow.models.predictions` — ``kind: predictions`` (teachers): a file of teacher outputs
* :mod:`~kdflow.models.answers` — the on-disk cache of a paid teacher's answers
* :mod:`~kdflow.models.io` — saving, label maps, parameter counts, fingerprints

A new student kind: its spec class in :data:`kdflow.config.MODEL_SPECS`, a module here
whose ``KIND`` fills in :class:`ModelKind`, and an entry in :data:`KINDS`;
``tests/test_model_kinds.py`` then builds, trains, saves and reloads it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..config import ModelSpec
from ..data.features import ImagePreprocess
from ..errors import KdflowError
from ..files import must_be_folder
from . import dkvb, encoder, hf, llm, predictions, vision
from .base import BuildContext, ModelKind, check_fixed_teacher
from .encoder import ENCODER_CONFIG, EncoderConfig, TransformerEncoderClassifier, build_encoder_student
from .hf import (build_hf_student, copied_blocks, default_teacher_layers, has_task_head, init_from_teacher, layer_list,
                 load_hf_classifier, load_tokenizer, project_embeddings, resolve_name)
from .io import (LABELS_FILE, check_source, count_parameters, fingerprint, save_decision, save_model, saved_decision,
                 saved_labels)

KINDS: dict[str, ModelKind] = {"hf": hf.KIND, "encoder": encoder.KIND, "vision": vision.KIND, "dkvb": dkvb.KIND,
                               "llm": llm.KIND, "predictions": predictions.KIND}


def kind(spec: ModelSpec) -> ModelKind:
    """The entry of ``spec.kind``."""
    return KINDS[spec.kind]


def starts_pretrained(spec: ModelSpec, model: nn.Module) -> bool:
    """Do ``model``'s blocks start from pretrained weights (a named hf model, or blocks copied from a teacher)?"""
    return kind(spec).pretrained(spec, model)


def load_saved(folder: "str | Path"):
    """(model, tokenizer or None, label_names, task) from a folder written by :func:`save_model`."""
    folder = must_be_folder(Path(folder), f"Model folder '{folder}'", "give a saved model folder (runs/NAME/student)")
    labels, task = saved_labels(folder)
    found = [name for name, k in KINDS.items() if not k.fixed and k.saved_in(folder)]
    if not found:
        raise KdflowError(f"'{folder}' holds no saved model (no config.json); give a folder written by kdflow "
                          "or save_pretrained")
    if len(found) > 1:
        raise KdflowError(f"'{folder}' holds the files of several model kinds ({', '.join(found)}); save each model "
                          "into a folder of its own")
    model = KINDS[found[0]].load(folder)  # first: a damaged config.json is named as such, not as a tokenizer's
    tokenizer = load_tokenizer(str(folder)) if (folder / "tokenizer_config.json").exists() else \
        ImagePreprocess.from_folder(folder)
    if tokenizer is None and (folder / "preprocessor_config.json").is_file():  # save_pretrained of an image model
        tokenizer = vision.processor_preprocess(str(folder))
    return model, tokenizer, labels, task


def block_list(model: nn.Module) -> nn.ModuleList:
    """The model's list of Transformer blocks (kdflow's encoder, or a BERT-like HF encoder)."""
    if isinstance(getattr(model, "layers", None), nn.ModuleList):
        return model.layers
    return layer_list(model)[1]


__all__ = ["KINDS", "ModelKind", "BuildContext", "check_fixed_teacher", "check_source", "kind", "starts_pretrained",
           "copied_blocks", "load_saved", "block_list", "save_model", "saved_labels", "save_decision",
           "saved_decision", "count_parameters", "fingerprint", "LABELS_FILE", "ENCODER_CONFIG", "EncoderConfig",
           "TransformerEncoderClassifier", "build_encoder_student", "build_hf_student", "default_teacher_layers",
           "has_task_head", "init_from_teacher", "layer_list", "load_hf_classifier", "load_tokenizer",
           "project_embeddings", "resolve_name"]
