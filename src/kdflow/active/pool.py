"""Labelled / unlabelled / ignored bookkeeping by stable example id, saved after every step.

``<run>/active/state.json`` holds everything a killed or paused run needs to go on:
the labels bought so far (per example id: label, who gave it, in which batch), the
ignored ids (with the reason), one record per finished round, the teacher queries
spent, and the batch waiting for human labels, if any. It is written atomically
(temp file + rename), so a kill never leaves half a state behind.

Batch ``b`` is what entered the labelled set before round ``b`` trained; so a run
whose last batch has no round record yet resumes by training that round, and one
whose rounds have caught up with the batches resumes by selecting the next batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..engine.distributed import is_main
from ..errors import KdflowError

STATE_VERSION = 1


@dataclass
class PoolState:
    pool_ids: list[str]
    labels: dict[str, dict] = field(default_factory=dict)   # id -> {"label": name, "source": ..., "batch": b}
    ignored: dict[str, str] = field(default_factory=dict)   # id -> reason
    batches: list[list[str]] = field(default_factory=list)  # ids labelled in each acquisition batch
    batch_meta: list[dict] = field(default_factory=list)    # per batch: strategy, size, selection seconds
    rounds: list[dict] = field(default_factory=list)        # one record per finished round
    teacher_queries: list[str] = field(default_factory=list)  # distinct ids the teacher was asked about
    pending: Optional[dict] = None  # {"batch": b, "ids": [...], "files": {...}} while humans label
    stopped: Optional[str] = None   # why the loop ended
    signature: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {key: i for i, key in enumerate(self.pool_ids)}
        self._queried = set(self.teacher_queries)

    # -- positions
    def position(self, key: str) -> int:
        return self._index[key]

    def positions(self, keys) -> np.ndarray:
        return np.asarray([self._index[k] for k in keys], dtype=np.int64)

    @property
    def labelled_positions(self) -> np.ndarray:
        return np.sort(self.positions(self.labels))

    @property
    def candidates(self) -> np.ndarray:
        """Pool positions that may still be queried: neither labelled, ignored nor awaiting labels."""
        taken = set(self.labels) | set(self.ignored) | set((self.pending or {}).get("ids", []))
        return np.asarray([i for i, key in enumerate(self.pool_ids) if key not in taken], dtype=np.int64)

    # -- changes
    def add_batch(self, labels: dict[str, tuple[str, str]], ignore: Optional[dict[str, str]] = None) -> None:
        """One acquisition batch: ``{id: (label name, source)}`` plus ids to ignore from now on."""
        b = len(self.batches)
        for key, (name, source) in labels.items():
            if key in self.labels:
                raise KdflowError(f"Example {key} is labelled already (batch {self.labels[key]['batch']})")
            self.labels[key] = {"label": name, "source": source, "batch": b}
        for key, reason in (ignore or {}).items():
            self.ignored[key] = reason
        self.batches.append(list(labels))

    def note_teacher(self, keys) -> None:
        """Count distinct examples the teacher was asked about (the teacher's budget)."""
        for key in keys:
            if key not in self._queried:
                self._queried.add(key)
                self.teacher_queries.append(key)

    def sources(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.labels.values():
            out[entry["source"]] = out.get(entry["source"], 0) + 1
        return out

    @property
    def phase(self) -> str:
        """``train``: the newest batch has no round yet; ``select``: pick the next batch; ``wait``:
        humans are labelling; ``done``: stopped."""
        if self.stopped:
            return "done"
        if self.pending:
            return "wait"
        return "train" if len(self.batches) > len(self.rounds) else "select"

    # -- disk
    def save(self, path: Path) -> None:
        if not is_main():  # under torchrun every process holds the same state; process 0 writes it
            return
        blob = {"version": STATE_VERSION, "pool_fingerprint": pool_fingerprint(self.pool_ids),
                "pool_size": len(self.pool_ids), "signature": self.signature, "labels": self.labels,
                "ignored": self.ignored, "batches": self.batches, "batch_meta": self.batch_meta, "rounds": self.rounds,
                "teacher_queries": self.teacher_queries, "pending": self.pending, "stopped": self.stopped}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(blob, indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, pool_ids: list[str]) -> "PoolState":
        try:
            blob = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise KdflowError(f"Active-learning state '{path}' is unreadable; restore it, or start again with "
                              "--overwrite (the labels it held are then lost)") from None
        if blob.get("pool_fingerprint") != pool_fingerprint(pool_ids):
            raise KdflowError(f"The pool has changed since '{path}' was written ({blob.get('pool_size')} examples "
                              f"then, {len(pool_ids)} now); resume with the same data, or start again with "
                              "--overwrite")
        return cls(pool_ids, blob["labels"], blob["ignored"], blob["batches"], blob.get("batch_meta", []),
                   blob["rounds"], blob.get("teacher_queries", []), blob.get("pending"), blob.get("stopped"),
                   blob.get("signature", {}))


def pool_fingerprint(ids: list[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
