"""Teacher outputs computed once, kept on disk, keyed by example id.

A cache folder belongs to one teacher *fingerprint* (hash of its weights and of
the tokenization settings), so a retrained teacher never serves stale logits.
Within it, one file per compute call (``part-NNNN.pt``: ids + logits) lets the
cache grow across active-learning rounds without rewriting what is there.
Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

import torch

from .errors import KdflowError


class TeacherCache:
    def __init__(self, root: "str | Path", fingerprint: str):
        self.folder = Path(root) / fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, torch.Tensor] = {}
        self.computed = 0  # examples whose outputs this object had to compute
        self.served = 0    # examples answered from disk or memory
        self.reload()

    def reload(self) -> None:
        """Read every part on disk (another process may have written new ones)."""
        for part in sorted(self.folder.glob("part-*.pt")):
            try:
                blob = torch.load(part, weights_only=True)
            except Exception:
                raise KdflowError(f"Teacher cache file '{part}' is damaged; delete it (the outputs it held are "
                                  "recomputed on the next run)") from None
            for i, key in enumerate(blob["ids"]):
                self._rows[key] = blob["logits"][i]

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get(self, ids: Sequence[str], compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """Logits for ``ids`` (``[N, C]``); ``compute(positions)`` runs only for the missing ones."""
        missing = [i for i, key in enumerate(ids) if key not in self._rows]
        if missing:
            logits = compute(missing).detach().float().cpu()
            if logits.shape[0] != len(missing):
                raise RuntimeError(f"teacher returned {logits.shape[0]} rows for {len(missing)} examples")
            new_ids = [ids[i] for i in missing]
            # unique names: two runs sharing the cache never write the same file
            part = self.folder / f"part-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.pt"
            tmp = part.with_suffix(".tmp")
            torch.save({"ids": new_ids, "logits": logits}, tmp)
            tmp.replace(part)  # atomic: a killed run never leaves half a file behind
            for key, row in zip(new_ids, logits):
                self._rows[key] = row
            self.computed += len(missing)
        self.served += len(ids) - len(missing)
        return torch.stack([self._rows[key] for key in ids]) if ids else torch.empty(0)
