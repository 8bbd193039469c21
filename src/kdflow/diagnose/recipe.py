"""The auto settings (``null`` in a config) as a given config resolves them: ``kdflow config`` shows them.

The defaults carry the recipe the benchmarks found best (BENCHMARKS.md, CLINC150): a
student of the teacher's family with half its blocks at its width, initialised from
the teacher (embeddings and evenly spread blocks; a PCA projection of the embeddings
when narrower), its vocabulary pruned to the training text, trained at lr 1e-4 with
batch 32 (1e-3 when its blocks start random). The same rules run in the pipeline
(``models.hf``, ``pipeline.build_student``, ``pipeline.train_settings``); this module
only reads the teacher's config and tokenizer to say what they will pick.
"""

from __future__ import annotations

from typing import Optional

from ..config import Config, HFSpec, learning_rate
from ..errors import KdflowError, first_line


def _teacher_shape(cfg: Config) -> tuple[Optional[dict], str]:
    """(depth, width, intermediate of the hf teacher, or None), and a note on where they came from."""
    spec = cfg.model.teacher
    if spec.kind != "hf" or not spec.name:
        return None, f"the teacher is kind {spec.kind}"
    from transformers import AutoConfig

    from ..models.hf import resolve_name
    try:
        c = AutoConfig.from_pretrained(resolve_name(spec.name), trust_remote_code=spec.trust_remote_code)
    except (KdflowError, OSError, ValueError) as err:
        return None, f"the teacher's config could not be read ({first_line(err)})"
    shape = {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "intermediate": c.intermediate_size}
    return shape, f"teacher {spec.name}: {shape['layers']} blocks, width {shape['hidden']}"


def _student_lines(spec: HFSpec, shape: Optional[dict]) -> tuple[list[tuple[str, str, str]], bool]:
    """Rows (key, value, why) for an hf student built from the teacher, and whether its blocks are copied."""
    from ..models.hf import copies_blocks, default_teacher_layers, student_depth
    rows: list[tuple[str, str, str]] = []
    if shape is None:
        if spec.num_layers is None:
            rows.append(("model.student.num_layers", "auto", "half the teacher's blocks, rounded up"))
        return rows, spec.init_from_teacher is True and spec.hidden_size is None
    depth = spec.num_layers or student_depth(shape["layers"])
    if spec.num_layers is None:
        rows.append(("model.student.num_layers", str(depth), f"half the teacher's {shape['layers']} blocks, "
                                                              "rounded up"))
    width = spec.hidden_size or shape["hidden"]
    inter = spec.intermediate_size or shape["intermediate"]
    copies = spec.init_from_teacher is not False and copies_blocks(
        (width, inter), (shape["hidden"], shape["intermediate"]), spec.init_from_teacher is True)
    if spec.init_from_teacher is None:
        listed = spec.teacher_layers if isinstance(spec.teacher_layers, list) else None
        blocks = "the top blocks of 'kdflow layers'" if spec.teacher_layers == "auto" else \
            f"blocks {', '.join(map(str, listed or default_teacher_layers(shape['layers'], depth)))}"
        how = f"embeddings and teacher {blocks} copied" if copies else \
            "embeddings through a PCA projection (narrower than the teacher), blocks start random" \
            if width < shape["hidden"] else "embeddings copied, blocks start random (another shape than the teacher's)"
        rows.append(("model.student.init_from_teacher", "true", how))
    return rows, copies


def _prune_row(cfg: Config) -> tuple[str, str, str]:
    from ..deploy.prune import PRUNE_AUTO_MAX_UNSEEN, tokenizer_unprunable
    from ..models import kind
    spec = cfg.model.student
    source = spec if spec.kind == "hf" and spec.name else cfg.model.teacher
    if cfg.data.values_column:
        return "model.student.prune_vocab", "false", "the student reads numeric sequences, not text"
    try:
        why = tokenizer_unprunable(kind(source).tokenizer(source))
    except KdflowError as err:
        return "model.student.prune_vocab", "auto", f"its tokenizer could not be read ({first_line(err)})"
    if why:
        return "model.student.prune_vocab", "false", why
    return ("model.student.prune_vocab", "true", "only the tokens of the training text, as far as data.max_length "
            f"{cfg.data.max_length} reads it, keep their embedding rows (kept whole instead when more than "
            f"{PRUNE_AUTO_MAX_UNSEEN:.0%} of the validation split's word pieces never occur in training)")


def auto_settings(cfg: Config) -> tuple[str, list[tuple[str, str, str]]]:
    """(a note on the teacher, rows ``(key, resolved value, why)`` for every auto setting of ``cfg``)."""
    shape, note = _teacher_shape(cfg)
    rows: list[tuple[str, str, str]] = []
    spec = cfg.model.student
    pretrained = bool(spec.name) and spec.kind in ("hf", "vision")
    if spec.kind == "hf" and not spec.name:
        student_rows, pretrained = _student_lines(spec, shape)
        rows += student_rows
    if spec.prune_vocab is None:
        rows.append(_prune_row(cfg))
    from ..models import kind
    own = kind(spec).lr(spec)
    if cfg.train.lr is None:
        lr = own or learning_rate(cfg.train, "student", pretrained)
        rows.append(("train.lr", f"{lr:g}", f"the {spec.kind} kind's rate" if own else
                     "the student's blocks start " + ("pretrained" if pretrained else "random")))
    if cfg.teach.lr is None:
        t_pre = cfg.model.teacher.kind == "hf" or bool(cfg.model.teacher.kind == "vision" and cfg.model.teacher.name)
        rows.append(("teach.lr", f"{learning_rate(cfg.teach, 'teacher', t_pre):g}",
                     "a pretrained teacher" if t_pre else "the teacher's blocks start random"))
    return note, rows


def describe(cfg: Config) -> str:
    """YAML comment lines listing the auto settings as resolved (empty when there are none)."""
    note, rows = auto_settings(cfg)
    if not rows:
        return ""
    width = max(len(f"{k}: {v}") for k, v, _ in rows)
    lines = [f"# auto settings (null above), as this config resolves them ({note}):"]
    lines += [f"#   {f'{k}: {v}'.ljust(width)}  # {why}" for k, v, why in rows]
    return "\n".join(lines) + "\n"


__all__ = ["auto_settings", "describe"]
