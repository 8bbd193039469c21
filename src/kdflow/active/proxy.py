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

from typing import Callable

import numpy as np

from .. import pipeline
from .context import Context
from .outputs import PoolPass, stream_pool
from .strategies import neighbour_vote

NEIGHBOURS = 10


def student_embeddings(ctx: Context, positions: np.ndarray) -> np.ndarray:
    """The current student's penultimate-layer rows for pool ``positions`` (in that order)."""
    positions = np.asarray(positions, dtype=np.int64)
    spec = PoolPass("coreset", len(ctx.labels), ctx.ac.pool_batch_size, ctx.ac.pool_chunk)
    out = stream_pool(ctx.current, ctx.pool, positions, lambda: pipeline.featurizer(ctx.run, ctx.s_tokenizer),
                      ctx.run.acc.device, spec)
    return out.embeddings[positions]


def estimated_teacher(ctx: Context) -> Callable[[np.ndarray], np.ndarray]:
    """``positions -> [n, C]``: the teacher's probabilities estimated from the labels it already gave."""
    labelled = ctx.state.labelled_positions
    given = np.asarray([ctx.label_index(ctx.pool.ids[p]) for p in labelled], dtype=np.int64)
    reference = student_embeddings(ctx, labelled)
    return lambda positions: neighbour_vote(student_embeddings(ctx, positions), reference, given,
                                            len(ctx.labels), NEIGHBOURS)


__all__ = ["estimated_teacher", "student_embeddings", "NEIGHBOURS"]
