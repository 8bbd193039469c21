"""Baselines a score must beat, for ``kdflow check``: the majority class (the mean, for regression), a
simple linear model on the raw inputs, and the same model trained on **shuffled** labels.

The shuffled control learns nothing true about the labels, so its validation score must sit near chance
(the majority rate). Far above chance means the evaluation itself is broken: the labels reach the
model through the inputs, or the scores are computed against something other than held-out gold labels.

The linear model is deliberately cheap and independent of the teacher and student: hashed word uni- and
bigrams for text (a pair's second text hashed apart from the first), downsampled pixels for images,
padded values for numeric sequences; a linear SVM trained by SGD (ridge regression for regression).
Both are scored with :func:`kdflow.metrics.quality`, the function that scores every kdflow model.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..data.splits import Split, TaskData
from ..metrics import quality
from ..tasks import task_kind
from .check import Finding

CONTROL_EXAMPLES = 4000  # training examples the linear models read at most
VALUES_WIDTH = 256  # numeric sequences: their first 256 values, zero-padded


def majority(data: TaskData) -> dict:
    """Predicting train's most frequent class (its mean target, for regression) on each held-out split."""
    y = data.train.targets[data.train.labelled]
    out = {}
    for name, part in (("validation", data.validation), ("test", data.test)):
        if part is None or len(part) == 0:
            continue
        out[name] = quality(task_kind(data.task).majority(y, len(part), data.num_labels), part.targets, data.task,
                            names=data.label_names)
    return out


def features(split: Split, width: int = 2 ** 18):
    """A fixed-size numeric view of any split's inputs (sparse for text)."""
    if "text" in split.inputs:
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import HashingVectorizer
        vec = HashingVectorizer(n_features=width, ngram_range=(1, 2), alternate_sign=False, norm="l2")
        parts = [vec.transform([str(t) for t in split.inputs["text"]])]
        if "text_pair" in split.inputs:
            parts.append(vec.transform([f"pair {t}" for t in split.inputs["text_pair"]]))
        return hstack(parts).tocsr()
    if "words" in split.inputs:  # one row per word: the word, its shape and its neighbours (a linear tagger)
        from sklearn.feature_extraction.text import HashingVectorizer
        vec = HashingVectorizer(n_features=width, analyzer=lambda feats: feats, alternate_sign=False, norm="l2")
        return vec.transform([word_features(words, i) for words in split.inputs["words"] for i in range(len(words))])
    if "image" in split.inputs:
        images = [np.asarray(a, dtype=np.float32) for a in split.inputs["image"]]
        step = max(1, images[0].shape[0] // 16)
        return np.stack([a[::step, ::step].reshape(-1) / 255.0 for a in images])
    out = np.zeros((len(split), VALUES_WIDTH), dtype=np.float32)  # one width for every split
    for i, v in enumerate(split.inputs["values"]):
        r = np.asarray(v, dtype=np.float32).reshape(-1)[:VALUES_WIDTH]
        out[i, :len(r)] = r
    return out


def word_features(words: list, i: int) -> list[str]:
    """What a linear tagger reads of word ``i``: itself (as written and lower-cased), its last three letters,
    whether it is capitalised or a number, and the words either side."""
    w = str(words[i])
    prev = str(words[i - 1]).lower() if i else "<s>"
    nxt = str(words[i + 1]).lower() if i + 1 < len(words) else "</s>"
    return [f"w={w}", f"lw={w.lower()}", f"suf={w[-3:].lower()}", f"cap={w[:1].isupper()}",
            f"num={w.isdigit()}", f"prev={prev}", f"next={nxt}"]


def _fit_score(x_train, y_train: np.ndarray, x_eval, y_eval: np.ndarray, task: str, seed: int,
               names: Optional[list] = None) -> dict:
    return quality(task_kind(task).linear(x_train, y_train, x_eval, y_eval, seed), y_eval, task, names=names)


def controls(data: TaskData, seed: int = 0, limit: int = CONTROL_EXAMPLES) -> dict:
    """Validation scores of the linear model on true labels (``linear``) and on shuffled ones (``shuffled``)."""
    rng = np.random.default_rng(seed)
    keep = data.train.labelled
    if len(keep) > limit:
        keep = np.sort(rng.choice(keep, limit, replace=False))
    train = data.train.subset(keep)
    if len(data.validation) == 0 or (task_kind(data.task).classes and len(np.unique(train.targets)) < 2):
        return {}
    x_train, x_eval = features(train), features(data.validation)
    if task_kind(data.task).per_word:  # tags shuffled among the training words, each sentence keeps its length
        shuffled, words = train.targets.copy(), train.targets >= 0
        shuffled[words] = rng.permutation(train.targets[words])
    else:
        shuffled = rng.permutation(train.targets)
    return {"examples": len(train),
            "linear": _fit_score(x_train, train.targets, x_eval, data.validation.targets, data.task, seed,
                                 data.label_names),
            "shuffled": _fit_score(x_train, shuffled, x_eval, data.validation.targets, data.task, seed,
                                   data.label_names)}


def control_findings(data: TaskData, base: dict, control: dict) -> list[Finding]:
    """A shuffled control far above chance; a near-perfect linear baseline (the task may be trivial or leaky)."""
    if not control:
        return []
    kind = task_kind(data.task)
    metric = kind.headline
    chance, spread = kind.chance(base, data.train.targets[data.train.labelled])
    shuffled, n = control["shuffled"][metric], len(data.validation)
    # 3 standard errors of chance: sqrt(p(1-p)/n) for an accuracy, 1/sqrt(n) for a null Pearson correlation
    noise = 3 * math.sqrt(spread / max(n, 1))
    out = []
    if shuffled > chance + max(0.05, noise):
        out.append(Finding("warning", "plausibility", f"A linear model trained on shuffled labels scores validation "
                           f"{metric} {shuffled:.4f}, far above chance ({chance:.4f}): the labels reach the inputs, "
                           "or validation is scored against something other than its gold labels"))
    linear = control["linear"][metric]
    if linear >= 0.995:
        out.append(Finding("warning", "plausibility", f"A linear model on the raw inputs already scores validation "
                           f"{metric} {linear:.4f}: the task may be trivial, or an input column gives the label away"))
    return out


__all__ = ["majority", "features", "controls", "control_findings", "CONTROL_EXAMPLES"]
