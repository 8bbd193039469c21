"""Single-label classification: one class per example, out of the label names; logits ``[N, C]``."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .kind import TaskKind

IGNORE = -100  # the target of an example without a label (torch's cross-entropy skips it)


def quality(logits: np.ndarray, targets: np.ndarray, decision: Optional[dict] = None, names=None) -> dict[str, float]:
    """Accuracy, macro F1, MCC, and for two classes F1 of label 1 (GLUE's F1 for MRPC and QQP)."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    pred = logits.argmax(-1)
    out = {"accuracy": float(accuracy_score(targets, pred)),
           "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
           "mcc": float(matthews_corrcoef(targets, pred))}
    if logits.ndim == 2 and logits.shape[-1] == 2:
        out["f1"] = float(f1_score(targets, pred, pos_label=1, average="binary", zero_division=0))
    return out


def details(logits: np.ndarray, targets: np.ndarray, label_names: Optional[Sequence[str]], out: dict,
            decision: Optional[dict] = None) -> None:
    """Macro and weighted precision / recall / F1, a per-class report and the top confusions, into ``out``."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    pred = logits.argmax(-1)
    labels = list(range(len(label_names))) if label_names else sorted(set(targets) | set(pred))
    names = list(label_names) if label_names else [str(i) for i in labels]
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(targets, pred, labels=labels, average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    p, r, f, s = precision_recall_fscore_support(targets, pred, labels=labels, zero_division=0)
    out["per_class"] = {names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                   "support": int(s[i])} for i in range(len(labels))}
    cm = confusion_matrix(targets, pred, labels=labels)
    off = [(int(cm[i, j]), names[i], names[j]) for i in range(len(labels)) for j in range(len(labels))
           if i != j and cm[i, j]]
    out["top_confusions"] = [{"true": t, "predicted": p_, "count": c} for c, t, p_ in sorted(off, reverse=True)[:10]]


def majority(train_targets: np.ndarray, n: int, num_labels: int) -> np.ndarray:
    """Logits that always predict train's most frequent class."""
    logits = np.zeros((n, num_labels))
    logits[:, int(np.bincount(train_targets.astype(np.int64), minlength=num_labels).argmax())] = 1.0
    return logits


def linear(x_train, y_train: np.ndarray, x_eval, y_eval: np.ndarray, seed: int) -> np.ndarray:
    """A linear SVM trained by SGD; its decision scores as logits over every class either side has."""
    from sklearn.linear_model import SGDClassifier
    model = SGDClassifier(alpha=1e-4, max_iter=30, tol=None, random_state=seed).fit(x_train, y_train)
    scores = model.decision_function(x_eval)
    scores = np.stack([-scores, scores], 1) if scores.ndim == 1 else scores
    logits = np.full((len(y_eval), int(max(y_train.max(), y_eval.max())) + 1), -np.inf)
    logits[:, model.classes_.astype(np.int64)] = scores
    return logits


def chance(majority_scores: dict, train_targets: np.ndarray) -> tuple[float, float]:
    """The majority class's accuracy, and p(1 - p) (an accuracy's variance factor)."""
    p = majority_scores.get("validation", {}).get("accuracy", 0.0)
    return p, max(p * (1 - p), 1e-4)


def hf_head(label_names: Optional[list]) -> dict:
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)}, "problem_type": "single_label_classification"}


def head_matches(theirs: Optional[list], ours: Optional[list], config: dict) -> bool:
    return theirs == ours


def _number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def findings(label_names: list, train_targets: np.ndarray) -> list[tuple[str, str]]:
    """Labels that are all numbers, some fractional: a regression target read as classes?"""
    names = label_names or []
    numbers = [float(n) for n in names if _number(n)]
    if len(numbers) == len(names) and len(names) > 10 and any(not x.is_integer() for x in numbers):
        return [("warning", f"The {len(names)} labels are all numbers, some fractional ({', '.join(names[:4])}, "
                            "...): is it a regression target? Set data.task: regression")]
    return []


def no_targets(n: int, num_labels: int) -> np.ndarray:
    """The targets of ``n`` examples without a label (the transfer set): skipped by the loss."""
    return np.full(n, IGNORE, dtype=np.int64)

def hf_matches(num_labels: int, problem_type) -> bool:
    """Whether a Hugging Face config (its ``num_labels``, ``problem_type``) describes this kind's head."""
    return num_labels != 1 and problem_type not in ("regression", "multi_label_classification")


def predict(logits: np.ndarray) -> np.ndarray:
    """The hard predictions, one number per decision (the stabilising-predictions rule compares them)."""
    return np.asarray(logits).argmax(-1)


KIND = TaskKind(
    name="classification", metrics=("accuracy", "macro_f1", "f1", "mcc"), headline="accuracy",
    classes=True, named=True, label_sets=False, hard_loss="ce", soft_loss="kd", hinton="hinton",
    no_targets=no_targets, quality=quality, tune=None, details=details, majority=majority, linear=linear,
    chance=chance, hf_head=hf_head, head_matches=head_matches, findings=findings, hf_matches=hf_matches,
    activation="softmax", predict=predict)
