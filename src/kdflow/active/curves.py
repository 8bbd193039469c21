"""Label-efficiency comparison: several strategies x several seeds, against random and the
same student trained on every label of the pool.

``kdflow active CONFIG --strategies random,entropy,badge --seeds 3 --full`` runs each
(strategy, seed) as its own active-learning run under ``<run>/active-runs/`` (resumable:
a finished one is read back, not rerun), all sharing the teacher and its logit cache,
then writes ``<run>/active_compare.json``, the curve plot (mean ± std over seeds) and
the report. ``labels_to_reach``: the labels each strategy's mean test curve needs to
reach ``target`` (e.g. 95 %) of the all-labels student's mean test metric, linearly
interpolated between rounds; ``None`` when its curve never gets there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import load_config
from ..errors import KdflowError
from .settings import check_strategies


def labels_to_reach(labels: list[float], values: list[float], goal: float) -> Optional[float]:
    """The first label count where the curve reaches ``goal`` (linear interpolation between
    points); ``None`` if it never does."""
    for i, (n, v) in enumerate(zip(labels, values)):
        if v >= goal:
            if i == 0:
                return float(n)
            n0, v0 = labels[i - 1], values[i - 1]
            return float(n0 + (goal - v0) * (n - n0) / (v - v0))
    return None


def ci95(values: list[float]) -> Optional[float]:
    """Half-width of the 95 % confidence interval of the mean of ``values`` (Student's t, ``n - 1`` degrees
    of freedom, sample standard deviation); ``None`` below two values or when one is missing."""
    if len(values) < 2 or any(v is None or not np.isfinite(v) for v in values):
        return None
    from scipy.stats import t
    return float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))


def curve_stats(runs: list[dict], split: str, metric: str) -> dict:
    """Mean, std and 95 % interval half-width of ``split``'s metric per label count over seeds (label counts
    that every seed reached)."""
    by_labels: dict[int, list[float]] = {}
    for run in runs:
        for rec in run["rounds"]:
            if split in rec:
                by_labels.setdefault(rec["labels"], []).append(rec[split][metric])
    full = sorted(n for n, v in by_labels.items() if len(v) == len(runs))
    return {"labels": full, "mean": [float(np.mean(by_labels[n])) for n in full],
            "std": [float(np.std(by_labels[n])) for n in full], "ci95": [ci95(by_labels[n]) for n in full],
            "seeds": len(runs)}


def compare_strategies(config, strategies: list[str], seeds: "int | list[int]" = 3,
                       overrides: Optional[list[str]] = None, full: "bool | int | list[int]" = True,
                       target: float = 0.95, quiet: bool = True, reference: Optional[dict] = None) -> dict:
    """Run ``strategies`` x ``seeds`` and summarise their label efficiency (module docstring).

    ``reference``: the all-labels result of an earlier comparison on the same data (its
    ``reference`` entry), used instead of training it again (e.g. to put a teacher-oracle
    comparison against the gold all-labels student). ``full``: train that reference here, on ``seeds``
    (``True``), on the first ``full`` of them (an int; fewer where it is the expensive part) or on a list.
    """
    cfg = load_config(config, overrides)
    check_strategies(cfg, strategies, "--strategies")
    if not strategies:
        raise KdflowError("--strategies names no strategy; give e.g. random,entropy")
    twice = next((s for s in strategies if strategies.count(s) > 1), None)
    if twice:
        raise KdflowError(f"--strategies names '{twice}' twice; list each strategy once (--seeds repeats them)")
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise KdflowError("--seeds asks for no run; give a count of at least 1 (e.g. 3) or a list such as 0,1,2")
    if full and reference is None and cfg.data.unlabelled and cfg.active.target != "teacher_calls":
        raise KdflowError("The all-labels reference trains on the pool's gold labels, and data.unlabelled has none; "
                          "pass --no-full (full=False) to compare the strategies without it")
    runner = _SubRuns(config, cfg, overrides, quiet)
    results = {strategy: [runner.run(f"{strategy}-s{seed}", [f"active.strategy={strategy}", f"active.seed={seed}",
                                                             f"train.seed={seed}"]) for seed in seeds]
               for strategy in strategies}
    if full and reference is None:
        count = isinstance(full, (int, np.integer)) and not isinstance(full, (bool, np.bool_))
        ref_seeds = seeds[:int(full)] if count else seeds if isinstance(full, (bool, np.bool_)) else list(full)
        reference = _all_labels_reference(runner, ref_seeds, cfg.active.target)
    out = summarise(results, cfg, seeds, target, reference)
    base = cfg.run_dir
    base.mkdir(parents=True, exist_ok=True)
    path = base / "active_compare.json"
    path.write_text(json.dumps(out, indent=2))
    from ..diagnose.report import write_report
    write_report(base)
    out["path"] = str(path)
    return out


class _SubRuns:
    """Each (strategy, seed) is an active-learning run of its own under ``<run>/active-runs``, sharing the
    teacher and its logit cache; a finished one is read back, an unfinished one resumed."""

    def __init__(self, config, cfg, overrides: Optional[list[str]], quiet: bool):
        self.config, self.metric = config, cfg.train.metric
        self.root = cfg.run_dir / "active-runs"
        common = list(overrides or [])
        if (cfg.run_dir / "teacher").is_dir():  # the run's own fine-tuned teacher serves every sub-run
            common.append(f"model.teacher.name={cfg.run_dir / 'teacher'}")
        cache = cfg.distill.cache_dir or str(Path(cfg.run.output_dir) / ".teacher_cache")
        self.common = common + [f"distill.cache_dir={cache}", f"run.output_dir={self.root}",
                                f"run.quiet={str(quiet).lower()}"]

    def run(self, name: str, extra: list[str]) -> dict:
        from .loop import active
        done = self.root / name / "active" / "state.json"
        summary = active(self.config, self.common + extra + [f"run.name={name}"], resume=done.is_file())
        if summary["status"] != "done":
            raise KdflowError(f"Sub-run {name} waits for human labels; compare strategies with oracle gold or teacher")
        print(f"[compare] {name}: " + ", ".join(
            f"{r['labels']}:{r.get('test', r['validation'])[self.metric]:.4f}" for r in summary["rounds"]), flush=True)
        return summary


def _all_labels_reference(runner: _SubRuns, seeds: list[int], target: str = "student") -> dict:
    """The same student trained on every pool label at once (one round, no selection), per seed: gold labels,
    or under ``target: teacher_calls`` the teacher's labels of the whole pool."""
    oracle = "teacher" if target == "teacher_calls" else "gold"
    runs = [runner.run(f"all-labels-s{seed}", [
        "active.strategy=random", f"active.seed={seed}", f"train.seed={seed}", "active.initial=100000000",
        "active.initial_strategy=random", "active.rounds=1", "active.budget=null", "active.cold_start_labels=null",
        f"active.oracle={oracle}"]) for seed in seeds]
    vals = [r["rounds"][-1].get("test", r["rounds"][-1]["validation"])[runner.metric] for r in runs]
    return {"labels": runs[0]["labels"], "mean": float(np.mean(vals)), "std": float(np.std(vals)), "runs": vals}


def summarise(results: dict[str, list[dict]], cfg, seeds: list[int], target: float,
              reference: Optional[dict]) -> dict:
    """Curves (mean and std over seeds), labels to reach ``target`` of the reference, and the fraction
    of random's labels each strategy needs."""
    metric = cfg.train.metric
    split = "test" if all("test" in r["rounds"][0] for rs in results.values() for r in rs) else "validation"
    out = {"metric": metric, "split": split, "target": target, "seeds": seeds, "oracle": cfg.active.oracle,
           "reference": reference, "strategies": {}}
    for strategy, runs in results.items():
        stats = curve_stats(runs, split, metric)
        entry = {**stats, "teacher_queries": float(np.mean([r["teacher_queries"] for r in runs])),
                 "select_seconds": float(np.mean([b["select_seconds"] for r in runs for b in r["batches"]
                                                  if b.get("select_seconds") is not None] or [0.0]))}
        if reference:
            goal = target * reference["mean"]
            entry["labels_to_reach"] = labels_to_reach(stats["labels"], stats["mean"], goal)
            entry["labels_to_reach_per_seed"] = [
                labels_to_reach([x["labels"] for x in r["rounds"]],
                                [x.get(split, {}).get(metric, float("nan")) for x in r["rounds"]], goal) for r in runs]
            per_seed = entry["labels_to_reach_per_seed"]  # an interval only when every seed got there
            entry["labels_to_reach_ci95"] = ci95(per_seed)
            entry["seeds_reaching"] = sum(v is not None for v in per_seed)
        out["strategies"][strategy] = entry
    rnd = out["strategies"].get("random", {}).get("labels_to_reach") if reference else None
    if rnd:
        for entry in out["strategies"].values():
            need = entry.get("labels_to_reach")
            entry["fraction_of_random"] = None if need is None else need / rnd
    return out
