"""Token tagging (slots, named entities): one BIO tag per word; logits ``[N, W, C]``, targets ``[N, W]``.

``W`` is a fixed width (``data.max_length``: no sentence of more words fits the model anyway), so every
split's outputs stack and cache like any other task's. A target is the tag's index under the label names
(the tags, ``O`` first); :data:`NO_WORD` where the sentence has no word (padding: never scored, trained or
distilled); :data:`IGNORE` at a word whose tag is unknown (the transfer set: distilled, never scored).

Losses and KD read the real words only (:func:`words_of`), as rows of a classification problem, so every
classification logit loss (Hinton's KD, DKD, several teachers) distils tags per word. The selection metric
is entity-level F1 (exact match, as seqeval counts; :mod:`kdflow.tasks.spans`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .classification import IGNORE
from .kind import TaskKind
from .spans import span_scores

NO_WORD = -1  # the target of a position past the sentence's last word


def words_of(logits, labels, *more):
    """The rows of real words: ``logits [B, W, C] -> [M, C]``, ``labels [B, W] -> [M]`` and each of ``more``
    (further ``[B, W, C]`` logits, a teacher's) alike; padding positions (:data:`NO_WORD`) dropped."""
    keep = labels != NO_WORD
    return (logits[keep], labels[keep], *(m[keep] for m in more))


def sentences(logits: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> tuple[list, list]:
    """(true tags, predicted tags) per sentence, over the words whose tag is known."""
    pred = np.asarray(logits).argmax(-1)
    targets = np.asarray(targets)
    true_tags, pred_tags = [], []
    for t_row, p_row in zip(targets, pred):
        known = t_row >= 0
        true_tags.append([names[i] for i in t_row[known]])
        pred_tags.append([names[i] if 0 <= i < len(names) else "O" for i in p_row[known]])
    return true_tags, pred_tags


def _names(names: Optional[Sequence[str]]) -> list[str]:
    if names:
        return list(names)
    raise ValueError("token tagging scores need the tag names: entities are read from them")


def quality(logits: np.ndarray, targets: np.ndarray, decision: Optional[dict] = None,
            names: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Entity-level F1, precision, recall (exact match) and token accuracy over the words with a known tag."""
    true_tags, pred_tags = sentences(logits, targets, _names(names))
    out = span_scores(true_tags, pred_tags)
    out.pop("per_type")
    return out


def details(logits: np.ndarray, targets: np.ndarray, label_names: Optional[Sequence[str]], out: dict,
            decision: Optional[dict] = None) -> None:
    """F1 per entity type, and the tag confusions, into ``out``."""
    names = _names(label_names)
    true_tags, pred_tags = sentences(logits, targets, names)
    out["per_type"] = span_scores(true_tags, pred_tags)["per_type"]
    pairs: dict[tuple[str, str], int] = {}
    for t, p in zip(true_tags, pred_tags):
        for a, b in zip(t, p):
            if a != b:
                pairs[(a, b)] = pairs.get((a, b), 0) + 1
    out["top_confusions"] = [{"true": a, "predicted": b, "count": c}
                             for (a, b), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]


def majority(train_targets: np.ndarray, n: int, num_labels: int) -> np.ndarray:
    """Logits that tag every word with train's most frequent tag (``O``, in any real data)."""
    targets = np.asarray(train_targets)
    known = targets[targets >= 0]
    top = int(np.bincount(known, minlength=num_labels).argmax()) if known.size else 0
    logits = np.zeros((n, targets.shape[1] if targets.ndim == 2 else 1, num_labels))
    logits[..., top] = 1.0
    return logits


def linear(x_train, y_train: np.ndarray, x_eval, y_eval: np.ndarray, seed: int) -> np.ndarray:
    """A linear SVM (SGD) per word: ``x_*`` one row per word of every sentence in order (``kdflow.diagnose.
    baselines.features``); its decision scores as the word logits ``[N, W, C]``."""
    from sklearn.linear_model import SGDClassifier
    y_train, y_eval = np.asarray(y_train), np.asarray(y_eval)
    rows = y_train[y_train != NO_WORD]
    known = rows >= 0
    classes = int(max(y_train.max(), y_eval.max())) + 1
    logits = np.zeros((*y_eval.shape, classes))
    if len(np.unique(rows[known])) < 2:  # one tag only: that tag everywhere
        logits[..., int(rows[known][0]) if known.any() else 0] = 1.0
        return logits
    model = SGDClassifier(alpha=1e-4, max_iter=30, tol=None, random_state=seed).fit(x_train[np.flatnonzero(known)],
                                                                                   rows[known])
    scores = model.decision_function(x_eval)
    scores = np.stack([-scores, scores], 1) if scores.ndim == 1 else scores
    words = np.full((scores.shape[0], classes), -np.inf)
    words[:, model.classes_.astype(np.int64)] = scores
    logits[y_eval != NO_WORD] = words
    return logits


def chance(majority_scores: dict, train_targets: np.ndarray) -> tuple[float, float]:
    """Tagging every word ``O`` finds no entity: span F1 0; its variance factor is floored."""
    return majority_scores.get("validation", {}).get("span_f1", 0.0), 0.25


def hf_head(label_names: Optional[list]) -> dict:
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)}}


def head_matches(theirs: Optional[list], ours: Optional[list], config: dict) -> bool:
    return theirs == ours


def findings(label_names: list, train_targets: np.ndarray) -> list[tuple[str, str]]:
    """No entity in the training tags: nothing to learn but ``O``."""
    if label_names and all(n == "O" for n in label_names):
        return [("warning", "The training tags are all O: there is no entity to learn; check the tag column or "
                            "the spans")]
    return []


def no_targets(n: int, num_labels: int) -> np.ndarray:
    """Unknown tags of ``n`` one-word examples (the loader builds the real ones from each sentence's words)."""
    return np.full((n, 1), IGNORE, dtype=np.int64)


def hf_matches(num_labels: int, problem_type) -> bool:
    """A sequence-classification config never describes a tagger (their architectures differ)."""
    return False


def predict(logits: np.ndarray) -> np.ndarray:
    """The hard predictions: one tag per position (padding included; it is the same for every model)."""
    return np.asarray(logits).argmax(-1).reshape(-1)


KIND = TaskKind(
    name="tokens", metrics=("span_f1", "token_accuracy"), headline="span_f1",
    classes=False, named=True, label_sets=False, hard_loss="ce", soft_loss="kd", hinton="hinton",
    no_targets=no_targets, quality=quality, tune=None, details=details, majority=majority, linear=linear,
    chance=chance, hf_head=hf_head, head_matches=head_matches, findings=findings, hf_matches=hf_matches,
    activation="softmax", predict=predict, per_word=True)
