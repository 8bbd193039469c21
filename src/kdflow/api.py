"""The Python API: ``teach``, ``distill``, ``evaluate``, ``layers``, ``compare``, ``export``; the CLI is a
thin layer over these, and each is a short function over :mod:`kdflow.pipeline`."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Optional

from . import models, pipeline
from .config import load_config
from .data import load_data, make_featurizer, train_loader
from .data.leakage import clean_part, overlaps
from .deploy.compare import Contestant, MeasureOptions, compare_models, head_pruned_student, vocab_pruned_student
from .deploy.measure import files_size_mb
from .diagnose.baselines import control_findings, controls, majority
from .diagnose.check import data_findings, plausibility, summary_counts
from .distillation.critical import layer_map, teacher_block_scores
from .distillation.distiller import Distiller
from .distillation.losses import label_loss
from .distillation.teacher_cache import attach_targets, teacher_test_logits
from .engine.runfolder import kept
from .engine.runlog import read_metrics, update_metrics
from .engine.train import FitJob, fit, make_accelerator
from .errors import KdflowError
from .files import RUN_FIX, must_be_folder
from .metrics import quality
from .models import LABELS_FILE
from .tasks import task_of_hf


def teach(config, overrides: Optional[list[str]] = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Fine-tune the teacher on the labelled data; saves ``<run>/teacher``. Returns its metrics. A failure
    leaves the run folder as it was (:func:`kdflow.engine.runfolder.kept`)."""
    cfg = load_config(config, overrides)
    with kept(cfg.run_dir):
        return _teach(cfg, resume, overwrite)


def _teach(cfg, resume: bool, overwrite: bool) -> dict:
    run = pipeline.setup(cfg, cfg.teach, "teacher", resume, overwrite)
    spec, d = cfg.model.teacher, run.data
    tokenizer = pipeline.tokenizer_for(spec, d)
    teacher = pipeline.new_teacher(run, tokenizer)
    pipeline.check_length(teacher, cfg.data.max_length, "teacher")
    feat = pipeline.featurizer(run, tokenizer)
    run.info(f"[teacher] {type(teacher).__name__}, {models.count_parameters(teacher):,} parameters")

    settings = pipeline.train_settings(run, cfg.teach, "teacher", spec, teacher)
    job = FitJob("teacher", settings, cfg.run_dir / "checkpoints" / "teacher", resume,
                 {"train_examples": len(d.train), "teacher": spec.model_dump(mode="json")})
    result = fit(teacher, partial(label_loss, task=d.task),
                 train_loader(d.train, feat, None, cfg.teach.batch_size, cfg.teach.seed),
                 pipeline.selection_fn(run, d.validation, feat, cfg.teach.eval_batch_size), job, run.acc, run.log)
    teacher = run.acc.unwrap_model(teacher)
    if run.acc.is_main_process:
        models.save_model(teacher, cfg.run_dir / "teacher", tokenizer, d.label_names, d.task)
    entry = pipeline.final_metrics(run, teacher, feat, result)
    if run.acc.is_main_process and "decision" in entry:
        models.save_decision(cfg.run_dir / "teacher", entry["decision"])
    run.log.final("teacher", entry)
    pipeline.write_report(run)
    run.info(f"[teacher] saved to {cfg.run_dir / 'teacher'}; " + pipeline.summary(entry))
    return entry


def distill(config, overrides: Optional[list[str]] = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Distil the teacher into the student (mode offline, online or guide); saves ``<run>/student``. A failure
    leaves the run folder as it was (:func:`kdflow.engine.runfolder.kept`)."""
    cfg = load_config(config, overrides)
    with kept(cfg.run_dir):
        return _distill(cfg, resume, overwrite)


def _distill(cfg, resume: bool, overwrite: bool) -> dict:
    run = pipeline.setup(cfg, cfg.train, "student", resume, overwrite)
    pipeline.with_transfer_set(run)
    dc, d = cfg.distill, run.data
    teacher = pipeline.load_teacher(run)
    student, s_tokenizer = pipeline.build_student(run, teacher.model, teacher.tokenizer)
    pipeline.check_length(teacher.model, cfg.data.max_length, "teacher")
    pipeline.check_length(student, cfg.data.max_length, "student")
    t_feat = pipeline.featurizer(run, teacher.tokenizer)
    s_feat = t_feat if s_tokenizer is teacher.tokenizer else pipeline.featurizer(run, s_tokenizer)
    n_t, n_s = models.count_parameters(teacher.model), models.count_parameters(student)
    run.info(f"[distill] mode {dc.mode}, T={dc.temperature}, alpha={dc.alpha}; teacher {teacher.source} "
             f"({n_t:,} params) -> student {type(student).__name__} ({n_s:,} params, {n_t / n_s:.1f}x fewer)")
    pairs = layer_map(run, teacher.model, student, t_feat) if dc.intermediate and dc.alpha > 0 else []
    distiller = Distiller(teacher.model, dc, d.task, pairs)
    train_dl = train_loader(d.train, s_feat, t_feat, cfg.train.batch_size, cfg.train.seed)
    targets = attach_targets(run, distiller, teacher.tokenizer, t_feat, resume)
    model = pipeline.with_projections(run, student, distiller, train_dl) if pairs else student
    settings = pipeline.train_settings(run, cfg.train, "student", cfg.model.student, student)
    job = FitJob("student", settings, cfg.run_dir / "checkpoints" / "student", resume,
                 _signature(cfg, pairs, len(d.train)), on_epoch_start=targets.on_epoch_start)
    select = pipeline.selection_fn(run, d.validation, s_feat, cfg.train.eval_batch_size)
    result = fit(model, distiller, train_dl, select, job, run.acc, run.log)
    student = run.acc.unwrap_model(model)
    student = student.student if pairs else student
    if run.acc.is_main_process:
        models.save_model(student, cfg.run_dir / "student", s_tokenizer, d.label_names, d.task)
    teacher_test = teacher_test_logits(run, distiller, t_feat, targets)
    # the teacher's test scores by its own decision rule (multilabel: the thresholds saved with it)
    t_decision = models.saved_decision(teacher.source) if Path(teacher.source).is_dir() else None
    scored = {"teacher_test": quality(teacher_test, d.test.targets, d.task, t_decision, d.label_names)} \
        if teacher_test is not None else {}
    entry = pipeline.final_metrics(run, student, s_feat, result, distill=_distill_info(dc, pairs, distiller, targets),
                                   **({"compression": round(n_t / n_s, 2)} if n_t else {}), **scored)
    if run.acc.is_main_process and "decision" in entry:
        models.save_decision(cfg.run_dir / "student", entry["decision"])
    run.log.final("student", entry)
    pipeline.write_report(run)
    run.info(f"[student] saved to {cfg.run_dir / 'student'}; " + pipeline.summary(entry)
             + (f"; teacher test {entry['teacher_test'][cfg.train.metric]:.4f}" if "teacher_test" in entry else ""))
    return entry


def _signature(cfg, pairs, train_examples: int) -> dict:
    """Settings a resumed distillation must share with the run it continues."""
    dc = cfg.distill
    return {"train_examples": train_examples, "mode": dc.mode, "alpha": dc.alpha, "temperature": dc.temperature,
            "guide_every": dc.guide_every, "student": cfg.model.student.model_dump(mode="json"),
            "logit_loss": dc.logit_loss, "layers": [p.name for p in pairs],
            "extra_teachers": [e.name for e in dc.extra_teachers]}


def _distill_info(dc, pairs, distiller: Distiller, targets) -> dict:
    return {"mode": dc.mode, "temperature": dc.temperature, "alpha": dc.alpha, "logit_loss": dc.logit_loss,
            "layers": [{"student": p.student, "teacher": p.teacher, "kind": p.kind, "weight": p.weight}
                       for p in pairs], "teachers": 1 + len(dc.extra_teachers),
            "teacher_examples_computed": targets.cache.computed if targets.cache is not None else None,
            "teacher_calls_in_loop": distiller.teacher_calls, "target_refreshes": distiller.refreshes,
            **({"teacher_usage": distiller.teacher.usage()} if hasattr(distiller.teacher, "usage") else {})}


def layers(config, overrides: Optional[list[str]] = None, teacher: Optional[str] = None,
           method: Optional[str] = None, examples: Optional[int] = None) -> dict:
    """Score every block of the teacher (drop-layer impact and linear-probe accuracy on a
    train / validation sample) and rank them; writes ``<run>/layers/layers.json`` and
    ``layers.png``. ``distill.layers: auto:K`` then uses the top ``K``."""
    extra = list(overrides or [])
    if method:
        extra.append(f"distill.layer_score={method}")
    if examples:
        extra.append(f"distill.layer_score_examples={examples}")
    cfg = load_config(config, extra)
    run = pipeline.open_run(cfg, cfg.train)
    if teacher:
        model, tok, labels, _ = models.load_saved(teacher)
        if labels != run.data.label_names:
            raise KdflowError(f"The teacher in '{teacher}' was trained for other labels than this data's; give a "
                              "teacher fine-tuned on exactly these labels")
    else:
        found = pipeline.load_teacher(run)
        model, tok = found.model, found.tokenizer
    scores = teacher_block_scores(run, model, pipeline.featurizer(run, tok))
    return {**scores, "folder": str(cfg.run_dir / "layers")}


def evaluate(target: str, config=None, overrides: Optional[list[str]] = None, split: str = "test",
             role: str = "student") -> dict:
    """Quality of a saved model (a run folder's ``role``, or a model folder) on a split of the data."""
    if config is not None:
        load_config(config, overrides)  # a bad config is named before the folder
    path = must_be_folder(Path(target), f"'{target}'", "give a run folder (runs/NAME) or a saved model folder")
    if (path / "config.yaml").exists():  # a run folder (its config.yaml is read below, damaged or not)
        folder, config = path / role, config or (path / "config.yaml")
        if not folder.is_dir():
            raise KdflowError(f"Run folder '{path}' has no {role} yet; run 'kdflow "
                              f"{'teach' if role == 'teacher' else 'distill'}' first, or pick --role")
    else:
        folder = path
    if config is None:
        raise KdflowError(f"'{target}' is a model folder without a run config; pass --config CONFIG to say "
                          "which data to evaluate on")
    cfg = load_config(config, overrides)
    run = pipeline.Run(cfg, load_data(cfg.data), make_accelerator(cfg.train), None)
    model, tokenizer, labels, task = models.load_saved(folder)
    if labels is None and hasattr(model, "config") and getattr(model.config, "id2label", None):
        labels = [model.config.id2label[i] for i in sorted(model.config.id2label)]
        task = run.data.task if task_of_hf(model.config.num_labels, None) == run.data.task else task
    if task != run.data.task or labels != run.data.label_names:
        raise KdflowError(f"The model in '{folder}' was trained for other labels (or another task) than this "
                          "data's; evaluate it on the data it was trained for")
    part, feat = run.data.split(split), pipeline.featurizer(run, tokenizer)
    model.to(run.acc.device)
    decision = models.saved_decision(folder)  # multilabel: the thresholds tuned when it was trained
    result = pipeline.eval_fn(run, part, feat, cfg.train.eval_batch_size, decision=decision)(model)
    o, extra = overlaps(run.data).get(split), {}
    if o is not None:  # a split that repeats training data: its other examples' score beside
        clean = clean_part(part, o)
        extra = {"overlap": o.as_dict(), "clean": None if clean is None else
                 pipeline.eval_fn(run, clean, feat, cfg.train.eval_batch_size, decision=decision)(model)}
    return {"model": str(folder), "split": split, "examples": len(part), **result, **extra}


def compare(teacher: str, student: str, config=None, overrides: Optional[list[str]] = None, split: str = "test",
            options: Optional[MeasureOptions] = None, out_dir: Optional[str] = None) -> list[dict]:
    """Teacher vs student (and the forms ``options`` ask for) on one split: quality, size, latency,
    throughput, peak memory (a fresh process per form, unless ``options.memory`` is off)."""
    options = options or MeasureOptions()
    if config is None:
        raise KdflowError("compare needs --config CONFIG to know which data to score on")
    if options.prune_heads and not 0.0 < options.prune_heads < 1.0:
        raise KdflowError(f"--prune-heads is the fraction of heads to remove, between 0 and 1; got "
                          f"{options.prune_heads}")
    cfg = load_config(config, overrides)
    data = load_data(cfg.data)
    part = data.split(split)
    t, s = (_saved_contestant(name, folder, data, cfg.data.max_length, cfg.data.subwords)
            for name, folder in (("teacher", teacher), ("student", student)))
    work = Path(out_dir or tempfile.mkdtemp(prefix="kdflow-export-"))
    students = [s]
    if options.prune_vocab:
        students.append(vocab_pruned_student(s.model, s.feat, data, work))
    if options.prune_heads:
        students.append(head_pruned_student(s.model, s.feat, data, options.prune_heads, work))
    return compare_models(t, students, part, data.task, data.label_names, options, work)


def _saved_contestant(name: str, folder: str, data, max_length: int, subwords: str = "first") -> Contestant:
    model, tok, labels, task = models.load_saved(folder)
    if labels != data.label_names or task != data.task:
        raise KdflowError(f"The model in '{folder}' was trained for other labels than this data's; "
                          "compare models of the same task")
    return Contestant(name, model, make_featurizer(data.modality, tok, max_length, subwords=subwords),
                      files_size_mb(folder),
                      models.saved_decision(folder))


def export(run: str, options: Optional[MeasureOptions] = None) -> list[dict]:
    """Export a run's student (ONNX and int8 unless ``options`` say otherwise) into ``<run>/export`` and
    measure every form beside the teacher; the rows go into ``metrics.json`` under ``deploy``."""
    target = must_be_folder(Path(run), f"Run folder '{run}'", RUN_FIX)
    if not (target / "config.yaml").is_file():
        raise KdflowError(f"'{run}' is not a run folder (no config.yaml); give runs/NAME")
    rows = compare(str(_run_teacher(target)), str(_run_part(target, "student")), target / "config.yaml",
                   options=options or MeasureOptions(onnx=True, int8=True), out_dir=str(target / "export"))
    update_metrics(target, {"deploy": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]})
    from .diagnose.report import write_report
    write_report(target)
    return rows


def check(config, overrides: Optional[list[str]] = None, control: bool = True) -> dict:
    """Leakage, labels, task and baselines of a config's data (and the saved models and scores of its run
    folder, if any): ``findings`` (error / warning / info), ``majority``, ``control`` (a linear model on
    true and on shuffled labels, unless ``control`` is off). Reads everything, writes nothing."""
    cfg = load_config(config, overrides)
    pipeline.check_inputs(cfg, "check")
    data = load_data(cfg.data)
    pipeline.check_modality(cfg, data)
    findings = data_findings(cfg, data)
    base = majority(data)
    ctrl = controls(data, cfg.data.seed) if control else {}
    findings += control_findings(data, base, ctrl)
    findings += _score_findings(cfg, data)
    findings += _teacher_findings(cfg, data)
    order = {"error": 0, "warning": 1, "info": 2}
    return {"data": {s.name: len(s) for s in [*data.splits(), *filter(None, [data.unlabelled])]},
            "labels": data.num_labels if data.label_names else None, "task": data.task,
            "findings": [f.as_dict() for f in sorted(findings, key=lambda f: order[f.level])],
            "counts": summary_counts(findings), "majority": base, "control": ctrl}


def _teacher_findings(cfg, data) -> list:
    """A teacher used as it is (an LLM, a predictions file): what ``kdflow distill`` would ask of it (its training
    split, transfer set and test), said before anything is paid."""
    spec = cfg.model.teacher
    if not models.kind(spec).fixed:
        return []
    from .diagnose.check import Finding
    run = pipeline.Run(cfg, data, make_accelerator(cfg.train), None)
    teacher = pipeline.new_teacher(run, pipeline.tokenizer_for(spec, data))
    splits = {"train": data.train, "unlabelled": data.unlabelled, "test": data.test}
    level, message = teacher.preview({name: split for name, split in splits.items() if split is not None})
    return [Finding(level, "teacher", message)]


def _score_findings(cfg, data) -> list:
    """Too-good-to-be-true test scores already in the run folder's metrics.json."""
    metrics, out = read_metrics(cfg.run_dir), []
    n = len(data.test) if data.test is not None else 0
    teacher = (metrics.get("teacher") or {}).get("test")
    for role in ("teacher", "student"):
        entry = metrics.get(role) or {}
        if isinstance(entry.get("test"), dict):
            theirs = entry.get("teacher_test") or teacher if role == "student" else None
            out += plausibility(entry["test"], data.task, n, theirs, role)
    return out


def _run_part(target: Path, role: str) -> Path:
    folder = target / role
    if not (folder / LABELS_FILE).is_file() and not (folder / "config.json").is_file():
        raise KdflowError(f"'{folder}' holds no saved {role}; run 'kdflow "
                          f"{'teach' if role == 'teacher' else 'distill'}' first")
    return folder


def _run_teacher(target: Path) -> Path:
    """The run's own fine-tuned teacher, else the saved teacher its config distilled from."""
    if (target / "teacher").is_dir():
        return _run_part(target, "teacher")
    name = load_config(target / "config.yaml").model.teacher.name
    if name and (Path(name) / "config.json").is_file() and (Path(name) / LABELS_FILE).is_file():
        return Path(name)
    return _run_part(target, "teacher")  # its error names the missing folder
