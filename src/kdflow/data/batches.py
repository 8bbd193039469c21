"""Batches: a seeded per-epoch sampler, the collate function, the loader.

A batch is ``{"index", "ids", "inputs", "teacher_inputs", "labels"}``: the examples'
positions in their split (to pick cached teacher targets), their ids (a list of
strings, for messages), the student's model keyword arguments, the teacher's (the
same dict when both read alike), and targets.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from .features import Featurizer
from .splits import Split


class IndexDataset(torch.utils.data.Dataset):
    """Yields example positions; the collate function builds the batch from them."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def make_collate(split: Split, student_feat: Featurizer, teacher_feat: Optional[Featurizer] = None,
                 train: bool = False) -> Callable[[list[int]], dict[str, Any]]:
    """Batch = positions, student inputs, teacher inputs (same dict when the featurizer is shared), targets.

    ``train``: batches for training, where an augmenting featurizer augments.
    """
    s_rows = student_feat.encode(split)
    t_rows = teacher_feat.encode(split) if teacher_feat is not None and teacher_feat is not student_feat else None
    targets = torch.from_numpy(split.targets)

    augments = train and (student_feat.augments or (teacher_feat is not None and teacher_feat.augments))

    def collate(index: list[int]) -> dict[str, Any]:
        idx = torch.tensor(index, dtype=torch.long)
        # one draw per batch, shared: teacher and student must see the same augmented image
        extra = {"seed": int(torch.randint(2 ** 62, (1,)))} if augments else {}
        s_in = student_feat.collate([s_rows[i] for i in index], train, **extra)
        t_in = teacher_feat.collate([t_rows[i] for i in index], train, **extra) if t_rows is not None else s_in
        return {"index": idx, "ids": [split.ids[i] for i in index], "inputs": s_in, "teacher_inputs": t_in,
                "labels": targets[idx]}

    return collate


class EpochSampler(torch.utils.data.Sampler):
    """Order = f(seed, epoch): a resumed run replays exactly the batches it would have seen."""

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


def loader(split: Split, collate, batch_size: int, shuffle: bool, seed: int = 0) -> torch.utils.data.DataLoader:
    # a generator of its own: without one, every iteration of a DataLoader draws from the global
    # RNG, so inference loops (teacher outputs, validation) would shift the training's dropout masks
    return torch.utils.data.DataLoader(IndexDataset(len(split)), batch_size=batch_size,
                                       sampler=EpochSampler(len(split), shuffle, seed), collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed))


def train_loader(split: Split, student_feat: Featurizer, teacher_feat: Optional[Featurizer], batch_size: int,
                 seed: int) -> torch.utils.data.DataLoader:
    """Shuffled (seeded per epoch) training batches of ``split``."""
    return loader(split, make_collate(split, student_feat, teacher_feat, train=True), batch_size, True, seed)


def input_batches(split: Split, feat: Featurizer, batch_size: int, limit: Optional[int] = None) -> list[dict]:
    """The model inputs of ``split`` (its first ``limit`` examples) in order, ``batch_size`` at a time."""
    part = split if limit is None or limit >= len(split) else split.subset(np.arange(limit))
    return [b["inputs"] for b in loader(part, make_collate(part, feat), batch_size, shuffle=False)]


def set_epoch(dl, epoch: int) -> None:
    """Tell a (possibly accelerate-wrapped) loader's sampler which epoch starts."""
    if hasattr(dl, "set_epoch"):  # accelerate's loaders reach the sampler themselves
        dl.set_epoch(epoch)
    elif hasattr(dl.sampler, "set_epoch"):
        dl.sampler.set_epoch(epoch)
