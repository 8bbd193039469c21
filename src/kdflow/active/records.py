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
from typing import TYPE_CHECKING, Optional

import numpy as np

from .. import models
from ..config import Config
from ..data import Split, loader, make_collate
from ..distributed import is_main
from ..metrics import quality
from ..runlog import update_metrics, write_csv
from ..train import predict
from .oracles import SKIP

if TYPE_CHECKING:
    from .loop import Loop

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


def summary(loop: "Loop", cfg: Config, status: str) -> dict:
    state = loop.state
    rounds = [{k: v for k, v in r.items() if not k.startswith("_")} for r in state.rounds]
    return {"status": status, "stopped": state.stopped, "target": cfg.active.target, "strategy": cfg.active.strategy,
            "metric": cfg.train.metric,
            "oracle": cfg.active.oracle, "labels": len(state.labels), "sources": state.sources(),
            "ignored": len(state.ignored), "teacher_queries": len(state.teacher_queries),
            "pool": len(loop.pool), "rounds": rounds, "batches": state.batch_meta,
            "pending": state.pending, "teacher_validation": loop.teacher_val,
            "overlap": {name: o.as_dict() for name, o in loop.run.overlap.items()},
            "student": str(loop.folder / "student") if status == "done" else None}


def write(loop: "Loop", result: dict) -> None:
    """metrics.json["active"], active/rounds.csv, and the report (process 0 writes them)."""
    if not is_main():
        return
    run_dir = loop.cfg.run_dir
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
        write_csv(loop.folder / "rounds.csv", rows)
    from ..report import write_report
    write_report(run_dir)


def waiting(loop: "Loop", cfg: Config) -> dict:
    """The run stops for human labels: say where they go and how to go on."""
    p = loop.state.pending
    csv_path = p["files"]["csv"]
    by_teacher = f" (the teacher labelled {len(p['teacher'])} it was sure of)" if p.get("teacher") else ""
    loop.run.info(
        f"[active] batch {p['batch']}: {len(p['ids'])} examples wait for human labels in {csv_path}{by_teacher}: "
        f"fill in the label column ({SKIP} drops an example; {Path(p['files']['jsonl']).name} and the Label Studio "
        f"tasks {Path(p['files']['label_studio']).name} with {Path(p['files']['label_studio_config']).name} sit "
        f"beside it), then run: {loop.command} --resume --labels {csv_path}")
    p["command"] = f"{loop.command} --resume --labels {csv_path}"
    result = summary(loop, cfg, "waiting")
    write(loop, result)
    return result


def finish(loop: "Loop", cfg: Config) -> dict:
    """Save the last round's student as the run's and write the final summary."""
    if loop.current is None and loop.state.rounds:
        loop.restore(len(loop.state.rounds) - 1)
    if loop.current is not None and is_main():
        models.save_model(loop.current, loop.folder / "student", loop.s_tokenizer, loop.labels, "classification")
    if cfg.active.target == "teacher" and loop.state.rounds and is_main():  # the teacher the labels made
        from .teacher_rounds import teacher_of
        teacher_of(loop, len(loop.state.rounds) - 1)
        models.save_model(loop.teacher, loop.folder / "teacher", loop.tokenizer, loop.labels, "classification")
    loop.run.info(f"[active] stopped: {loop.state.stopped}; final student in {loop.folder / 'student'}")
    result = summary(loop, cfg, "done")
    write(loop, result)
    return result


def evaluate_round(loop: "Loop", model, r: int, new: int, result) -> dict:
    """The round record of the student ``model`` trained in round ``r`` (``new`` labels this round): its
    validation (and test) quality, kappa against the last round, labels and teacher queries so far."""
    cfg, d, acc = loop.cfg, loop.run.data, loop.run.acc
    model.to(acc.device)

    def run(split: Split) -> np.ndarray:
        dl = loader(split, make_collate(split, loop.s_feat), cfg.train.eval_batch_size, shuffle=False)
        logits, _ = predict(model, dl, acc, gather=False)
        return logits
    val_logits = run(d.validation)
    pred = val_logits.argmax(-1)
    agreement = kappa(loop.state.rounds[-1].get("_val_pred") if loop.state.rounds else None, pred)
    for old in loop.state.rounds:  # keep only the newest predictions in the state file
        old.pop("_val_pred", None)
    record = {"round": r, "labels": len(loop.state.labels), "new": new, "sources": loop.state.sources(),
              "teacher_queries": len(loop.state.teacher_queries), "epochs_run": result.epochs_run,
              "best_epoch": result.best_epoch + 1, "train_seconds": round(result.seconds, 2),
              "select_seconds": (loop.state.batch_meta[r] if r < len(loop.state.batch_meta) else {}
                                 ).get("select_seconds"),
              "validation": quality(val_logits, d.validation.targets, "classification"), "kappa": agreement}
    if loop.ac.evaluate_test and d.test is not None:
        logits = run(d.test)
        record["test"] = quality(logits, d.test.targets, "classification")
        o = loop.run.overlap.get("test")  # beside it, whenever test repeats training data: its other examples'
        if o is not None and o.count < o.size:
            keep = np.setdiff1d(np.arange(len(d.test)), o.rows)
            record["test_clean"] = quality(logits[keep], d.test.targets[keep], "classification")
    record["_val_pred"] = pred.tolist()
    model.cpu()
    return record


__all__ = ["evaluate_round", "kappa", "round_line", "summary", "write", "waiting", "finish"]
