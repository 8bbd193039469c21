"""Pareto fronts, multi-objective successive halving and the selection rule of ``kdflow frontier``.

Plain Python on plain numbers, no model: every point has a *cost* (lower is better:
parameters, latency, size) and a *score* (higher is better: the validation metric).

* :func:`fronts` — non-dominated sorting: the first front holds the points no other
  point beats on both; the second those only the first beats; and so on.
* :func:`halve` — one rung of successive halving with two objectives (in the manner of
  multi-objective ASHA, Schmucker et al. 2021): keep the best ``1/eta`` by front, then
  score, but never drop a point of the first front (a small model that is less
  accurate is a trade-off, not a loser); with a score target, stop every candidate
  costlier than the cheapest that already meets it.
* :func:`select` — the student that meets a budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a = (cost, score)`` is at least as cheap and as good as ``b``, and strictly better on one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def fronts(points: Sequence[tuple[float, float]]) -> list[list[int]]:
    """Indices of ``points`` (cost, score) by Pareto front, first front first, each sorted by cost."""
    left, out = set(range(len(points))), []
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        out.append(sorted(front, key=lambda i: (points[i][0], -points[i][1])))
        left -= set(front)
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The first front: the points nothing beats on both cost and score."""
    return fronts(points)[0] if points else []


def halve(points: dict[str, tuple[float, float]], eta: float,
          target: Optional[float] = None) -> dict[str, str]:
    """One rung: ``{name: why}`` for every candidate to stop; the others go on.

    ``points``: name -> (cost, score so far). ``target``: a score that is enough (a
    retention goal times the teacher's); a candidate costlier than the cheapest one
    already at or above it is stopped first.
    """
    names = list(points)
    stop: dict[str, str] = {}
    meeting = [n for n in names if target is not None and points[n][1] >= target]
    if meeting:
        cheapest = min(meeting, key=lambda n: points[n][0])
        for n in names:
            if points[n][0] > points[cheapest][0]:
                stop[n] = f"costlier than {cheapest}, which already meets the target"
    alive = [n for n in names if n not in stop]
    if len(alive) <= 1:
        return stop
    pts = [points[n] for n in alive]
    ranked = [(rank, i) for rank, front in enumerate(fronts(pts)) for i in sorted(front, key=lambda i: -pts[i][1])]
    keep = max(math.ceil(len(alive) / eta), sum(1 for rank, _ in ranked if rank == 0))
    for rank, i in ranked[keep:]:
        better = next(alive[j] for j in range(len(alive)) if dominates(pts[j], pts[i]))
        stop[alive[i]] = f"on Pareto front {rank + 1}: {better} is smaller and scores higher"
    return stop


@dataclass
class Budget:
    """What the chosen student must meet (on validation): each limit is optional."""

    retention: Optional[float] = None  # score / teacher score at least this
    latency_ms: Optional[float] = None  # p50 latency at most this
    size_mb: Optional[float] = None  # size on disk at most this

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.retention, self.latency_ms, self.size_mb))

    def describe(self) -> str:
        parts = [f"retention >= {self.retention:.1%}" if self.retention is not None else "",
                 f"p50 latency <= {self.latency_ms:g} ms" if self.latency_ms is not None else "",
                 f"size <= {self.size_mb:g} MB" if self.size_mb is not None else ""]
        return ", ".join(p for p in parts if p)


def meets(row: dict, budget: Budget, metric: str, teacher_score: float) -> bool:
    """Does this measured form (a row with ``metric``, ``latency_ms_p50`` and ``size_mb``) meet ``budget``?"""
    if budget.retention is not None and row[metric] < budget.retention * teacher_score:
        return False
    if budget.latency_ms is not None and row["latency_ms_p50"] > budget.latency_ms:
        return False
    return budget.size_mb is None or row["size_mb"] <= budget.size_mb


def select(rows: Sequence[dict], budget: Budget, metric: str, teacher_score: float) -> Optional[int]:
    """The index of the chosen form among ``rows``, or None when none meets ``budget``.

    With a retention goal: the smallest form that meets every limit (then the fastest). With
    only latency or size limits: the best-scoring form within them (then the smallest).
    """
    ok = [i for i, r in enumerate(rows) if meets(r, budget, metric, teacher_score)]
    if not ok:
        return None
    if budget.retention is not None:
        return min(ok, key=lambda i: (rows[i]["size_mb"], rows[i]["latency_ms_p50"], -rows[i][metric]))
    return min(ok, key=lambda i: (-rows[i][metric], rows[i]["size_mb"], rows[i]["latency_ms_p50"]))


__all__ = ["dominates", "fronts", "pareto_front", "halve", "Budget", "meets", "select"]
