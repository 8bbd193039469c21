"""Run assembly, shared by every command: the run folder, the data, the teacher, the student,
featurizers, evaluation. ``api`` (teach, distill, ...) and ``active`` are short functions over these.

A run folder ``<run.output_dir>/<run.name>/`` collects everything::

    config.yaml            resolved config of the latest command
    teacher/ student/      save_pretrained (safetensors), tokenizer, kdflow_labels.json
    checkpoints/<role>/    last/ and previous/ (resumable accelerate state, checksummed) and best.safetensors
    metrics.csv            one row per epoch and role;  tensorboard/  events
    metrics.json           final numbers;  log.txt  the log
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from torch import nn

from . import models
from .config import Config, ModelSpec, TrainConfig, learning_rate
from .data import Featurizer, TaskData, image_preprocess, input_batches, load_data, make_featurizer
from .data.leakage import clean_part, overlaps
from .engine.run import Run, eval_fn, selection_fn, validation_scores
from .engine.runfolder import guard
from .engine.runlog import RunLog
from .engine.train import FitResult, make_accelerator
from .errors import KdflowError
from .files import may_be_folder
from .metrics import check_metric
from .tasks import task_kind


@dataclass
class Teacher:
    model: nn.Module
    tokenizer: Any
    source: str  # where it came from, for the log


def check_inputs(cfg: Config, role: str = "teacher") -> None:
    """Settings that cannot work with this data, named before any work starts (``role``: what the
    command trains, or ``check``; the distillation settings matter to a student only)."""
    check_paths(cfg)
    for side in ("teacher", "student"):
        spec = getattr(cfg.model, side)
        if task_kind(cfg.data.task).per_word and spec.kind != "hf":
            raise KdflowError(f"Token tagging (data.task {cfg.data.task}) runs Hugging Face token classifiers, and "
                              f"model.{side} is of kind {spec.kind}; set model.{side}.kind: hf")
        models.kind(spec).check(spec, side, cfg.data)
    dc = cfg.distill
    if models.kind(cfg.model.teacher).fixed:
        models.check_fixed_teacher(cfg, role)
    if role in ("teacher", "check"):
        return
    student = cfg.model.student
    if dc.intermediate and not models.kind(student).matches_layers:
        raise KdflowError(f"model.student (kind {student.kind}) has no learning blocks for distill.intermediate to "
                          "match to the teacher's; set distill.intermediate: false")
    if dc.extra_teachers and dc.mode != "offline":
        raise KdflowError("distill.extra_teachers averages cached soft targets, so it needs distill.mode: offline")
    if dc.alpha == 0:
        return
    from .distillation.distiller import resolve_logit_loss
    resolve_logit_loss(dc.logit_loss, cfg.data.task, 1 + len(dc.extra_teachers))


def check_paths(cfg: Config) -> None:
    """The config's model folders and the folders kdflow writes into: a missing folder, a file where a folder
    belongs, or an empty folder is one sentence before any work (data files: :mod:`kdflow.data.tables`)."""
    named = [(f"model.{side}.name", getattr(cfg.model, side).name) for side in ("teacher", "student")]
    named += [(f"distill.extra_teachers[{i}].name", e.name) for i, e in enumerate(cfg.distill.extra_teachers)]
    for key, name in named:
        if name:
            models.check_source(name, key)
    fix = "give a folder there, or another path"
    may_be_folder(Path(cfg.run.output_dir), f"run.output_dir '{cfg.run.output_dir}'", fix)
    may_be_folder(cfg.run_dir, f"The run folder '{cfg.run_dir}' (run.output_dir/run.name)", "choose another run.name")
    if cfg.distill.cache_dir:
        may_be_folder(Path(cfg.distill.cache_dir), f"distill.cache_dir '{cfg.distill.cache_dir}'", fix)


def open_run(cfg: Config, train_cfg: TrainConfig) -> Run:
    """Checked config, accelerator, data and log; the run folder's records are left as they are."""
    check_inputs(cfg)
    acc = make_accelerator(train_cfg)
    data = load_data(cfg.data)
    check_modality(cfg, data)
    return Run(cfg, data, acc, RunLog(cfg.run_dir, acc, cfg.run.quiet))


def setup(cfg: Config, train_cfg: TrainConfig, role: str, resume: bool = False, overwrite: bool = False) -> Run:
    """Check the config and read the data first; only then touch the run folder (and write config.yaml)."""
    check_inputs(cfg, role)
    acc = make_accelerator(train_cfg)
    data = load_data(cfg.data)
    check_modality(cfg, data)
    for key in ("train", "teach"):
        check_metric(getattr(cfg, key).metric, data.task, data.num_labels, f"{key}.metric")
    findings = preflight(cfg, data)
    guard(cfg.run_dir, acc, role, resume, overwrite)
    run = Run(cfg, data, acc, RunLog(cfg.run_dir, acc, cfg.run.quiet), [f.as_dict() for f in findings],
              overlaps(data))
    for note in data.notes:
        run.info(f"[data] {note}")
    for f in findings:
        run.info(f"[check] {f.level}: {f.message}")
    run.info(f"[data] train {len(data.train)}, validation {len(data.validation)}, "
             f"test {len(data.test) if data.test else 0} examples; "
             + (f"{data.num_labels} labels" if data.label_names else data.task))
    if acc.is_main_process:
        (cfg.run_dir / "config.yaml").write_text(cfg.to_yaml())
    return run


def preflight(cfg: Config, data: TaskData) -> list:
    """The fast checks of ``kdflow check`` (leakage, labels, task; no model runs) before any work: an error
    refuses the command, the warnings are returned (logged, and kept in metrics.json and the report)."""
    from .diagnose.check import data_findings, first_error
    findings = data_findings(cfg, data, heads={})
    error = first_error(findings)
    if error is not None:
        raise KdflowError(error.message)
    return [f for f in findings if f.level != "info"]


# ------------------------------------------------------------------ models

def tokenizer_for(spec: ModelSpec, data: Optional[TaskData] = None):
    """What ``spec``'s model reads through: its kind's tokenizer; for an image model built here (none of
    its own), the normalisation of ``data``'s training images."""
    tok = models.kind(spec).tokenizer(spec)
    if tok is None and data is not None and data.modality == "image":
        return image_preprocess(data.train)
    return tok


def check_modality(cfg: Config, data: TaskData) -> None:
    """Each model reads what the data holds (text, numeric sequences or images), named before any work."""
    for side in ("teacher", "student"):
        spec = getattr(cfg.model, side)
        reads = spec.modality
        if (reads == "image") != (data.modality == "image"):
            fix = "vision" if data.modality == "image" else "hf (or encoder)"
            raise KdflowError(f"model.{side} (kind {spec.kind}) reads {reads} and this data holds "
                              f"{data.modality}; set model.{side}.kind: {fix}")
    if cfg.data.augment and data.modality != "image":
        raise KdflowError(f"data.augment ({', '.join(cfg.data.augment)}) transforms images, and this data holds "
                          f"{data.modality}; drop data.augment")


def new_teacher(run: Run, tokenizer) -> nn.Module:
    """``model.teacher`` as its kind builds or loads it (for ``teach``: a head to fine-tune)."""
    spec = run.cfg.model.teacher
    return models.kind(spec).teacher(spec, run.build_context(tokenizer))


def teacher_is_trained(run: Run) -> bool:
    """The run has its own fine-tuned teacher, or ``model.teacher.name`` has a head for these labels."""
    spec, d = run.cfg.model.teacher, run.data
    return (run.cfg.run_dir / "teacher").is_dir() or models.kind(spec).has_head(spec, d.label_names, d.task)


def with_projections(run: Run, student: nn.Module, distiller, train_dl) -> nn.Module:
    """The student wrapped (a ``FeatureStudent``) with learned projections to the teacher's widths of the
    distiller's paired layers, for critical-layer distillation; unwrap with ``.student`` after training."""
    from .distillation.distiller import FeatureStudent, feature_widths
    distiller.teacher.to(run.acc.device)
    probe = train_dl.collate_fn(list(range(min(4, len(run.data.train)))))
    model = FeatureStudent(student, distiller.pairs, feature_widths(student, distiller.teacher, distiller.pairs, probe))
    if model.projections:
        run.info(f"[distill] learned projections student->teacher width: {', '.join(model.projections)}")
    return model


def load_teacher(run: Run) -> Teacher:
    """The fine-tuned teacher of this run, or model.teacher when it already has a head for these labels."""
    cfg, d = run.cfg, run.data
    own = cfg.run_dir / "teacher"
    if own.is_dir():
        teacher, tokenizer, labels, _ = models.load_saved(own)
        if labels != d.label_names:
            raise KdflowError(f"The teacher in '{own}' was trained on other labels than this data's; "
                              "use another run.name or re-run kdflow teach with --overwrite")
        return Teacher(teacher, tokenizer, str(own))
    spec = cfg.model.teacher
    trained = models.kind(spec).has_head(spec, d.label_names, d.task)
    if trained or cfg.distill.mode == "guide" or cfg.distill.alpha == 0:  # guide trains it; alpha 0 never asks it
        tokenizer = tokenizer_for(spec, d)
        source = spec.source if trained else f"{spec.name or spec.kind} (untrained head)"
        return Teacher(new_teacher(run, tokenizer), tokenizer, source)
    raise KdflowError(f"The teacher '{spec.name}' has no trained head for these {d.num_labels} labels; run "
                      f"'kdflow teach' with this config first (it saves {own}), or point model.teacher.name "
                      "at a local classifier fine-tuned on exactly these labels (kdflow_labels.json or id2label)")


def build_student(run: Run, teacher: nn.Module, tokenizer) -> tuple:
    """``model.student`` as its kind builds it from the teacher; then its vocabulary pruned when asked."""
    spec, d = run.cfg.model.student, run.data

    def ranking() -> list[int]:  # only a student built from "the most critical teacher blocks" asks
        from .distillation.critical import teacher_block_scores
        return teacher_block_scores(run, teacher, featurizer(run, tokenizer))["ranking"]

    if d.modality == "image":
        return image_student(run, teacher, tokenizer)
    if models.kind(run.cfg.model.teacher).fixed:  # it reads raw text: the student reads through its own tokenizer
        tokenizer = tokenizer_for(spec, d)
    student, s_tokenizer = models.kind(spec).student(spec, run.build_context(tokenizer, teacher, ranking))
    from .deploy.prune import prunable, prune_embeddings, prune_tokenizer, used_token_ids
    why_not = prunable(student, s_tokenizer)
    if spec.prune_vocab and why_not:
        raise KdflowError(f"model.student.prune_vocab is true but {why_not}; set model.student.prune_vocab: false")
    if spec.prune_vocab is None and why_not:
        run.info(f"[student] vocabulary kept whole (prune_vocab auto: {why_not})")
    elif spec.prune_vocab is not False:
        kept = used_token_ids(s_tokenizer, texts_of(d.train), d.train.inputs.get("text_pair"),
                              run.cfg.data.max_length)
        if spec.prune_vocab or not _unseen_too_often(run, s_tokenizer, kept):
            before = len(s_tokenizer)
            student, s_tokenizer = prune_embeddings(student, kept), prune_tokenizer(s_tokenizer, kept)
            auto = "" if spec.prune_vocab else " (prune_vocab auto)"
            run.info(f"[student] vocabulary pruned to the training text{auto}: {before:,} -> {len(kept):,} tokens")
    prepare = models.kind(spec).prepare
    if prepare is not None:  # fitted without labels on the training pool (dkvb: its keys), on the run's device
        pool = input_batches(d.train, featurizer(run, s_tokenizer), run.cfg.train.eval_batch_size)
        prepare(student.to(run.acc.device), pool, run.cfg.train.seed, run.info)
    return student, s_tokenizer


def image_student(run: Run, teacher: nn.Module, tokenizer) -> tuple:
    """``model.student`` for images. One built here reads the training images at their own size and
    statistics, whatever a pretrained teacher's processor expects (224 px, ImageNet's mean)."""
    spec = run.cfg.model.student
    if spec.prune_vocab:
        raise KdflowError("model.student.prune_vocab is true but a vision student reads no tokens; drop it")
    own = tokenizer_for(spec, run.data)
    if spec.name or own == tokenizer:
        own = tokenizer  # the same object: teacher and student then share one featurizer
    return models.kind(spec).student(spec, run.build_context(own, teacher))


def texts_of(split) -> Optional[list[str]]:
    """The split's text as a tokenizer reads it: its ``text``, or its words joined by spaces (token tagging)."""
    if "text" in split.inputs:
        return split.inputs["text"]
    return [" ".join(map(str, w)) for w in split.inputs["words"]] if "words" in split.inputs else None


def _unseen_too_often(run: Run, tokenizer, kept: list[int]) -> bool:
    """prune_vocab auto: whether the validation split has so many word pieces outside ``kept`` (the training
    text's) -- more than PRUNE_AUTO_MAX_UNSEEN -- that the vocabulary is better kept whole (then logged)."""
    from .deploy.prune import PRUNE_AUTO_MAX_UNSEEN, unseen_share
    d, length = run.data, run.cfg.data.max_length
    texts = texts_of(d.validation)
    if texts is None:
        return False
    share = unseen_share(tokenizer, kept, texts, d.validation.inputs.get("text_pair"), length)
    if share <= PRUNE_AUTO_MAX_UNSEEN:
        return False
    run.info(f"[student] vocabulary kept whole (prune_vocab auto): {share:.1%} of the validation split's word pieces "
             f"never occur in the training text, more than {PRUNE_AUTO_MAX_UNSEEN:.0%}, and a pruned student would "
             "read them as [UNK]; set model.student.prune_vocab: true to prune anyway")
    return True


def train_settings(run: Run, section: TrainConfig, role: str, spec: ModelSpec, model: nn.Module) -> TrainConfig:
    """``section`` with its learning rate resolved: as given, or the auto rate for a model whose blocks
    start pretrained or random (logged, so the log says what ran)."""
    if section.lr is not None:
        return section
    pretrained, own = models.starts_pretrained(spec, model), models.kind(spec).lr(spec)
    lr = own or learning_rate(section, role, pretrained)
    why = f"the {spec.kind} kind's rate" if own else f"its blocks start {'pretrained' if pretrained else 'random'}"
    run.info(f"[{role}] learning rate {lr:g} (auto: {why})")
    return section.model_copy(update={"lr": lr})


def check_length(model: nn.Module, max_length: int, role: str) -> None:
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise KdflowError(f"data.max_length {max_length} exceeds the {role}'s {limit} positions; "
                          f"set data.max_length to at most {limit}")


def featurizer(run: Run, tokenizer) -> Featurizer:
    """The featurizer of the run's data (its modality) for a model reading through ``tokenizer``; it augments
    training batches as ``data.augment`` says."""
    dc = run.cfg.data
    return make_featurizer(run.data.modality, tokenizer, dc.max_length, dc.augment, dc.crop_padding, dc.subwords)


# ------------------------------------------------------------------ evaluation and records

def final_metrics(run: Run, model: nn.Module, feat: Featurizer, result: Optional[FitResult] = None,
                  **extra) -> dict:
    """Parameters, training facts, validation and test quality of a trained model."""
    bs = run.cfg.train.eval_batch_size
    entry = {"parameters": models.count_parameters(model)}
    if result is not None:
        entry.update(best_epoch=result.best_epoch + 1, epochs_run=result.epochs_run,
                     train_seconds=round(result.seconds, 1))
    decision, entry["validation"] = validation_scores(run, model, feat, bs)  # multilabel: thresholds chosen there
    if decision is not None:
        entry["decision"] = decision
    if run.data.test is not None:
        entry["test"] = eval_fn(run, run.data.test, feat, bs, decision=decision)(model)
    for name, split in run.data.extra_tests.items():  # e.g. MNLI mismatched, scored beside test
        entry[f"test_{name}"] = eval_fn(run, split, feat, bs, decision=decision)(model)
    entry.update(clean_scores(run, model, feat, entry, decision))
    if hasattr(model, "codebook_health"):  # a key-value bottleneck: how the training inputs and the test use it
        entry["codebook"] = {name: model.codebook_health(input_batches(split, feat, bs)) for name, split in
                             (("train", run.data.train), ("test", run.data.test)) if split is not None}
    entry.update(extra)
    checks = run.findings + [f.as_dict() for f in _plausibility(run, entry)]
    if checks:
        entry["checks"] = checks
    return entry


def clean_scores(run: Run, model: nn.Module, feat: Featurizer, entry: dict, decision: Optional[dict] = None) -> dict:
    """Beside each scored held-out split that repeats training examples (:mod:`kdflow.data.leakage`), the score of
    its other examples (``<split>_clean``), and ``overlap``: how many, where, how (logged too)."""
    out: dict = {}
    metric = run.cfg.train.metric
    for name, o in run.overlap.items():
        if name not in entry:
            continue
        part = clean_part(run.data.split(name), o)
        clean = eval_fn(run, part, feat, run.cfg.train.eval_batch_size, decision=decision)(model) \
            if part is not None else None
        out[f"{name}_clean"] = clean
        out.setdefault("overlap", {})[name] = o.as_dict()
        run.info(f"[check] {o.describe()}: {name} {metric} {entry[name][metric]:.4f} on all {o.size}, "
                 + (f"{clean[metric]:.4f} on the other {len(part)}" if clean else "none of it is clean"))
    return out


def _plausibility(run: Run, entry: dict) -> list:
    if "test" not in entry or run.data.test is None:
        return []
    from .diagnose.check import plausibility
    found = plausibility(entry["test"], run.data.task, len(run.data.test), entry.get("teacher_test"), "model")
    for f in found:
        run.info(f"[check] {f.level}: {f.message}")
    return found


def summary(entry: dict) -> str:
    split = "test" if "test" in entry else "validation"
    extra = [k for k in entry if k.startswith("test_") and isinstance(entry[k], dict)]
    return "; ".join(f"{s} " + ", ".join(f"{k} {v:.4f}" for k, v in entry[s].items()) for s in [split, *extra])


def write_report(run: Run) -> None:
    if run.acc.is_main_process:
        from .diagnose.report import write_report as write
        write(run.cfg.run_dir)


def with_transfer_set(run: Run) -> None:
    """Append data.unlabelled to the student's training split; only the teacher labels it."""
    d, dc = run.data, run.cfg.distill
    if d.unlabelled is None:
        return
    if dc.alpha == 0:
        raise KdflowError("data.unlabelled has no labels, only the teacher's soft targets: set distill.alpha > 0 "
                          "(e.g. 0.9), or drop data.unlabelled")
    if dc.mode == "guide":
        raise KdflowError("data.unlabelled works with distill.mode offline or online, not guide (the guided "
                          "teacher trains on labelled examples only)")
    run.data = replace(d, train=d.train + d.unlabelled)
    run.info(f"[distill] student trains on {len(d.train)} labelled + {len(d.unlabelled)} unlabelled examples "
             "(teacher soft targets only)")


__all__ = ["Run", "Teacher", "check_inputs", "check_paths", "check_modality", "open_run",
           "setup", "tokenizer_for", "new_teacher", "teacher_is_trained", "load_teacher", "build_student",
           "image_student", "train_settings", "check_length", "featurizer", "eval_fn", "selection_fn", "final_metrics",
           "clean_scores", "summary", "write_report", "with_transfer_set"]
