"""What a task kind decides (the fields of one :data:`kdflow.tasks.TASKS` entry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class TaskKind:
    """One kind of task (see the module docstring); every callable takes and returns plain numpy / dicts."""

    name: str
    metrics: tuple[str, ...]  # what ``quality`` returns to select by; the first is the default train.metric
    headline: str             # the one metric tables, plausibility checks and trade-off plots quote
    classes: bool             # targets are one class index each (stratified splits, class counts, CE-scored layers)
    named: bool               # the outputs are label names (a label map is read, saved and checked)
    label_sets: bool          # each example's label is a set of names (none included), targets multi-hot
    hard_loss: str            # kdflow.distillation.losses.HARD_LOSSES entry: the loss to the gold targets
    soft_loss: str            # kdflow.distillation.losses.SOFT_LOSSES entry: Hinton's term to one teacher
    hinton: str               # the LOGIT_LOSSES entry that ``distill.logit_loss: hinton`` means for this task
    no_targets: Callable[[int, int], np.ndarray]  # (n, num_labels) -> the targets of n unlabelled examples
    # (logits [N, outputs], targets, decision, label names) -> metrics; ``decision``: what ``tune`` chose (None: the
    # default rule); the names matter to token tagging (entities are read from the tags)
    quality: Callable[..., dict]
    tune: Optional[Callable[[np.ndarray, np.ndarray], dict]]  # validation (logits, targets) -> a decision to save
    details: Callable[..., None]  # (logits, targets, label names, out, decision): adds report entries to out
    majority: Callable[[np.ndarray, int, int], np.ndarray]  # (train targets, n, num_labels) -> baseline logits
    linear: Callable[..., np.ndarray]  # (x_train, y_train, x_eval, y_eval, seed) -> the control's logits
    # (majority's scores, train targets) -> (the headline a model that learnt nothing reaches, its variance factor)
    chance: Callable[[dict, np.ndarray], tuple[float, float]]
    hf_head: Callable[[Optional[list]], dict]  # label names -> a Hugging Face config's head settings
    head_matches: Callable[[Optional[list], Optional[list], dict], bool]  # (its names, ours, its config)
    findings: Callable[[list, np.ndarray], list]  # (label names, train targets) -> [(severity, message)]
    activation: str           # what turns logits into the probabilities strategies read: softmax, sigmoid, none
    predict: Callable[[np.ndarray], np.ndarray]  # logits -> the hard predictions (kappa between rounds)
    hf_matches: Callable[[int, Optional[str]], bool]  # (num_labels, problem_type) of a HF config: this kind?
    # one output per word (token tagging): logits [N, W, C], targets [N, W]; losses read the real words only
    # (kdflow.tasks.tokens.words_of) and the tag names score the entities
    per_word: bool = False


__all__ = ["TaskKind"]
