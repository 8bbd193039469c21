"""Entity-level scores of BIO tag sequences, as seqeval and conlleval count them.

An entity is a maximal run ``B-X I-X ...`` (an ``I-X`` that follows anything but ``B-X``/``I-X`` starts a new
entity, as conlleval does); a predicted entity counts only when its type, first and last word all match a
true one (exact match). Precision, recall and F1 are micro-averaged over every entity of every sentence.
"""

from __future__ import annotations

from collections import Counter


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """``(type, first word, last word)`` of every entity in one sentence's tags."""
    out, kind, start = set(), None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and name == kind
        if kind is not None and not continues:
            out.add((kind, start, i - 1))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = name, i
    return out


def _f1(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else (1.0 if not n_true else 0.0)
    r = tp / n_true if n_true else (1.0 if not n_pred else 0.0)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def span_scores(true: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity precision / recall / F1 (micro, exact match), token accuracy, and F1 per entity type."""
    if len(true) != len(pred) or any(len(t) != len(p) for t, p in zip(true, pred)):
        raise ValueError("span_scores needs one predicted tag per true tag, sentence by sentence")
    tp, n_true, n_pred = Counter(), Counter(), Counter()
    right = total = 0
    for t, p in zip(true, pred):
        te, pe = entities(t), entities(p)
        for e in te:
            n_true[e[0]] += 1
        for e in pe:
            n_pred[e[0]] += 1
        for e in te & pe:
            tp[e[0]] += 1
        right += sum(a == b for a, b in zip(t, p))
        total += len(t)
    precision, recall, f1 = _f1(sum(tp.values()), sum(n_pred.values()), sum(n_true.values()))
    return {"span_f1": f1, "span_precision": precision, "span_recall": recall,
            "token_accuracy": right / total if total else 1.0,
            "per_type": {k: _f1(tp[k], n_pred[k], n_true[k])[2] for k in sorted(set(n_true) | set(n_pred))}}


__all__ = ["entities", "span_scores"]
