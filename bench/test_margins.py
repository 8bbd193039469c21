"""The margins of the test suite's "it learnt" checks (``tests/margins.py``: ``at_least`` / ``at_most``).

Every test that calls them is run again on other seeds (``KDFLOW_TEST_SEED``: the tiny models' initialisation and
every config's seeds) with PyTorch's native kernels and with its plain ones (``ATEN_CPU_CAPABILITY=default``: other
floating-point results, as on another CPU); each value a check asserted is appended to a JSON-lines file as it
comes, so a stopped run loses nothing and a rerun skips the (seed, kernels) pairs already done. ``--report`` prints
each check's lowest (or highest) value against its bound: the margin BENCHMARKS.md quotes.

    python bench/test_margins.py --seeds 10                # seeds 0..9, native and plain kernels
    python bench/test_margins.py --seeds 10 --select test_glue   # again for the tests whose training changed
    python bench/test_margins.py --report                  # the table (a check's newest runs only)
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "test_margins.jsonl"
RUNS = ROOT / "bench" / "results" / "test_margins-runs.jsonl"


def margin_tests() -> list[str]:
    """Node ids of the test functions that call ``at_least`` or ``at_most``."""
    out = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and any(
                    isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("at_least", "at_most")
                    for n in ast.walk(node)):
                out.append(f"tests/{path.name}::{node.name}")
    return out


def done(select: str) -> set[tuple[int, str]]:
    if not RUNS.is_file():
        return set()
    return {(r["seed"], r["kernels"]) for r in map(json.loads, RUNS.read_text().splitlines())
            if r.get("select", "") == select}


def run(seed: int, kernels: str, tests: list[str], select: str = "") -> None:
    env = {**os.environ, "KDFLOW_TEST_SEED": str(seed), "KDFLOW_MARGINS": str(OUT), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    if kernels == "default":
        env["ATEN_CPU_CAPABILITY"] = "default"
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                           *tests], cwd=ROOT, env=env, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    with open(RUNS, "a") as fh:
        fh.write(json.dumps({"seed": seed, "kernels": kernels, "select": select, "exit": proc.returncode,
                             "commit": commit, "summary": tail, "seconds": round(time.time() - started, 1)}) + "\n")
    print(f"seed {seed} kernels {kernels}: {tail} ({time.time() - started:.0f} s)", flush=True)


def report() -> str:
    rows = [json.loads(line) for line in OUT.read_text().splitlines()]
    newest: dict[tuple, dict] = {}  # a check measured again (its test changed) counts by its newest values
    for r in rows:
        newest[(r["check"], r["seed"], r["kernels"])] = r
    rows = list(newest.values())
    runs = [json.loads(line) for line in RUNS.read_text().splitlines()] if RUNS.is_file() else []
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["check"], []).append(r)
    failed = [f"seed {r['seed']} {r['kernels']}: {r['summary']}" for r in runs if r["exit"]]
    lines = [f"{len(runs)} runs ({', '.join(sorted({str(r['seed']) for r in runs}, key=int))} x "
             f"{', '.join(sorted({r['kernels'] for r in runs}))} kernels; commits "
             f"{', '.join(sorted({r.get('commit', '?') for r in runs}))}); runs not green: "
             + ("; ".join(failed) or "none"), "",
             "| check | bound | n | lowest | mean | highest | margin |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rs in sorted(by.items()):
        values = [r["value"] for r in rs]
        side, bound = rs[-1]["side"], rs[-1]["bound"]
        margin = min(values) - bound if side == ">=" else bound - max(values)
        lines.append(f"| {name} | {side} {bound:g} | {len(values)} | {min(values):.4f} | "
                     f"{sum(values) / len(values):.4f} | {max(values):.4f} | {margin:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--kernels", default="native,default")
    p.add_argument("--select", default="", help="only the tests whose node id contains one of these, comma-separated (default: all)")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.report:
        print(report())
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tests = [t for t in margin_tests() if any(part in t for part in args.select.split(","))]
    finished = done(args.select)
    print(f"{len(tests)} tests: {' '.join(tests)}", flush=True)
    for seed in range(args.seeds):
        for kernels in args.kernels.split(","):
            if (seed, kernels) not in finished:
                run(seed, kernels, tests, args.select)


if __name__ == "__main__":
    main()
