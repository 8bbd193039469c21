"""Active learning for distillation: pool, strategies, oracles, the round loop.

``kdflow active CONFIG`` / :func:`kdflow.active.active`; strategies are pure functions in
:mod:`kdflow.active.strategies`, usable on plain numpy arrays.
"""

from .strategies import STRATEGIES, PoolOutputs, register_strategy, select

__all__ = ["active", "compare_strategies", "select", "register_strategy", "PoolOutputs", "STRATEGIES"]


def active(*args, **kwargs):
    from .loop import active as run
    return run(*args, **kwargs)


def compare_strategies(*args, **kwargs):
    from .compare import compare_strategies as run
    return run(*args, **kwargs)
