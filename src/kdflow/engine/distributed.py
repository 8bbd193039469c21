"""Several processes (``torchrun``, ``accelerate launch``): who writes, and how a pass over examples is
split across the processes and joined again.

Every process runs the same command on the same data. Training is split by accelerate (each process a
shard of every batch, gradients averaged). Passes that only *read* a model over many examples (the
teacher's outputs for the cache, active learning's pool scoring) are split here: process ``r`` of ``W``
takes positions ``r, r + W, r + 2W, …`` (no padding, so nothing is counted twice), and the results are
gathered by position, so every process ends with the whole answer in the original order. Files are
written by process 0 only.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes files (the only one, or rank 0)."""
    return rank() == 0


def _group_ready() -> bool:
    import torch.distributed as dist
    return world() > 1 and dist.is_available() and dist.is_initialized()


def gather_objects(obj) -> list:
    """``[obj of process 0, obj of process 1, …]`` on every process (``[obj]`` in one process)."""
    if not _group_ready():
        return [obj]
    import torch.distributed as dist
    out: list = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj):
    """Process 0's ``obj`` on every process (``obj`` itself in one process)."""
    if not _group_ready():
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _group_ready():
        import torch.distributed as dist
        dist.barrier()


def my_share(positions: Sequence[int]) -> list:
    """This process's positions of a pass split across the processes."""
    positions = list(positions)
    return positions[rank()::world()] if _group_ready() else positions


def sharded_rows(positions: Sequence[int], compute: Callable[[list], torch.Tensor]) -> torch.Tensor:
    """``compute(positions)`` (rows in that order) with the positions split across the processes and the
    rows gathered back; in one process, just ``compute(positions)``."""
    positions = list(positions)
    if not _group_ready():
        return compute(positions)
    mine = my_share(positions)
    local = compute(mine).detach().cpu() if mine else None
    sent = gather_objects((positions, mine, local))
    if any(p[0] != positions for p in sent):
        raise RuntimeError("internal: the processes split different positions")  # a collective misused
    parts = [(pos, rows) for _, pos, rows in sent if rows is not None]
    if not parts:
        return compute([])
    out = torch.full((len(positions), *parts[0][1].shape[1:]), float("nan"), dtype=parts[0][1].dtype)
    where = {p: i for i, p in enumerate(positions)}
    filled = 0
    for pos, rows in parts:
        out[torch.as_tensor([where[p] for p in pos], dtype=torch.long)] = rows
        filled += len(pos)
    if filled != len(positions):
        raise RuntimeError(f"internal: {filled} rows gathered for {len(positions)} positions")
    return out


def join_rows(n: int, parts: list[tuple[np.ndarray, np.ndarray]], fill: float = 0.0) -> np.ndarray:
    """One ``[n, ...]`` array from each process's (rows, values) pairs; rows no process sent hold ``fill``."""
    parts = [(r, v) for r, v in parts if v is not None and len(r)]
    if not parts:
        return np.full(n, fill)
    first = parts[0][1]
    out = np.full((n, *first.shape[1:]), fill, dtype=first.dtype)
    for rows, values in parts:
        out[rows] = values
    return out


__all__ = ["world", "rank", "is_main", "gather_objects", "from_main", "barrier", "my_share", "sharded_rows",
           "join_rows"]
