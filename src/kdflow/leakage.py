"""The one overlap rule: an example leaks when its inputs equal those of a held-out example.

"Inputs" are all of an example's input fields together: the text *and* its pair for
sentence-pair tasks (the same premise with another hypothesis is a different
example), or the numeric sequence. Equality is exact, by the content hash that also
makes example ids (:func:`kdflow.data.splits.content_keys`).

Used wherever training data meets held-out data: the transfer set
(``data.unlabelled``) drops rows that are in validation or test, and the
active-learning pool ignores them (never queried, never trained on).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from .data.splits import Split, content_keys


def held_keys(held: Iterable[Optional[Split]]) -> set[str]:
    """Content keys of every example of the held-out splits (``None`` entries are skipped)."""
    return {k for s in held if s is not None for k in content_keys(s.inputs)}


def overlapping(inputs: dict[str, list], held: Iterable[Optional[Split]], start: int = 0) -> np.ndarray:
    """Positions ``>= start`` of the examples in ``inputs`` whose content equals a held-out example's."""
    seen = held_keys(held)
    return np.asarray([i for i, k in enumerate(content_keys(inputs)) if i >= start and k in seen], dtype=np.int64)


__all__ = ["held_keys", "overlapping"]
