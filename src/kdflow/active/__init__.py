"""Active learning for distillation: pool, strategies, oracles, the round loop.

``kdflow active CONFIG`` / :func:`kdflow.active.active` (the module itself is callable: ``kdflow.active(cfg)``);
strategies are pure functions in :mod:`kdflow.active.strategies`, usable on plain numpy arrays, and yours join
them through :func:`register_strategy`.
"""

import sys
import types

from .strategies import STRATEGIES, PoolOutputs, register_strategy, select

__all__ = ["active", "compare_strategies", "select", "register_strategy", "PoolOutputs", "STRATEGIES"]


def active(*args, **kwargs):
    from .loop import active as run
    return run(*args, **kwargs)


def compare_strategies(*args, **kwargs):
    from .curves import compare_strategies as run
    return run(*args, **kwargs)


class _CallableModule(types.ModuleType):
    """``kdflow.active`` is this package and, called, :func:`active` (the package is not shadowed by the function)."""

    def __call__(self, *args, **kwargs):
        return active(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
