"""Quality metrics from logits, each task kind's own (:mod:`kdflow.tasks`), computed with scikit-learn / scipy."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import KdflowError
from .tasks import TASKS, task_kind

# the metrics quality() returns per task; the first is the default train.metric (f1: binary tasks only)
TASK_METRICS = {name: kind.metrics for name, kind in TASKS.items()}


def check_metric(metric: str, task: str, num_labels: int, key: str = "train.metric") -> None:
    """A metric that this data cannot give, named before training starts."""
    if metric == "f1" and num_labels != 2:
        raise KdflowError(f"{key} f1 is the F1 of label 1 in a binary task, and this data has {num_labels} labels; "
                          "use macro_f1")


def quality(logits: np.ndarray, targets: np.ndarray, task: str, decision: Optional[dict] = None,
            names: Optional[list] = None) -> dict[str, float]:
    """The metrics of ``task`` (its :data:`kdflow.tasks.TASKS` entry): for classification accuracy, macro F1,
    MCC, and for two classes F1 of label 1; for regression MSE (and neg_mse), Pearson, Spearman; for multilabel
    micro / macro F1, subset accuracy and Hamming loss at the ``decision``'s thresholds (0.5 without one); for
    token tagging entity-level F1, precision, recall and token accuracy (``names``: the tags)."""
    return task_kind(task).quality(logits, targets, decision, names)


def tuned_quality(logits: np.ndarray, targets: np.ndarray, task: str, names: Optional[list] = None
                  ) -> tuple[Optional[dict], dict[str, float]]:
    """The decision rule the task kind tunes on these outputs (multilabel: thresholds; None for the others) and
    the metrics by it: how validation chooses epochs, blocks and the saved rule alike."""
    tune = task_kind(task).tune
    decision = tune(logits, targets) if tune is not None else None
    return decision, quality(logits, targets, task, decision, names)
