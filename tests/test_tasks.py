"""The contract every task kind keeps (``kdflow.tasks.TASKS``): a new kind is exercised here by its entry."""

import numpy as np
import pytest
import torch

from kdflow.distillation.distiller import LOGIT_LOSSES, resolve_logit_loss
from kdflow.distillation.losses import HARD_LOSSES, SOFT_LOSSES, hinton_loss
from kdflow.errors import KdflowError
from kdflow.metrics import TASK_METRICS, quality
from kdflow.tasks import TASKS, task_kind, task_of_hf
from kdflow.tasks.classification import IGNORE
from kdflow.tasks.tokens import NO_WORD, words_of

NAMES = ["a", "b", "c"]
TAGS = ["O", "B-x", "I-x"]


def outputs_of(kind, n: int = 30):
    """Targets and a model's outputs for them (a good model: mostly right), of the kind's shape."""
    rng = np.random.default_rng(0)
    if kind.per_word:  # BIO tags of 1-5 words per sentence, padded to 6 positions
        y = np.full((n, 6), NO_WORD, dtype=np.int64)
        for i in range(n):
            tags = [0, 1, 2, 0, 1][: 1 + i % 5] if i % 2 else [1, 0, 1, 2, 0][: 1 + i % 5]
            y[i, : len(tags)] = tags
        logits = rng.normal(0, 0.1, (n, 6, len(TAGS)))
        logits += 1.0 * (np.arange(len(TAGS)) == np.maximum(y, 0)[..., None])
        logits[0, 0] = np.roll(logits[0, 0], 1)  # one word wrong
        return logits, y
    if kind.classes:
        y = np.arange(n) % len(NAMES)
        logits = rng.normal(0, 0.1, (n, len(NAMES)))
        logits[np.arange(n), y] += 1.0
        logits[0] = np.roll(logits[0], 1)  # one wrong
        return logits, y.astype(kind.no_targets(0, len(NAMES)).dtype)
    if kind.named:  # several labels per example, some none
        y = (rng.random((n, len(NAMES))) < 0.4).astype(np.float32)
        logits = np.where(y > 0, 2.0, -2.0) + rng.normal(0, 0.5, y.shape)
        logits[0] = -logits[0]  # one example wrong on every label
        return logits, y
    y = rng.normal(0, 1, n).astype(np.float32)
    return (y + rng.normal(0, 0.1, n)).reshape(-1, 1), y


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_kind_keeps_the_contract(name):
    kind = task_kind(name)
    assert kind.name == name and TASK_METRICS[name] == kind.metrics and kind.headline in kind.metrics
    logits, y = outputs_of(kind)
    names = TAGS if kind.per_word else NAMES if kind.named else None
    scores = quality(logits, y, name, names=names)
    assert set(kind.metrics) - {"f1"} <= set(scores) and scores[kind.headline] > 0.8  # the good model scores well
    report = dict(scores)
    kind.details(logits, y, names, report)
    assert {k: report[k] for k in scores} == scores  # details only add
    # the trivial baseline and the linear control: outputs quality() reads, of the split's length
    base = kind.majority(y, 7, len(NAMES))
    assert len(base) == 7 and kind.headline in quality(base, y[:7], name, names=names)
    # features that give the target away: the control learns it (tagging: one row per word)
    x = (np.eye(len(TAGS))[y[y != NO_WORD]] if kind.per_word else np.eye(len(NAMES))[y.astype(np.int64)]
         if kind.classes else y.astype(np.float64) if kind.named else np.c_[y, np.ones_like(y)].astype(np.float64))
    control = quality(kind.linear(x, y, x, y, 0), y, name, names=names)
    assert control[kind.headline] > 0.9
    chance, spread = kind.chance({"validation": quality(kind.majority(y, len(y), len(NAMES)), y, name,
                                                         names=names)}, y)
    assert 0 <= chance <= 1 and spread > 0
    # losses: named entries of the loss tables; hinton_loss mixes them by alpha
    assert kind.hard_loss in HARD_LOSSES and kind.soft_loss in SOFT_LOSSES
    s, t = torch.tensor(logits, dtype=torch.float32), torch.tensor(logits[::-1].copy(), dtype=torch.float32)
    labels = torch.tensor(y)
    terms = hinton_loss(s, t, labels, 2.0, 0.25, name)
    rows = words_of(s, labels, t) if kind.per_word else (s, labels, t)  # tagging: the words are the rows
    assert torch.equal(terms["loss_hard"], HARD_LOSSES[kind.hard_loss](rows[0], rows[1]))
    assert torch.equal(terms["loss_kd"], SOFT_LOSSES[kind.soft_loss](rows[0], rows[2], 2.0))
    assert torch.allclose(terms["loss"], 0.25 * terms["loss_kd"] + 0.75 * terms["loss_hard"])
    assert resolve_logit_loss("hinton", name, 1) == kind.hinton and name in LOGIT_LOSSES[kind.hinton].tasks
    # a Hugging Face head for it is recognised as this kind, and as matching its own labels
    head = kind.hf_head(names)
    if kind.per_word:  # a tagger's config says token classification in its architecture, not its head settings
        assert not kind.hf_matches(head["num_labels"], head.get("problem_type"))
    else:
        assert task_of_hf(head["num_labels"], head["problem_type"]) == name
    assert kind.head_matches(names, names, head)
    # the target of an unlabelled example is one the kind's hard loss skips
    if kind.per_word:  # a sentence of unknown tags: every word IGNORE
        unknown = y[1:2].copy()
        unknown[unknown != NO_WORD] = IGNORE
        assert kind.no_targets(1, len(TAGS)).tolist() == [[IGNORE]]
        with_missing = torch.tensor(np.concatenate([y[:1], unknown]))
        one, both = hinton_loss(s[:1], None, labels[:1], 1.0, 0.0, name), hinton_loss(s[:2], None, with_missing, 1.0,
                                                                                        0.0, name)
        assert torch.allclose(one["loss"], both["loss"])
        return
    with_missing = torch.tensor(np.concatenate([y[:1], kind.no_targets(1, len(NAMES))]))
    hard = HARD_LOSSES[kind.hard_loss]
    assert torch.allclose(hard(s[:2], with_missing), hard(s[:1], labels[:1]))


def test_task_findings_and_unknown_tasks():
    fractional = [f"{i}.5" for i in range(12)]
    assert "regression target" in task_kind("classification").findings(fractional, np.arange(12))[0][1]
    assert task_kind("classification").findings(NAMES, np.arange(3)) == []
    assert "are they classes" in task_kind("regression").findings([], np.array([1.0, 2.0, 3.0]))[0][1]
    assert task_kind("regression").findings([], np.array([0.5, 1.25])) == []
    with pytest.raises(KdflowError, match="Unknown task 'tagging'; data.task is one of classification, regression, multilabel"):
        task_kind("tagging")
    assert task_of_hf(1, None) == "regression" and task_of_hf(4, None) == "classification"
    assert task_of_hf(1, "single_label_classification") == "regression"  # one output is a regression head
