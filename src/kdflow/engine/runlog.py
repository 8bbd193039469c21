"""The one writer of a run folder's records: ``log.txt``, ``metrics.csv`` (one row per epoch and
role), TensorBoard events, and ``metrics.json`` (final numbers, one entry per role or command).

Written by the main process only. ``metrics.json`` is replaced atomically (a temporary
file, then a rename), so a reader never sees half of it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import KdflowError
from ..files import read_json, read_text

METRICS_FIX = "repair it, or move it away (kdflow then starts a new one, without the records it held)"


def write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` as a CSV with the union of their keys as columns (first-seen order)."""
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["role", "epoch"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def read_metrics(run_dir: Path) -> dict:
    """The run's ``metrics.json`` (``{}`` when it has none); a damaged one is an error naming it."""
    path = Path(run_dir) / "metrics.json"
    return read_json(path, f"'{path}'", METRICS_FIX, dict) if path.exists() else {}


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (numpy's too) replaced by None, so it is valid JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy or torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def update_metrics(run_dir: Path, entries: dict, drop: Iterable[str] = ()) -> None:
    """Set ``entries`` (``{"student": {...}}``, ``{"deploy": [...]}``) in ``metrics.json`` and forget the
    keys in ``drop``; every other entry stays as it was. A NaN or infinite number is written as null:
    the file stays JSON that every reader accepts."""
    blob = {k: v for k, v in read_metrics(run_dir).items() if k not in set(drop)}
    blob.update(entries)
    path = Path(run_dir) / "metrics.json"
    tmp = path.with_name(f".metrics.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(finite(blob), indent=2, allow_nan=False))
    tmp.replace(path)


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``metrics.csv`` (``[]`` when there is none); a damaged file (not text, no role or epoch
    column, a row that is no epoch of a role) is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    what = f"'{path}'"
    try:
        rows = list(csv.DictReader(read_text(path, what, METRICS_FIX).splitlines()))
    except csv.Error as err:
        raise KdflowError(f"{what} is not valid CSV ({err}); {METRICS_FIX}") from None
    for line, row in enumerate(rows, 2):
        if not _well_formed(row):
            raise KdflowError(f"Line {line} of {what} is not a row of role, epoch and numbers as kdflow writes "
                              f"them; {METRICS_FIX}")
    return rows


def _well_formed(row: dict) -> bool:
    """A role, a whole epoch, and numbers (or nothing) in every other column, as many cells as columns."""
    if None in row or None in row.values() or not row.get("role") or not (row.get("epoch") or "").isdigit():
        return False
    for key, cell in row.items():
        if key not in ("role", "epoch") and cell.strip():
            try:
                float(cell)
            except ValueError:
                return False
    return True


class RunLog:
    """Log file + per-epoch CSV + TensorBoard, written by the main process only."""

    def __init__(self, run_dir: Path, accelerator, quiet: bool = False, metrics_file: str = "metrics.csv",
                 tensorboard: str = "tensorboard"):
        self.run_dir, self.acc, self.quiet = run_dir, accelerator, quiet
        self.main = accelerator.is_main_process
        self.metrics_file, self.tensorboard = metrics_file, tensorboard  # relative to run_dir
        self._tb: dict = {}
        if self.main:  # damaged records are refused now, before any work, not when the first epoch ends
            read_metrics(run_dir)
            read_rows(run_dir / metrics_file)
            run_dir.mkdir(parents=True, exist_ok=True)

    def info(self, message: str) -> None:
        if not self.main:
            return
        with open(self.run_dir / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        if not self.quiet:
            print(message, flush=True)

    def epoch(self, role: str, epoch: int, row: dict) -> None:
        """One row of ``metrics.csv`` (replacing an earlier row of the same role and epoch) and its scalars."""
        if not self.main:
            return
        path = self.run_dir / self.metrics_file
        path.parent.mkdir(parents=True, exist_ok=True)
        full = {"role": role, "epoch": epoch, **{k: round(v, 6) if isinstance(v, float) else v
                                                  for k, v in row.items()}}
        rows = read_rows(path)
        write_csv(path, [r for r in rows if not (r["role"] == role and int(r["epoch"]) == epoch)] + [full])
        if role not in self._tb:
            from torch.utils.tensorboard import SummaryWriter
            self._tb[role] = SummaryWriter(str(self.run_dir / self.tensorboard / role))
        for key, value in row.items():
            if isinstance(value, (int, float)):
                self._tb[role].add_scalar(key, value, epoch)
        self._tb[role].flush()

    def final(self, key: str, entry) -> None:
        """``metrics.json[key] = entry``."""
        if self.main:
            update_metrics(self.run_dir, {key: entry})

    def close(self) -> None:
        for writer in self._tb.values():
            writer.close()
        self._tb.clear()

    @staticmethod
    def drop_rows(run_dir: Path, roles: set) -> None:
        """Forget the per-epoch rows and final metrics of ``roles`` (on --overwrite)."""
        path = run_dir / "metrics.csv"
        if path.is_file():
            write_csv(path, [r for r in read_rows(path) if r["role"] not in roles])
        if (run_dir / "metrics.json").is_file():
            update_metrics(run_dir, {}, drop=roles)


__all__ = ["RunLog", "write_csv", "read_metrics", "read_rows", "finite", "update_metrics", "METRICS_FIX"]
