"""Everything one active-learning run holds between its steps, declared in one place.

:class:`Context` is built once per call of :func:`kdflow.active.active` (``loop.open_context``) and passed to
the modules that act on it: the round trainers (``rounds``, ``teacher_rounds``), the oracles' entry point,
the cold start, the record writers. What survives a kill is not here but in :class:`~.pool.PoolState`
(``state``, saved as ``<run>/active/state.json``) and in the weight files this module names.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .. import pipeline
from ..config import ActiveConfig, Config, TrainConfig
from ..data import Featurizer, Split
from ..distillation.distiller import freeze
from ..distillation.teacher_cache import teacher_logits
from ..engine.checkpoint import save_weights
from ..engine.run import Run
from ..errors import KdflowError
from ..tasks import task_kind
from ..tasks.classification import IGNORE
from ..tasks.tokens import NO_WORD
from .pool import PoolState
from .outputs import probabilities
from .strategies import PoolOutputs


@dataclass
class Context:
    """The run's settings, data, models and in-memory state (see the module docstring)."""

    cfg: Config
    run: Run
    pool: Split                 # data.train (the seed set) followed by data.unlabelled, or data.train alone
    given: int                  # how many of the pool's first examples are a labelled seed set (data.train)
    labels: list[str]           # the label names, in the order of the model's outputs
    teacher: torch.nn.Module
    tokenizer: Any              # the teacher's
    teacher_source: str
    template: torch.nn.Module   # the untrained student every scratch round copies
    s_tokenizer: Any
    s_feat: Featurizer
    train_cfg: TrainConfig      # the student's training settings, resolved
    cache: Any = None           # the teacher's logit cache (None when the run never asks the teacher)
    state: Optional[PoolState] = None  # set once opened (new, or read back on resume)
    current: Optional[torch.nn.Module] = None  # the student of the last finished round
    members: list[torch.nn.Module] = field(default_factory=list)  # its committee (checkpoints)
    teacher_val: Optional[dict] = None  # the teacher's validation quality (stop_parity)
    teacher_view: Optional[PoolOutputs] = None  # the teacher's embeddings and probabilities of the pool (cold start)
    teacher_view_round: int = -1  # the round whose teacher computed teacher_view (-1: as given)
    teacher_round: int = -1     # target teacher: the round whose fine-tuned teacher is loaded (-1: as given)
    command: str = "kdflow active CONFIG"  # how the user started it, for the instructions we print

    @property
    def ac(self) -> ActiveConfig:
        return self.cfg.active

    @property
    def folder(self) -> Path:
        return self.cfg.run_dir / "active"

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    def save_state(self) -> None:
        self.state.save(self.state_path)

    # ------------------------------------------------------------ the teacher
    def teacher_probs(self, positions: np.ndarray, count: bool = True) -> np.ndarray:
        """``[n, C]`` teacher probabilities for pool positions, through the cache, chunk by chunk."""
        if self.cache is None:
            raise KdflowError("internal: the teacher is not loaded for this run")
        out = []
        for start in range(0, len(positions), self.ac.pool_chunk):
            part = self.pool.subset(positions[start:start + self.ac.pool_chunk])
            logits = teacher_logits(self.run, self.teacher, part, pipeline.featurizer(self.run, self.tokenizer),
                                    self.cache)
            out.append(probabilities(logits, task_kind(self.run.data.task).activation).numpy())
            if count:
                self.state.note_teacher(part.ids)
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def teacher_file(self, r: int) -> Path:
        return self.folder / f"teacher-round-{r:03d}.safetensors"

    def use_teacher_of(self, r: int) -> None:
        """Make sure the loaded teacher is round ``r``'s (``-1``: the configured one, which the run starts from;
        target teacher only, whose rounds fine-tune it)."""
        if r >= 0 and self.teacher_round != r:
            from safetensors.torch import load_file
            freeze(self.teacher).load_state_dict(load_file(self.teacher_file(r)))
            self.teacher_round = r

    # ------------------------------------------------------------ labels
    def label_index(self, key: str) -> int:
        """The class index of the label bought for pool id ``key``."""
        return self.labels.index(self.state.labels[key]["label"])

    def target_of(self, key: str) -> "int | np.ndarray":
        """The target of the label bought for pool id ``key``: a class index, or a multi-hot row for a label set."""
        label = self.state.labels[key]["label"]
        if task_kind(self.run.data.task).per_word:  # one tag per word, padded to the pool's width
            row = np.full(self.pool.targets.shape[1], NO_WORD, dtype=np.int64)
            row[: len(label)] = [self.labels.index(t) for t in label]
            return row
        if isinstance(label, list):
            row = np.zeros(len(self.labels), dtype=np.float32)
            row[[self.labels.index(n) for n in label]] = 1.0
            return row
        return self.labels.index(label)

    def with_labels(self, positions: np.ndarray, unlabelled: bool = False) -> Split:
        """The pool at ``positions`` with the labels bought for them as targets; with ``unlabelled``, a position
        with none gets the task's no-label target (the teacher's soft targets alone), else it is an error."""
        part = self.pool.subset(np.asarray(positions, dtype=np.int64))
        blank = task_kind(self.run.data.task).no_targets(1, len(self.labels))[0]
        if task_kind(self.run.data.task).per_word:  # a sentence's unknown tags: IGNORE at its words
            unknown = {k: np.where(t != NO_WORD, IGNORE, NO_WORD) for k, t in zip(part.ids, part.targets)}
            rows = [self.target_of(k) if not unlabelled or k in self.state.labels else unknown[k] for k in part.ids]
            part.targets = np.asarray(rows, dtype=np.int64) if rows else self.pool.targets[:0]
            return part
        rows = [self.target_of(k) if not unlabelled or k in self.state.labels else blank for k in part.ids]
        part.targets = np.asarray(rows, dtype=blank.dtype) if rows else self.pool.targets[:0]
        return part

    # ------------------------------------------------------------ the student's files
    def student_file(self, r: int) -> Path:
        return self.folder / f"student-round-{r:03d}.safetensors"

    def from_weights(self, state_dict: dict) -> torch.nn.Module:
        m = copy.deepcopy(self.template)
        m.load_state_dict(state_dict)
        return m.eval()

    def restore(self, r: int) -> None:
        """The student (and committee) of finished round ``r``, from disk (after a resume)."""
        from safetensors.torch import load_file
        self.current = copy.deepcopy(self.template)
        self.current.load_state_dict(load_file(self.student_file(r)))
        self.members = [self.from_weights(load_file(f))
                        for f in sorted((self.folder / "committee").glob("member-*.safetensors"))]

    def start_model(self, r: int) -> torch.nn.Module:
        """Round ``r``'s student before training: the last round's (warm start) or a fresh copy (scratch)."""
        if self.ac.retrain == "warm" and r > 0:
            if self.current is None:
                self.restore(r - 1)
            return self.current
        return copy.deepcopy(self.template)

    def save_student(self, model: torch.nn.Module, snaps: list[dict], r: int) -> None:
        """Round ``r``'s student (and its committee's weights, which replace the last round's whole: never a mix
        after a resume); process 0 writes."""
        if not self.run.acc.is_main_process:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        save_weights(model.state_dict(), self.student_file(r))
        if snaps:
            folder, tmp = self.folder / "committee", self.folder / "committee.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for i, sd in enumerate(snaps):
                save_weights(sd, tmp / f"member-{i}.safetensors")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)

    def prune(self, pattern: str, keep: Path) -> None:
        """Delete the files of earlier rounds matching ``pattern`` once the state names the round of ``keep``."""
        for f in self.folder.glob(pattern) if self.run.acc.is_main_process else ():
            if f != keep:
                f.unlink()


__all__ = ["Context"]
