"""Multi-label classification: any number of the label names per example, none included; logits ``[N, C]``,
one sigmoid per label; targets multi-hot ``[N, C]`` (a row of NaN: no label known, the transfer set).

A label is predicted where its probability reaches the decision threshold: 0.5 unless thresholds tuned on
validation are given (:func:`tune_thresholds`: one global and one per label, by micro-F1).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .kind import TaskKind

GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # the thresholds tried when tuning


def probabilities(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, dtype=np.float64), -60, 60)))


def decide(logits: np.ndarray, thresholds: "Optional[np.ndarray | float]" = None) -> np.ndarray:
    """``[N, C]`` booleans: each label whose probability reaches its threshold (0.5 by default)."""
    return probabilities(logits) >= (0.5 if thresholds is None else np.asarray(thresholds, dtype=np.float64))


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 from counts; 1.0 where there is nothing to find and nothing was predicted (sklearn's zero_division=1
    would say the same; 0 elsewhere when undefined)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)


def scores_of(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Micro-F1, macro-F1 (over labels present in ``y`` or predicted), subset accuracy, Hamming loss."""
    tp, fp, fn = (pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)
    seen = (y.sum(0) + pred.sum(0)) > 0
    return {"micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
            "macro_f1": float(_f1(tp[seen], fp[seen], fn[seen]).mean()) if seen.any() else 1.0,
            "subset_accuracy": float((pred == y).all(1).mean()),
            "hamming_loss": float((pred != y).mean())}


def quality(logits: np.ndarray, targets: np.ndarray, decision: Optional[dict] = None, names=None) -> dict[str, float]:
    """The scores at the decision thresholds: ``decision["per_label"]`` (from :func:`tune_thresholds`), else 0.5."""
    return scores_of(decide(logits, decision["per_label"] if decision else None), np.asarray(targets) > 0.5)


def tune_thresholds(logits: np.ndarray, targets: np.ndarray) -> dict:
    """Decision thresholds chosen on (validation) ``logits`` by micro-F1: one for every label (``global``), then
    per label, each label's own best on the grid with the others at the global one (ties: the one nearest 0.5)."""
    p, y = probabilities(logits), np.asarray(targets) > 0.5
    order = GRID[np.argsort(np.abs(GRID - 0.5), kind="stable")]  # ties go to the threshold nearest 0.5
    best = max(order, key=lambda t: scores_of(p >= t, y)["micro_f1"])
    per = np.full(p.shape[1], best)
    for c in range(p.shape[1]):
        def score(t: float) -> float:
            trial = per.copy()
            trial[c] = t
            return scores_of(p >= trial, y)["micro_f1"]
        per[c] = max(order, key=score)
    return {"global": float(best), "per_label": [float(t) for t in per],
            "micro_f1": {"at_0.5": scores_of(p >= 0.5, y)["micro_f1"], "global": scores_of(p >= best, y)["micro_f1"],
                         "per_label": scores_of(p >= per, y)["micro_f1"]}}


def details(logits: np.ndarray, targets: np.ndarray, label_names: Optional[Sequence[str]], out: dict,
            decision: Optional[dict] = None) -> None:
    """Per-label precision, recall, F1 and support, into ``out``."""
    pred, y = decide(logits, decision["per_label"] if decision else None), np.asarray(targets) > 0.5
    names = list(label_names) if label_names else [str(i) for i in range(y.shape[1])]
    tp, fp, fn = (pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)
    f1 = _f1(tp, fp, fn)
    out["per_label"] = {n: {"precision": float(tp[i] / max(tp[i] + fp[i], 1)),
                            "recall": float(tp[i] / max(tp[i] + fn[i], 1)), "f1": float(f1[i]),
                            "support": int(y[:, i].sum())} for i, n in enumerate(names)}


def majority(train_targets: np.ndarray, n: int, num_labels: int) -> np.ndarray:
    """Logits that always predict train's most frequent label *set* (often the empty one)."""
    rows, counts = np.unique(np.asarray(train_targets) > 0.5, axis=0, return_counts=True)
    top = rows[np.lexsort((rows.sum(1), -counts))[0]]  # the commonest; ties: the smaller set
    return np.where(np.broadcast_to(top, (n, num_labels)), 10.0, -10.0)


def linear(x_train, y_train: np.ndarray, x_eval, y_eval: np.ndarray, seed: int) -> np.ndarray:
    """One linear SVM per label (one-vs-rest, trained by SGD); a label train never shows is never predicted."""
    from sklearn.linear_model import SGDClassifier
    y_train = np.asarray(y_train) > 0.5
    logits = np.full((y_eval.shape[0], y_train.shape[1]), -10.0)
    for c in range(y_train.shape[1]):
        if y_train[:, c].all() or not y_train[:, c].any():
            logits[:, c] = 10.0 if y_train[:, c].all() else -10.0
            continue
        model = SGDClassifier(alpha=1e-4, max_iter=30, tol=None, random_state=seed).fit(x_train, y_train[:, c])
        logits[:, c] = model.decision_function(x_eval)
    return logits


def chance(majority_scores: dict, train_targets: np.ndarray) -> tuple[float, float]:
    """The better of the most frequent set's micro-F1 and that of guessing each label at its train rate ``r_c``
    (expected micro-F1 ``Σ r_c² / Σ r_c``: what a model trained on shuffled labels reaches), and p(1 - p)."""
    rates = (np.asarray(train_targets) > 0.5).mean(0) if len(train_targets) else np.zeros(1)
    guess = float((rates ** 2).sum() / rates.sum()) if rates.sum() > 0 else 0.0
    p = max(majority_scores.get("validation", {}).get("micro_f1", 0.0), guess)
    return p, max(p * (1 - p), 1e-4)


def hf_head(label_names: Optional[list]) -> dict:
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)}, "problem_type": "multi_label_classification"}


def head_matches(theirs: Optional[list], ours: Optional[list], config: dict) -> bool:
    return theirs == ours and config.get("problem_type") in (None, "multi_label_classification")


def findings(label_names: list, train_targets: np.ndarray) -> list[tuple[str, str]]:
    """Every training example with exactly one label: a single-label task read as multi-label?"""
    per_row = (np.asarray(train_targets) > 0.5).sum(1)
    if len(per_row) >= 20 and (per_row == 1).all():
        return [("warning", f"Every one of the {len(per_row)} training examples has exactly one label: is it a "
                            "single-label task? Set data.task: classification")]
    return []


def no_targets(n: int, num_labels: int) -> np.ndarray:
    """The targets of ``n`` examples without labels (the transfer set): rows of NaN, skipped by the loss."""
    return np.full((n, num_labels), np.nan, dtype=np.float32)


def hf_matches(num_labels: int, problem_type) -> bool:
    """Whether a Hugging Face config (its ``num_labels``, ``problem_type``) describes this kind's head."""
    return problem_type == "multi_label_classification"


def predict(logits: np.ndarray) -> np.ndarray:
    """The hard predictions, one number per decision (the stabilising-predictions rule compares them)."""
    return decide(logits).astype(np.int64).reshape(-1)


KIND = TaskKind(
    name="multilabel", metrics=("micro_f1", "macro_f1", "subset_accuracy"), headline="micro_f1",
    classes=False, named=True, label_sets=True, hard_loss="bce", soft_loss="binary_kd", hinton="binary_kd",
    no_targets=no_targets, quality=quality, tune=tune_thresholds, details=details, majority=majority, linear=linear,
    chance=chance, hf_head=hf_head, head_matches=head_matches, findings=findings, hf_matches=hf_matches,
    activation="sigmoid", predict=predict)
