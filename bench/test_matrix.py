"""The test suite on other machines, simulated: the same ``pytest tests`` under each of

* ``default``  -- as ``make test`` runs it (random order: pytest-randomly, a new seed each run);
* ``threads1`` -- ``OMP_NUM_THREADS=1`` (other reduction orders in every kernel);
* ``plain``    -- ``ATEN_CPU_CAPABILITY=default`` (PyTorch's plain kernels instead of AVX2/AVX-512: other
  floating-point results, as on another CPU);
* ``fileorder`` -- ``-p no:randomly`` (the files' own order: order independence both ways);
* ``seed1`` .. ``seed3`` (on request: ``--only seed1,seed2,seed3``) -- ``KDFLOW_TEST_SEED=1..3`` (every config's
  seeds and the tiny models' initialisation moved: other seed sets, held-out splits and batch orders, so no
  assertion leans on one lucky draw).

Each configuration runs ``--runs`` times (3 by default, each random one with its own order seed); every run's pass /
fail counts, its random seed and its wall time are appended to ``bench/results/test_matrix.jsonl`` as it ends.
``make test-matrix`` runs it; BENCHMARKS.md ("Test matrix") records a run from a fresh clone.

    python bench/test_matrix.py [--runs 3] [--only plain,threads1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "test_matrix.jsonl"
CONFIGS = {"default": ({}, []), "threads1": ({"OMP_NUM_THREADS": "1"}, []),
           "plain": ({"ATEN_CPU_CAPABILITY": "default"}, []), "fileorder": ({}, ["-p", "no:randomly"]),
           **{f"seed{k}": ({"KDFLOW_TEST_SEED": str(k)}, []) for k in (1, 2, 3)}}


def run(name: str, index: int) -> dict:
    extra_env, extra_args = CONFIGS[name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **extra_env}
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra_args, "tests"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.time() - started
    text = proc.stdout + proc.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", text.splitlines()[-1])}
    seed = re.search(r"--randomly-seed=(\d+)", text)  # tests/conftest.py prints it at -q too
    failed = re.findall(r"^FAILED (\S+)", text, re.M) + re.findall(r"^ERROR (\S+)", text, re.M)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"config": name, "run": index, "exit": proc.returncode, **counts, "failed_tests": failed,
            "randomly_seed": int(seed.group(1)) if seed else None, "seconds": round(seconds, 1),
            "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
            "cores": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", default="default,threads1,plain,fileorder",
                   help="configurations, comma-separated (default: the four machines; seed1..seed3 on request)")
    args = p.parse_args()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    green = True
    for index in range(args.runs):  # one of each per round: drift on the machine hits them alike
        for name in args.only.split(","):
            row = run(name, index)
            green &= row["exit"] == 0
            with open(OUT, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{name} run {index}: exit {row['exit']}, {row.get('passed', 0)} passed, "
                  f"{row.get('failed', 0)} failed, {row.get('skipped', 0)} skipped, {row['seconds'] / 60:.1f} min"
                  + (f", seed {row['randomly_seed']}" if row["randomly_seed"] else "")
                  + (f"; failed: {' '.join(row['failed_tests'])}" if row["failed_tests"] else ""), flush=True)
    sys.exit(0 if green else 1)


if __name__ == "__main__":
    main()
