"""The task kinds: what a task decides, in one table (:data:`TASKS`).

A task kind says how targets look (class indices under label names, or numbers), which metrics score a
model and which one selects it, which losses train it (the hard-label loss and what ``distill.logit_loss:
hinton`` means), the trivial baseline and the linear control of ``kdflow check``, the head a Hugging Face
model needs, and the warnings its data can earn. Every module that depends on the task reads this table.
A new task kind is one module here (its :class:`TaskKind` as ``KIND``) and one entry in :data:`TASKS`.
"""

from __future__ import annotations

from typing import Optional

from ..errors import KdflowError
from . import classification, multilabel, regression, tokens
from .kind import TaskKind

TASKS: dict[str, TaskKind] = {k.name: k for k in (classification.KIND, regression.KIND, multilabel.KIND, tokens.KIND)}


def task_kind(name: str) -> TaskKind:
    """The table entry of task ``name``; an unknown name is an error naming the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KdflowError(f"Unknown task {name!r}; data.task is one of {', '.join(TASKS)}") from None


def headline_of(scores) -> Optional[str]:
    """The headline metric among the keys of ``scores`` (whichever task kind wrote them), or None."""
    return next((kind.headline for kind in TASKS.values() if kind.headline in scores), None)


def task_of_hf(num_labels: int, problem_type: Optional[str]) -> str:
    """The task a Hugging Face model's config describes (its ``num_labels`` and ``problem_type``)."""
    found = [kind.name for kind in TASKS.values() if kind.hf_matches(num_labels, problem_type)]
    if len(found) != 1:
        raise KdflowError(f"A Hugging Face head with num_labels {num_labels} and problem_type {problem_type!r} is "
                          f"none of kdflow's tasks ({', '.join(TASKS)}); give a sequence-classification or "
                          "regression model")
    return found[0]


__all__ = ["TaskKind", "TASKS", "task_kind", "task_of_hf", "headline_of"]
