"""Splits of examples: stable ids, generic inputs, targets; stratified sampling.

``inputs`` maps a field name to a list (``text``, ``text_pair``, ``values``, or
``image``: uint8 arrays ``[H, W, C]``), so every modality travels the same path; a featurizer
(:mod:`kdflow.data.features`) turns a batch of them into model keyword arguments.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import KdflowError
from ..tasks.classification import IGNORE  # label of an example without a gold label (CE skips it)


@dataclass
class Split:
    """One split: ``ids[i]``, ``inputs[name][i]`` and ``targets[i]`` describe example i."""

    name: str
    ids: list[str]
    inputs: dict[str, list]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: "Split") -> "Split":
        """This split's examples followed by ``other``'s (same input names)."""
        if set(self.inputs) != set(other.inputs):
            raise KdflowError(f"Cannot join splits with inputs {sorted(self.inputs)} and {sorted(other.inputs)}")
        return Split(self.name, self.ids + other.ids, {k: v + other.inputs[k] for k, v in self.inputs.items()},
                     np.concatenate([self.targets, other.targets.astype(self.targets.dtype)]))

    @property
    def labelled(self) -> np.ndarray:
        """Positions of the examples that carry a label (not -100 / NaN / a row of NaN)."""
        t = self.targets
        if t.ndim == 2 and t.dtype.kind != "f":  # tags per word: a sentence with a known tag
            return np.flatnonzero((t >= 0).any(1))
        if t.ndim == 2:  # multi-hot label sets: a row of NaN has no label known
            return np.flatnonzero(~np.isnan(t).any(1))
        return np.flatnonzero(~np.isnan(t)) if t.dtype.kind == "f" else np.flatnonzero(t != IGNORE)

    def subset(self, index: "np.ndarray | list[int]") -> "Split":
        index = np.asarray(index, dtype=np.int64)
        return Split(self.name, [self.ids[i] for i in index],
                     {k: [v[i] for i in index] for k, v in self.inputs.items()}, self.targets[index])


@dataclass
class TaskData:
    task: str  # "classification" | "regression"
    train: Split
    validation: Split
    test: Optional[Split]
    label_names: Optional[list[str]] = None  # index -> name; None for regression
    notes: list[str] = field(default_factory=list)
    unlabelled: Optional[Split] = None  # transfer set: inputs only (targets -100 / NaN)
    extra_tests: dict[str, Split] = field(default_factory=dict)  # scored beside test (MNLI: mismatched)
    validation_from_train: bool = False  # no validation split was given: kdflow held this one out of train
    # what the examples are (text, with or without a pair; values: numeric sequences; image): the entry of
    # kdflow.data.features.FEATURIZERS whose field the inputs hold (load_data: modality_of(train.inputs))
    modality: str = "text"

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names else 1

    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.validation, self.test) if s is not None]

    def split(self, name: str) -> Split:
        """``train``, ``validation`` or ``test`` by name; a missing one is an error that says what to do."""
        named = {"train": self.train, "validation": self.validation, "test": self.test,
                 **{f"test_{k}": v for k, v in self.extra_tests.items()}, **self.extra_tests}
        part = named.get(name)
        if part is None:
            extra = "".join(f", {k}" for k in self.extra_tests)
            raise KdflowError(f"The data has no '{name}' split; use --split validation{extra} or give data.test")
        return part


def content_keys(inputs: dict[str, list]) -> list[str]:
    """A hash of every example's content (all its input fields, in name order): equal inputs, equal key.

    The basis of example ids and of the leakage rule (:mod:`kdflow.data.leakage`).
    """
    keys = sorted(inputs)
    out = []
    for i in range(len(inputs[keys[0]]) if keys else 0):
        blob = "\x1f".join(_content(inputs[k][i]) for k in keys)
        out.append(hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16])
    return out


def _content(value) -> str:
    """An input's content as text: its repr, or for an array (an image) a hash of its shape, type and
    bytes (an array's repr elides its middle, so two images would share it)."""
    if isinstance(value, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
        return f"array{value.shape}{value.dtype}:{digest}"
    return repr(value)


def example_ids(split: str, inputs: dict[str, list]) -> list[str]:
    """Content-derived ids: the same text gets the same id in every run and file order.

    A repeated text within a split gets ``#1``, ``#2`` ... so ids stay unique.
    """
    seen: dict[str, int] = {}
    ids = []
    for h in content_keys(inputs):
        n = seen.get(h, 0)
        seen[h] = n + 1
        ids.append(f"{split}:{h}" + (f"#{n}" if n else ""))
    return ids


def stratified_sample(targets: np.ndarray, n: int, seed: int, classification: bool,
                      keep_one: bool = False) -> np.ndarray:
    """Exactly ``n`` sorted indices, each class in proportion (largest remainders), seeded.

    ``keep_one``: never take every example of a class (so a held-out split leaves one in train).
    """
    rng = np.random.default_rng(seed)
    if not classification:
        return np.sort(rng.permutation(len(targets))[:n])
    classes, counts = np.unique(targets, return_counts=True)
    caps = np.maximum(counts - 1, 0) if keep_one else counts
    quota = n * counts / len(targets)
    take = np.minimum(np.floor(quota).astype(int), caps)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while take.sum() < min(n, caps.sum()):
        grew = False
        for j in order:
            if take.sum() >= n:
                break
            if take[j] < caps[j]:
                take[j] += 1
                grew = True
        if not grew:
            break
    picked = [rng.permutation(np.flatnonzero(targets == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)


def stratified_split(targets: np.ndarray, fraction: float, seed: int,
                     classification: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into (keep, held_out): ``fraction`` held out, per class when classifying."""
    n = max(1, int(round(fraction * len(targets)))) if len(targets) > 1 else 0  # tiny data: hold out one
    held = stratified_sample(targets, n, seed, classification, keep_one=True)
    return np.setdiff1d(np.arange(len(targets)), held), held
