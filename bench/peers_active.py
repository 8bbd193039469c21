"""kdflow's active learning beside small-text 1.4.1, in one run (issue 17).

    python bench/peers_active.py --data-root ../shared/data [--dataset agnews] [--seeds 5]

Four systems choose which pool examples get a gold label, for the same student, teacher, pool, seed set
and budget:

- ``kdflow_random`` and ``kdflow_margin``: ``kdflow active`` with ``strategy: random`` / ``margin``;
- ``smalltext_random`` and ``smalltext_breakingties``: small-text's ``RandomSampling`` and ``BreakingTies``
  query strategies choose instead. They run inside kdflow's loop, overriding its `Loop.choose`, so
  that everything else is the same code (the student trained from scratch each round on the labels with
  the teacher's cached soft targets, the evaluation, the seeds); small-text's classifier is a thin adapter
  whose ``predict_proba`` runs the round's student over the rows small-text asks for (BreakingTies asks
  for the whole pool, labelled rows included: that is its design, and its time counts).

Reported per system: test accuracy per label count (mean and Student-t 95 % interval over seeds), whether
kdflow's curves lie within small-text's intervals or above them, and the selection time per round
(scoring the pool and choosing), kdflow's divided by small-text's (goal <= 1).

small-text is not a kdflow dependency: the script creates ``.venv-peers/`` (torch 2.13.0 CPU, kdflow,
small-text 1.4.1) and re-runs itself there. Finished sub-runs under ``--out`` are read back, not rerun.
The data set, its split and the teacher are bench/active.py's (``prepare``, ``SIZES``); the teacher is
fine-tuned here when ``--out`` has none.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-peers"
SYSTEMS = ("kdflow_random", "kdflow_margin", "smalltext_random", "smalltext_breakingties")


def ensure_env() -> None:
    """Re-run inside .venv-peers (created on first use; small-text added when it lacks it)."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    pip = [str(python), "-m", "pip", "install", "-q"]
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + ["-e", f"{ROOT}[hf]"], check=True)
    if subprocess.run([str(python), "-c", "import small_text"], capture_output=True).returncode:
        subprocess.run(pip + ["small-text==1.4.1"], check=True)
    os.execv(str(python), [str(python), *sys.argv])


def bench_active():
    """bench/active.py as a module (its data preparation and config)."""
    spec = importlib.util.spec_from_file_location("bench_active", Path(__file__).with_name("active.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class StudentProbs:
    """small-text's view of the round's student: ``predict_proba`` over the dataset rows it is given, whose
    single feature is the pool position."""

    def __init__(self, loop):
        self.loop = loop  # kdflow.active.loop.Loop: its context (the run) and round trainer

    def predict_proba(self, dataset):
        import numpy as np
        import torch

        from kdflow import pipeline
        from kdflow.data import loader, make_collate
        from kdflow.engine.train import predict
        ctx = self.loop.ctx
        model, tok = self.loop.trainer.view(ctx)  # the round's student and tokenizer, as kdflow's margin reads them
        rows = np.asarray(dataset.x[:, 0], dtype=np.int64)
        part = ctx.pool.subset(rows)
        dl = loader(part, make_collate(part, pipeline.featurizer(ctx.run, tok)), ctx.ac.pool_batch_size,
                    shuffle=False)
        with torch.no_grad():
            logits, _ = predict(model.to(ctx.run.acc.device), dl, ctx.run.acc, gather=False)
        return torch.softmax(torch.from_numpy(logits), -1).numpy()


def peer_loop(query_strategy):
    """kdflow's loop with small-text's ``query_strategy`` choosing each batch (the rest is kdflow's)."""
    import numpy as np
    from small_text.data import SklearnDataset

    from kdflow.active.loop import Loop

    class PeerLoop(Loop):
        def choose(self, k, cands, b):
            ctx = self.ctx
            np.random.seed(ctx.ac.seed * 100_003 + b)  # RandomSampling draws from numpy's global generator
            n = len(ctx.pool)
            dataset = SklearnDataset(np.arange(n).reshape(-1, 1), np.zeros(n, dtype=np.int64),
                                     target_labels=np.arange(len(ctx.labels)))
            labelled = ctx.state.labelled_positions
            picked = query_strategy.query(StudentProbs(self), dataset, cands, labelled,  # small-text refuses n > pool
                                          np.zeros(len(labelled), dtype=np.int64), n=min(k, len(cands)))
            return np.asarray(picked, dtype=np.int64), str(query_strategy)

    return PeerLoop


def run_system(system: str, seed: int, cfg: dict, root: Path) -> dict:
    """One (system, seed) sub-run; a finished one is read back."""
    import kdflow
    from kdflow.active import loop as loop_module
    name = f"{system}-s{seed}"
    done = (root / name / "active" / "state.json").is_file()
    strategy = "margin" if system == "kdflow_margin" else "random"
    overrides = [f"active.strategy={strategy}", f"active.seed={seed}", f"train.seed={seed}",
                 f"run.output_dir={root}", f"run.name={name}"]
    original = loop_module.Loop
    if system.startswith("smalltext"):
        from small_text.query_strategies import BreakingTies, RandomSampling
        loop_module.Loop = peer_loop(BreakingTies() if system.endswith("breakingties") else RandomSampling())
    try:
        summary = kdflow.active(cfg, overrides, resume=done)
    finally:
        loop_module.Loop = original
    rounds = [(r["labels"], r["test"]["accuracy"]) for r in summary["rounds"]]
    print(f"[peers] {name}: " + ", ".join(f"{n}:{a:.4f}" for n, a in rounds), flush=True)
    return summary


def compare(results: dict) -> dict:
    """Curves with 95 % intervals, kdflow within small-text's intervals (or above), selection-time ratios."""
    import numpy as np

    from kdflow.active.curves import curve_stats
    out = {"systems": {}, "pairs": {}}
    for system, runs in results.items():
        stats = curve_stats(runs, "test", "accuracy")
        secs = [b["select_seconds"] for r in runs for b in r["batches"] if b.get("select_seconds") is not None]
        out["systems"][system] = {**stats, "select_seconds": float(np.mean(secs)) if secs else None,
                                  "select_seconds_runs": secs}
    for ours, peer in (("kdflow_margin", "smalltext_breakingties"), ("kdflow_random", "smalltext_random")):
        a, b = out["systems"][ours], out["systems"][peer]
        points = []
        for n, mean, in zip(a["labels"], a["mean"]):
            if n not in b["labels"]:
                continue
            j = b["labels"].index(n)
            low = b["mean"][j] - (b["ci95"][j] or 0.0)
            points.append({"labels": n, "kdflow": mean, "peer": b["mean"][j], "peer_low": low, "ok": mean >= low})
        ratio = a["select_seconds"] / b["select_seconds"] if a["select_seconds"] is not None and b["select_seconds"] \
            else None
        out["pairs"][f"{ours} vs {peer}"] = {"points": points, "within_or_above": all(p["ok"] for p in points),
                                             "select_time_ratio": ratio}
    return out


def table(res: dict) -> str:
    systems = res["systems"]
    labels = systems["kdflow_random"]["labels"]
    lines = ["| system | " + " | ".join(f"{n} labels" for n in labels) + " | selection s / round |",
             "|---|" + "---:|" * (len(labels) + 1)]
    for name, st in systems.items():
        cells = [f"{m:.4f} ± {c:.4f}" if c is not None else f"{m:.4f}" for m, c in zip(st["mean"], st["ci95"])]
        secs = "n/a" if st["select_seconds"] is None else f"{st['select_seconds']:.3f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {secs} |")
    lines.append("")
    for pair, p in res["pairs"].items():
        ratio = "n/a" if p["select_time_ratio"] is None else f"{p['select_time_ratio']:.2f}"
        lines.append(f"- {pair}: kdflow within the peer's 95 % interval or above at every point: "
                     f"{'yes' if p['within_or_above'] else 'no'}; selection time ratio {ratio}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True, help="folder holding agnews/, sst2/ and clinc150/")
    ap.add_argument("--dataset", default="agnews", choices=["agnews", "sst2", "clinc"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--initial", type=int, default=50)
    ap.add_argument("--per-round", type=int, default=50)
    ap.add_argument("--growth", type=float, default=1.6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--teacher", default=None,
                    help="a fine-tuned teacher folder to reuse (default: fine-tune one on the teacher split)")
    ap.add_argument("--out", default="bench/out/peers_active")
    ap.add_argument("--json", default="bench/results/peers_active.json")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    ensure_env()
    import small_text
    import torch

    import kdflow
    torch.set_num_threads(args.threads)
    ba = bench_active()
    sizing = argparse.Namespace(**{k: None for k in ("teacher_examples", "teacher_epochs", "pool", "validation",
                                                     "test", "max_length")},
                                student_layers=2, student_hidden=128, epochs=10, lr=2e-3, alpha=0.9,
                                initial=args.initial, per_round=args.per_round, growth=args.growth,
                                rounds=args.rounds, min_steps=60)
    folder = Path(args.out) / args.dataset
    files = ba.prepare(args.dataset, Path(args.data_root), folder / "data", sizing)
    teacher_dir = Path(args.teacher) if args.teacher else folder / "teacher-run" / "teacher"
    if not teacher_dir.is_dir():
        kdflow.teach(ba.config(files, folder, "teacher-run", sizing, data="teacher"))
    cfg = ba.config(files, folder, "peers", sizing, teacher=str(teacher_dir))
    cfg["active"]["initial_strategy"] = "random"
    cfg["run"]["quiet"] = True
    started = time.perf_counter()
    results = {s: [run_system(s, seed, cfg, folder / "runs") for seed in range(args.seeds)] for s in SYSTEMS}
    res = compare(results)
    res.update(args=vars(args), sizes=files["sizes"], machine=platform.platform(), cpus=os.cpu_count(),
               torch=torch.__version__, small_text=small_text.__version__ if hasattr(small_text, "__version__")
               else "1.4.1", minutes=round((time.perf_counter() - started) / 60, 1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(table(res))


if __name__ == "__main__":
    main()
