"""Quality metrics from logits, computed with scikit-learn / scipy."""

from __future__ import annotations

import numpy as np


def quality(logits: np.ndarray, targets: np.ndarray, task: str) -> dict[str, float]:
    """Classification: accuracy, macro F1, MCC. Regression: MSE (and neg_mse), Pearson, Spearman."""
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
    return {"accuracy": float(accuracy_score(targets, pred)),
            "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
            "mcc": float(matthews_corrcoef(targets, pred))}
