"""Teacher-student disagreement without calling the teacher (``active.target: teacher_calls``).

Under ``teacher_calls`` every teacher call is spent budget (and the teacher is the only oracle), so
``disagreement`` cannot ask the teacher about the pool. The teacher's labels already bought stand in for
it: each pool example's estimated teacher distribution is the vote of its nearest teacher-labelled
examples in the current student's embedding space (:func:`~kdflow.active.strategies.neighbour_vote`), and
its score is ``KL(estimate || student)``, high where the student predicts against what the teacher said
about similar examples. It costs one extra student pass over the labelled examples and the candidates,
and no teacher call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import pipeline
from .outputs import PoolPass, stream_pool
from .strategies import neighbour_vote

if TYPE_CHECKING:
    from .loop import Loop

NEIGHBOURS = 10


def student_embeddings(loop: "Loop", positions: np.ndarray) -> np.ndarray:
    """The current student's penultimate-layer rows for pool ``positions`` (in that order)."""
    positions = np.asarray(positions, dtype=np.int64)
    spec = PoolPass("coreset", len(loop.labels), loop.ac.pool_batch_size, loop.ac.pool_chunk)
    out = stream_pool(loop.current, loop.pool, positions, lambda: pipeline.featurizer(loop.run, loop.s_tokenizer),
                      loop.run.acc.device, spec)
    return out.embeddings[positions]


def estimated_teacher(loop: "Loop") -> Callable[[np.ndarray], np.ndarray]:
    """``positions -> [n, C]``: the teacher's probabilities estimated from the labels it already gave."""
    labelled = loop.state.labelled_positions
    index = {name: i for i, name in enumerate(loop.labels)}
    given = np.asarray([index[loop.state.labels[loop.pool.ids[p]]["label"]] for p in labelled], dtype=np.int64)
    reference = student_embeddings(loop, labelled)
    return lambda positions: neighbour_vote(student_embeddings(loop, positions), reference, given,
                                            len(loop.labels), NEIGHBOURS)


__all__ = ["estimated_teacher", "student_embeddings", "NEIGHBOURS"]
