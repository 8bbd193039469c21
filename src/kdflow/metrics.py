"""Quality metrics from logits, computed with scikit-learn / scipy."""

from __future__ import annotations

import numpy as np

from .errors import KdflowError

# the metrics quality() returns per task; the first is the default train.metric (f1: binary tasks only)
TASK_METRICS = {"classification": ("accuracy", "macro_f1", "f1", "mcc"),
                "regression": ("pearson", "spearman", "neg_mse")}


def check_metric(metric: str, task: str, num_labels: int, key: str = "train.metric") -> None:
    """A metric that this data cannot give, named before training starts."""
    if metric == "f1" and num_labels != 2:
        raise KdflowError(f"{key} f1 is the F1 of label 1 in a binary task, and this data has {num_labels} labels; "
                          "use macro_f1")


def quality(logits: np.ndarray, targets: np.ndarray, task: str) -> dict[str, float]:
    """Classification: accuracy, macro F1, MCC, and for two classes F1 of label 1 (GLUE's F1 for MRPC
    and QQP). Regression: MSE (and neg_mse), Pearson, Spearman."""
    if task == "regression":
        from scipy.stats import pearsonr, spearmanr
        pred = logits.reshape(-1).astype(np.float64)
        y = targets.reshape(-1).astype(np.float64)
        mse = float(np.mean((pred - y) ** 2))
        flat = np.std(pred) == 0 or np.std(y) == 0
        return {"mse": mse, "neg_mse": -mse,
                "pearson": 0.0 if flat else float(pearsonr(pred, y)[0]),
                "spearman": 0.0 if flat else float(spearmanr(pred, y)[0])}
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    pred = logits.argmax(-1)
    out = {"accuracy": float(accuracy_score(targets, pred)),
           "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
           "mcc": float(matthews_corrcoef(targets, pred))}
    if logits.ndim == 2 and logits.shape[-1] == 2:
        out["f1"] = float(f1_score(targets, pred, pos_label=1, average="binary", zero_division=0))
    return out
