"""Critical-layer distillation on a minimal data set: which of its parts help, and by how much.

Variants (same student architecture, same data, same epochs; seeds 0..S-1):

  logit       Hinton KD on the logits only (teacher logits cached once for all variants)
  +last3      + hidden-state MSE and attention KL on the teacher's last 3 blocks
  +auto3      + the same on the 3 blocks ranked most critical (drop-layer score)
  +init       + the student's blocks initialised from teacher blocks (DistilBERT-style), with last:3

    python bench/critical.py --data ../shared/data/clinc150/data_small.json \
        --teacher runs/clinc-small/teacher --seeds 3 --json bench/out/critical.json

The teacher must be a saved classifier for the data's labels (e.g. `kdflow teach`
on CLINC150). Prints a Markdown table: test accuracy mean ± std over seeds and
training time per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import kdflow  # noqa: E402

VARIANTS = {
    "logit": {},
    "+last3": {"distill": {"intermediate": True, "layers": "last:3"}},
    "+auto3": {"distill": {"intermediate": True, "layers": "auto:3"}},
    "+init": {"distill": {"intermediate": True, "layers": "last:3"}, "student": {"init_from_teacher": True}},
}


def config(args, out: Path, variant: str, seed: int) -> dict:
    extra = VARIANTS[variant]
    return {
        "model": {"teacher": {"name": args.teacher},
                  # explicit, as recorded in BENCHMARKS (the defaults became the recipe later: init and pruning on)
                  "student": {"num_layers": args.layers, "hidden_size": args.hidden, "num_heads": args.heads,
                              "intermediate_size": 4 * args.hidden, "init_from_teacher": False,
                              "prune_vocab": False, **extra.get("student", {})}},
        "data": {"path": args.data, "format": "clinc", "max_length": args.max_length, "seed": 0},
        "train": {"epochs": args.epochs, "batch_size": 32, "patience": None, "seed": seed,
                  "lr": args.lr_init if "init_from_teacher" in extra.get("student", {}) and args.lr_init else args.lr},
        "distill": {"mode": "offline", "temperature": 4.0, "alpha": 0.9, "cache_dir": str(out / "cache"),
                    "layer_score_examples": 1500, **extra.get("distill", {})},
        # one run folder per seed and variant, but the layer scores are shared via the same run for auto
        "run": {"name": f"{variant.strip('+')}-s{seed}", "output_dir": str(out), "quiet": True},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True, help="saved teacher folder fine-tuned on these labels")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)  # a 2-epoch probe: better than 1e-4 for both inits
    ap.add_argument("--lr-init", type=float, default=None,
                    help="learning rate of the variants initialised from teacher blocks (default: --lr)")
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out or tempfile.mkdtemp(prefix="kdflow-critical-"))
    variants = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    layer_scores = None
    for seed in range(args.seeds):
        for v in variants:
            raw = config(args, out, v, seed)
            if v == "+auto3" and layer_scores is not None:  # score the teacher once, reuse for every seed
                folder = out / raw["run"]["name"] / "layers"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "layers.json").write_text(layer_scores)
            t0 = time.perf_counter()
            entry = kdflow.distill(raw, overwrite=True)
            wall = time.perf_counter() - t0
            if v == "+auto3" and layer_scores is None:
                layer_scores = (out / raw["run"]["name"] / "layers" / "layers.json").read_text()
            row = {"seed": seed, "test_accuracy": entry["test"]["accuracy"],
                   "val_accuracy": entry["validation"]["accuracy"], "train_seconds": entry["train_seconds"],
                   "wall_seconds": round(wall, 1), "parameters": entry["parameters"],
                   "layers": entry["distill"]["layers"], "teacher_test": entry.get("teacher_test", {}).get("accuracy")}
            results[v].append(row)
            print(f"[{v} seed {seed}] test {row['test_accuracy']:.4f} val {row['val_accuracy']:.4f} "
                  f"train {row['train_seconds']:.0f}s", flush=True)
    summary = {}
    for v, rows in results.items():
        acc = [r["test_accuracy"] for r in rows]
        summary[v] = {"mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                      "train_seconds_mean": statistics.mean(r["train_seconds"] for r in rows), "runs": rows}
    base = summary[variants[0]]["mean"]
    print("\n| variant | test accuracy (mean ± std) | vs logit KD | train s / run | layers |")
    print("|---|---:|---:|---:|---|")
    for v in variants:
        s = summary[v]
        layers = "; ".join(sorted({f"{p['student']}<-{p['teacher']}" for p in s["runs"][0]["layers"]})) or "-"
        print(f"| {v} | {s['mean']:.4f} ± {s['std']:.4f} | {100 * (s['mean'] - base):+.2f} pt | "
              f"{s['train_seconds_mean']:.0f} | {layers} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": platform.platform(),
                                               "cpus": os.cpu_count(), "python": sys.version.split()[0],
                                               "torch": torch.__version__, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
