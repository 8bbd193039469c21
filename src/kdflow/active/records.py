"""What an active-learning run leaves behind, and the lines it prints.

Run folder additions::

    active/state.json        labels (by example id, with their source), ignored ids, rounds, pending batch
    active/rounds.csv        one row per round: labels, teacher queries, validation and test quality, kappa
    active/epochs.csv        per-epoch rows of every round's training (role roundN); tensorboard/active/
    active/batch-NNN/        a batch for human labelling: to_label.csv / .jsonl, Label Studio tasks + config
    active/student/          the final student (save_pretrained, tokenizer, label map)
    metrics.json "active"    the summary; report.md / report.html gain the label-efficiency curve
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .. import models
from ..config import Config
from ..data import Split, loader, make_collate
from ..engine.distributed import is_main
from ..engine.runlog import update_metrics, write_csv
from ..engine.train import predict
from ..metrics import quality
from ..tasks import task_kind
from .context import Context
from .oracles import SKIP

ROUND_COLUMNS = ("round", "labels", "new", "teacher_queries", "epochs_run", "train_seconds", "select_seconds", "kappa")


def kappa(previous: Optional[list], pred: np.ndarray) -> Optional[float]:
    """Cohen's kappa between the last round's and this round's validation predictions (the
    stabilising-predictions stopping rule); ``None`` in the first round."""
    if previous is None:
        return None
    from sklearn.metrics import cohen_kappa_score
    prev = np.asarray(previous)
    return 1.0 if (prev == pred).all() else float(np.nan_to_num(cohen_kappa_score(prev, pred)))


def round_line(rec: dict, metric: str) -> str:
    test = f", test {metric} {rec['test'][metric]:.4f}" if "test" in rec else ""
    test += f" ({rec['test_clean'][metric]:.4f} without its examples in train)" if "test_clean" in rec else ""
    kappa = f", kappa {rec['kappa']:.3f}" if rec.get("kappa") is not None else ""
    src = ", ".join(f"{k} {v}" for k, v in rec["sources"].items())
    return (f"[active] round {rec['round']}: {rec['labels']} labels ({src}), teacher queries "
            f"{rec['teacher_queries']}; validation {metric} {rec['validation'][metric]:.4f}{test}{kappa}")


def summary(ctx: Context, cfg: Config, status: str) -> dict:
    state = ctx.state
    rounds = [{k: v for k, v in r.items() if not k.startswith("_")} for r in state.rounds]
    return {"status": status, "stopped": state.stopped, "target": cfg.active.target, "strategy": cfg.active.strategy,
            "metric": cfg.train.metric,
            "oracle": cfg.active.oracle, "labels": len(state.labels), "sources": state.sources(),
            "ignored": len(state.ignored), "teacher_queries": len(state.teacher_queries),
            "pool": len(ctx.pool), "rounds": rounds, "batches": state.batch_meta,
            "pending": state.pending, "teacher_validation": ctx.teacher_val,
            "overlap": {name: o.as_dict() for name, o in ctx.run.overlap.items()},
            "student": str(ctx.folder / "student") if status == "done" else None}


def write(ctx: Context, result: dict) -> None:
    """metrics.json["active"], active/rounds.csv, and the report (process 0 writes them)."""
    if not is_main():
        return
    run_dir = ctx.cfg.run_dir
    update_metrics(run_dir, {"active": result})
    rows = []
    for r in result["rounds"]:
        row = {k: r[k] for k in ROUND_COLUMNS}
        row.update({f"{src}_labels": n for src, n in r["sources"].items()})
        row.update({f"val_{k}": v for k, v in r["validation"].items()})
        row.update({f"test_{k}": v for k, v in r.get("test", {}).items()})
        row.update({f"test_clean_{k}": v for k, v in r.get("test_clean", {}).items()})
        for split, scores in (r.get("teacher") or {}).items():  # target teacher: the fine-tuned teacher's
            if isinstance(scores, dict):
                row.update({f"teacher_{split}_{k}": v for k, v in scores.items()})
        rows.append(row)
    if rows:
        write_csv(ctx.folder / "rounds.csv", rows)
    from ..diagnose.report import write_report
    write_report(run_dir)


def waiting(ctx: Context, cfg: Config) -> dict:
    """The run stops for human labels: say where they go and how to go on."""
    p = ctx.state.pending
    if "conll" in p["files"]:  # token tagging: sentences pre-tagged by the teacher, to correct
        path = p["files"]["jsonl"]
        ctx.run.info(f"[active] batch {p['batch']}: {len(p['ids'])} sentences wait for human tags in {path} (the "
                     f"teacher's tags, to correct; {Path(p['files']['conll']).name} beside it holds the same as CoNLL; "
                     f"{SKIP} as the tags leaves a sentence out), then run: {ctx.command} --resume --labels {path}")
    else:
        path = p["files"]["csv"]
        by_teacher = f" (the teacher labelled {len(p['teacher'])} it was sure of)" if p.get("teacher") else ""
        ctx.run.info(
            f"[active] batch {p['batch']}: {len(p['ids'])} examples wait for human labels in {path}{by_teacher}: "
            f"fill in the label column ({SKIP} drops an example; {Path(p['files']['jsonl']).name} and the Label Studio "
            f"tasks {Path(p['files']['label_studio']).name} with {Path(p['files']['label_studio_config']).name} sit "
            f"beside it), then run: {ctx.command} --resume --labels {path}")
    p["command"] = f"{ctx.command} --resume --labels {path}"
    result = summary(ctx, cfg, "waiting")
    write(ctx, result)
    return result


def finish(ctx: Context, cfg: Config) -> dict:
    """Save the last round's student as the run's and write the final summary."""
    if ctx.current is None and ctx.state.rounds:
        ctx.restore(len(ctx.state.rounds) - 1)
    if ctx.current is not None and is_main():
        models.save_model(ctx.current, ctx.folder / "student", ctx.s_tokenizer, ctx.labels, ctx.run.data.task)
    if cfg.active.target == "teacher" and ctx.state.rounds and is_main():  # the teacher the labels made
        ctx.use_teacher_of(len(ctx.state.rounds) - 1)
        models.save_model(ctx.teacher, ctx.folder / "teacher", ctx.tokenizer, ctx.labels, ctx.run.data.task)
    ctx.run.info(f"[active] stopped: {ctx.state.stopped}; final student in {ctx.folder / 'student'}")
    result = summary(ctx, cfg, "done")
    write(ctx, result)
    return result


def evaluate_round(ctx: Context, model, r: int, new: int, result) -> dict:
    """The round record of the student ``model`` trained in round ``r`` (``new`` labels this round): its
    validation (and test) quality, kappa against the last round, labels and teacher queries so far."""
    cfg, d, acc = ctx.cfg, ctx.run.data, ctx.run.acc
    model.to(acc.device)

    def run(split: Split) -> np.ndarray:
        dl = loader(split, make_collate(split, ctx.s_feat), cfg.train.eval_batch_size, shuffle=False)
        logits, _ = predict(model, dl, acc, gather=False)
        return logits
    val_logits = run(d.validation)
    pred = task_kind(d.task).predict(val_logits)
    agreement = kappa(ctx.state.rounds[-1].get("_val_pred") if ctx.state.rounds else None, pred)
    for old in ctx.state.rounds:  # keep only the newest predictions in the state file
        old.pop("_val_pred", None)
    record = {"round": r, "labels": len(ctx.state.labels), "new": new, "sources": ctx.state.sources(),
              "teacher_queries": len(ctx.state.teacher_queries), "epochs_run": result.epochs_run,
              "best_epoch": result.best_epoch + 1, "train_seconds": round(result.seconds, 2),
              "select_seconds": (ctx.state.batch_meta[r] if r < len(ctx.state.batch_meta) else {}
                                 ).get("select_seconds"),
              "validation": quality(val_logits, d.validation.targets, d.task, names=d.label_names), "kappa": agreement}
    if ctx.ac.evaluate_test and d.test is not None:
        logits = run(d.test)
        record["test"] = quality(logits, d.test.targets, d.task, names=d.label_names)
        o = ctx.run.overlap.get("test")  # beside it, whenever test repeats training data: its other examples'
        if o is not None and o.count < o.size:
            keep = np.setdiff1d(np.arange(len(d.test)), o.rows)
            record["test_clean"] = quality(logits[keep], d.test.targets[keep], d.task, names=d.label_names)
    record["_val_pred"] = pred.tolist()
    model.cpu()
    return record


__all__ = ["evaluate_round", "kappa", "round_line", "summary", "write", "waiting", "finish"]
