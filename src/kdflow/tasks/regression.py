"""Regression: one number per example; the model's output ``[N, 1]``."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .kind import TaskKind


def quality(logits: np.ndarray, targets: np.ndarray, decision: Optional[dict] = None, names=None) -> dict[str, float]:
    """MSE (and neg_mse, to maximise), Pearson and Spearman correlation (0 where either side is constant)."""
    from scipy.stats import pearsonr, spearmanr
    pred = logits.reshape(-1).astype(np.float64)
    y = targets.reshape(-1).astype(np.float64)
    mse = float(np.mean((pred - y) ** 2))
    flat = np.std(pred) == 0 or np.std(y) == 0
    return {"mse": mse, "neg_mse": -mse,
            "pearson": 0.0 if flat else float(pearsonr(pred, y)[0]),
            "spearman": 0.0 if flat else float(spearmanr(pred, y)[0])}


def details(logits: np.ndarray, targets: np.ndarray, label_names: Optional[Sequence[str]], out: dict,
            decision: Optional[dict] = None) -> None:
    return None  # the headline metrics say it all


def majority(train_targets: np.ndarray, n: int, num_labels: int) -> np.ndarray:
    """Predicting train's mean target."""
    return np.full((n, 1), float(train_targets.mean()))


def linear(x_train, y_train: np.ndarray, x_eval, y_eval: np.ndarray, seed: int) -> np.ndarray:
    """Ridge regression."""
    from sklearn.linear_model import Ridge
    return Ridge(alpha=1.0).fit(x_train, y_train).predict(x_eval).reshape(-1, 1)


def chance(majority_scores: dict, train_targets: np.ndarray) -> tuple[float, float]:
    """A null Pearson correlation, 0, whose standard error is 1/sqrt(n)."""
    return 0.0, 1.0


def hf_head(label_names: Optional[list]) -> dict:
    return {"num_labels": 1, "problem_type": "regression"}


def head_matches(theirs: Optional[list], ours: Optional[list], config: dict) -> bool:
    return config.get("num_labels") == 1


def findings(label_names: list, train_targets: np.ndarray) -> list[tuple[str, str]]:
    """Targets that take a few integer values only: classes read as numbers?"""
    values = np.unique(train_targets)
    if len(values) <= 10 and np.all(values == np.round(values)):
        return [("warning", f"The regression targets take only {len(values)} integer values "
                            f"({', '.join(f'{v:g}' for v in values[:6])}): are they classes? Set data.task: "
                            "classification")]
    return []


def no_targets(n: int, num_labels: int) -> np.ndarray:
    """The targets of ``n`` examples without a label (the transfer set): skipped by the loss."""
    return np.full(n, np.nan, dtype=np.float32)

def hf_matches(num_labels: int, problem_type) -> bool:
    """Whether a Hugging Face config (its ``num_labels``, ``problem_type``) describes this kind's head."""
    return num_labels == 1 or problem_type == "regression"


def predict(logits: np.ndarray) -> np.ndarray:
    """The hard predictions, one number per decision (the stabilising-predictions rule compares them)."""
    return np.asarray(logits).reshape(-1)


KIND = TaskKind(
    name="regression", metrics=("pearson", "spearman", "neg_mse"), headline="pearson",
    classes=False, named=False, label_sets=False, hard_loss="mse", soft_loss="mse", hinton="mse",
    no_targets=no_targets, quality=quality, tune=None, details=details, majority=majority, linear=linear,
    chance=chance, hf_head=hf_head, head_matches=head_matches, findings=findings, hf_matches=hf_matches,
    activation="none", predict=predict)
