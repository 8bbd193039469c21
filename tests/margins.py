"""Floors on what a tiny training learnt, each far below what it reaches: the only way a test here may judge a
training's quality.

A test never asserts that two trainings whose floating-point order differs (processes, threads, another CPU's
kernels, another batch split) land close to each other. Where it asserts that one training *learnt* something
(a metric above chance), it states the floor through :func:`at_least` / :func:`at_most`, and the floor sits far
below the lowest value measured for it: ``bench/test_margins.py`` runs the tests that call these over ten
seeds (``KDFLOW_TEST_SEED``, which reseeds the tiny models and every config's seeds), with PyTorch's AVX
kernels and with its plain ones (``ATEN_CPU_CAPABILITY=default``), and records each value asserted here
(``KDFLOW_MARGINS``: a JSON-lines file); BENCHMARKS.md, "Test margins", holds the table of lowest value,
floor and margin per check.

The rule for a floor: at most halfway between chance (or "no progress": a loss ratio of 1) and the lowest value
measured (for a ceiling, the highest), rounded to 0.05 -- it beats chance by half of what every seed reached,
e.g. 0.35 for a 4-class accuracy whose lowest over 20 runs was 0.5. Where a training does not beat chance on
every seed (a tiny teacher stuck at 0.45 on a binary task), the test claims nothing of its quality, or its
training was made steadier first; a test that cannot meet the rule says why in a comment.
"""

from __future__ import annotations

import json
import os

SEED = int(os.environ.get("KDFLOW_TEST_SEED", "0"))  # 0: the suite as it always runs
RECORD = os.environ.get("KDFLOW_MARGINS")


def _record(name: str, value: float, bound: float, side: str) -> None:
    if RECORD:
        with open(RECORD, "a") as fh:
            fh.write(json.dumps({"check": name, "value": float(value), "bound": bound, "side": side, "seed": SEED,
                                 "kernels": os.environ.get("ATEN_CPU_CAPABILITY", "native")}) + "\n")


def at_least(name: str, value: float, floor: float) -> None:
    """``value`` (what a training reached) is at least ``floor``; ``name`` identifies the check in the bench."""
    _record(name, value, floor, ">=")
    assert value >= floor, f"{name}: {value:.4f} is below its floor {floor}"


def at_most(name: str, value: float, ceiling: float) -> None:
    _record(name, value, ceiling, "<=")
    assert value <= ceiling, f"{name}: {value:.4f} is above its ceiling {ceiling}"
