"""Strategies a user writes, registered by name on import: ``active.strategy_modules`` names this file (or a
test imports it), then ``active.strategy: user_margin`` / ``user_far`` run through ``kdflow active`` and
``compare_strategies``. Written here without kdflow's own score functions, as a user would."""

import numpy as np

from kdflow.active import register_strategy


def gap_of_top_two(outputs):
    """The negated gap between the two most probable classes (the margin score, in a user's words)."""
    top = np.sort(outputs.probs, axis=1)
    return top[:, -2] - top[:, -1]


def farthest_from_labelled(outputs, k, candidates, labelled, seed):
    """The ``k`` candidates farthest (in the student's embedding space) from the labelled examples' mean."""
    emb = outputs.embeddings
    centre = emb[labelled].mean(0) if len(labelled) else emb.mean(0)
    dist = ((emb[candidates] - centre) ** 2).sum(1)
    return candidates[np.argsort(-dist, kind="stable")[:k]]


register_strategy("user_margin", gap_of_top_two, needs=("probs",), replace=True)
register_strategy("user_far", pick=farthest_from_labelled, needs=("embeddings",), replace=True)
