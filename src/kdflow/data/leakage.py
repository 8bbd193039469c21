"""The one overlap rule: an example leaks when its inputs equal those of a held-out example.

"Inputs" are all of an example's input fields together: the text *and* its pair for
sentence-pair tasks (the same premise with another hypothesis is a different
example), or the numeric sequence. Equality is exact, by the content hash that also
makes example ids (:func:`kdflow.data.splits.content_keys`), or *normalised* (text
NFKC-folded, case-folded, punctuation and spacing ignored: "Book a flight!" is
"book a flight"), which a tokenizer of an uncased model barely tells apart.

Used wherever training data meets held-out data: the transfer set
(``data.unlabelled``) drops rows that are in validation or test, and the
active-learning pool ignores them (never queried, never trained on).

**The training file as given** (train, the transfer set, and a validation split
that kdflow held out of train) against each held-out split (a validation file of
its own, test, the extra tests): :func:`overlaps` counts, per held-out split, the
examples whose inputs are in it, exactly or once normalised. Above
:data:`LEAK_SHARE` (and at least :data:`LEAK_MIN` examples) the split's score would
measure memory: ``kdflow check`` says so as an error and every training command
refuses before it touches the run folder, unless ``data.allow_overlap: true``; then,
as whenever any overlap exists, the score of the split's other examples is reported
beside the whole split's (:func:`clean_part`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from .splits import Split, TaskData, content_keys

# Measured on the real data sets (BENCHMARKS.md, "Leakage threshold"): the largest natural overlap of a
# published test split with its own training file is CoLA's out-of-domain dev set, 12 of 516 (2.3 %);
# CLINC150 0.2-0.5 %, AG News 0.1 %, STS-B 0.5 %, SST-2 (GLUE dev) 0.2 %, RTE 0. Above 5 % -- twice the
# worst natural case -- a split is not "a few duplicates" but partly a copy of the training data.
LEAK_SHARE = 0.05
LEAK_MIN = 5  # fewer overlapping examples than this are never refused (a 4-example test set cannot be judged)


def held_keys(held: Iterable[Optional[Split]]) -> set[str]:
    """Content keys of every example of the held-out splits (``None`` entries are skipped)."""
    return {k for s in held if s is not None for k in content_keys(s.inputs)}


def overlapping(inputs: dict[str, list], held: Iterable[Optional[Split]], start: int = 0) -> np.ndarray:
    """Positions ``>= start`` of the examples in ``inputs`` whose content equals a held-out example's."""
    seen = held_keys(held)
    return np.asarray([i for i, k in enumerate(content_keys(inputs)) if i >= start and k in seen], dtype=np.int64)


def normalise(value) -> str:
    """Text as a reader compares it: NFKC, case-folded, punctuation dropped, spaces collapsed."""
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def normalised_keys(inputs: dict[str, list]) -> list[str]:
    """Per example, its text fields normalised and joined (pair-aware); other inputs by exact content."""
    text = [k for k in sorted(inputs) if k in ("text", "text_pair")]
    if not text:
        return content_keys(inputs)
    return ["\x1f".join(normalise(inputs[k][i]) for k in text) for i in range(len(inputs[text[0]]))]


class Keys:
    """Each split's exact and normalised content keys, computed once however many pairs read them."""

    def __init__(self):
        self.done: dict[int, tuple[list, list]] = {}

    def __call__(self, split: Split) -> tuple[list, list]:
        if id(split) not in self.done:
            self.done[id(split)] = (content_keys(split.inputs), normalised_keys(split.inputs))
        return self.done[id(split)]


@dataclass
class Overlap:
    """The examples of one held-out split whose inputs are in the training data as given."""

    split: str  # the held-out split's name: validation, test, test_<name>
    size: int  # its examples
    exact: list[int]  # positions equal to a training example
    near: list[int]  # positions equal to one only once normalised
    sources: dict[str, int] = field(default_factory=dict)  # per training part: how many of the above it holds

    @property
    def rows(self) -> np.ndarray:
        return np.asarray(sorted(self.exact + self.near), dtype=np.int64)

    @property
    def count(self) -> int:
        return len(self.exact) + len(self.near)

    @property
    def share(self) -> float:
        return self.count / self.size if self.size else 0.0

    @property
    def too_many(self) -> bool:
        """Above the threshold: the split is partly a copy of the training data."""
        return self.count >= LEAK_MIN and self.share > LEAK_SHARE

    def as_dict(self) -> dict:
        return {"examples": self.size, "overlapping": self.count, "share": round(self.share, 4),
                "exact": len(self.exact), "normalised": len(self.near), "in": dict(self.sources),
                "clean_examples": self.size - self.count}

    def describe(self) -> str:
        """"180 of 200 test examples (90.0%) are in the training data (158 in train, 22 in ...; 180 exact, ...)"."""
        parts = ", ".join(f"{n} in {name}" for name, n in self.sources.items() if n)
        how = f"{len(self.exact)} exact" + (f", {len(self.near)} equal once case, punctuation and spacing are "
                                            "ignored" if self.near else "")
        return (f"{self.count} of {self.size} {self.split} examples ({self.share:.1%}) are in the training data "
                f"as given ({parts}; {how})")


def training_parts(data: TaskData) -> list[tuple[str, Split]]:
    """What the training file as given holds: train, the validation split kdflow held out of it, the
    transfer set."""
    parts = [("train", data.train)]
    if data.validation_from_train:
        parts.append(("the validation split held out of train", data.validation))
    if data.unlabelled is not None:
        parts.append(("the transfer set (data.unlabelled)", data.unlabelled))
    return parts


def held_out_parts(data: TaskData) -> list[tuple[str, Split]]:
    """The splits that score a model: a validation file of its own, test, the extra tests."""
    out = [] if data.validation_from_train else [("validation", data.validation)]
    if data.test is not None:
        out.append(("test", data.test))
    return out + [(f"test_{k}", v) for k, v in data.extra_tests.items()]


def overlaps(data: TaskData, keys: Optional[Keys] = None) -> dict[str, Overlap]:
    """Per held-out split with any overlap: which of its examples are in the training data as given."""
    keys = keys or Keys()
    parts = [(name, *map(set, keys(split))) for name, split in training_parts(data) if len(split)]
    out = {}
    for name, split in held_out_parts(data):
        exact_held, norm_held = keys(split)
        exact, near, sources = [], [], {p: 0 for p, _, _ in parts}
        for i, (e, n) in enumerate(zip(exact_held, norm_held)):
            by_exact = next((p for p, ex, _ in parts if e in ex), None)
            by_norm = by_exact or next((p for p, _, no in parts if n in no), None)
            if by_norm is None:
                continue
            (exact if by_exact else near).append(i)
            sources[by_norm] += 1
        if exact or near:
            out[name] = Overlap(name, len(split), exact, near, sources)
    return out


def clean_part(split: Split, overlap: Optional[Overlap]) -> Optional[Split]:
    """``split`` without its overlapping examples (``None`` when none of it is clean)."""
    if overlap is None:
        return split
    keep = np.setdiff1d(np.arange(len(split)), overlap.rows)
    return split.subset(keep) if len(keep) else None


__all__ = ["LEAK_SHARE", "LEAK_MIN", "held_keys", "overlapping", "normalise", "normalised_keys", "Keys", "Overlap",
           "training_parts", "held_out_parts", "overlaps", "clean_part"]
