"""``kdflow check``: can this run's numbers be trusted? Findings about the data and the models, before
any training, and about the scores after it.

A loss that keeps falling while test accuracy is "for some reason" very high is the classic sign of
scoring training data, of labels leaking into the inputs, or of the wrong loss. The checks:

* **leakage** — exact duplicates (the content hash of :mod:`kdflow.leakage`, pair-aware) and
  normalised-text duplicates (case, accents' width forms, punctuation and spacing ignored) between
  train, the transfer set and every held-out split. A held-out split equal to, or contained in, the
  training split is an error: it would score training data.
* **labels** — the data's label names and order against the saved teacher's and student's heads;
  classes with fewer than 2 training examples; label names that look like missing values; training
  inputs that occur with two different labels.
* **task** — numeric labels that look like a regression target under ``task: classification`` (and
  few integer targets under ``task: regression``); a logit loss or metric of the other task.
* **plausibility** (:func:`plausibility`) — test accuracy near 100 %, a student far above its teacher,
  a label-shuffled control far above chance (:mod:`kdflow.baselines`).

Each finding is an ``error`` (the run would be wrong: teach, distill and active refuse it), a
``warning`` (shown, logged, kept in ``metrics.json`` and the report) or ``info``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .data.splits import Split, TaskData, content_keys
from .errors import KdflowError

MISSING_LIKE = {"", "nan", "none", "null", "na", "n/a", "<na>", "nat", "?", "-", "undefined"}
EXAMPLES = 3  # examples quoted per finding


@dataclass
class Finding:
    level: str  # error | warning | info
    check: str  # leakage | labels | task | baseline | plausibility
    message: str
    examples: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def normalise(value) -> str:
    """Text as a reader compares it: NFKC, case-folded, punctuation dropped, spaces collapsed."""
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def normalised_keys(inputs: dict[str, list]) -> list[str]:
    """Per example, its text fields normalised and joined (pair-aware); other inputs by exact content."""
    text = [k for k in sorted(inputs) if k in ("text", "text_pair")]
    if not text:
        return content_keys(inputs)
    return ["\x1f".join(normalise(inputs[k][i]) for k in text) for i in range(len(inputs[text[0]]))]


def _shown(split: Split, i: int) -> str:
    fields = [str(split.inputs[k][i]) for k in ("text", "text_pair") if k in split.inputs]
    shown = " ||| ".join(fields) if fields else split.ids[i]
    return shown if len(shown) <= 80 else shown[:77] + "..."


class Keys:
    """Each split's exact and normalised content keys, computed once however many pairs read them."""

    def __init__(self):
        self.done: dict[int, tuple[list, list]] = {}

    def __call__(self, split: Split) -> tuple[list, list]:
        if id(split) not in self.done:
            self.done[id(split)] = (content_keys(split.inputs), normalised_keys(split.inputs))
        return self.done[id(split)]


MIN_FATAL = 10  # a held-out split inside train is an error from this many examples (a handful may be chance)


def _overlap(pair: tuple[str, Split, str, Split], keys: Keys, fatal: bool = True) -> list[Finding]:
    """Examples of the held-out split whose inputs are in the training one: exactly, then only once normalised
    (all of them inside it is an error when ``fatal``)."""
    train_name, train, held_name, held = pair
    if len(held) == 0 or len(train) == 0:
        return []
    (exact_train, norm_train), (exact_held, norm_held) = map(set, keys(train)), keys(held)
    exact = [i for i, k in enumerate(exact_held) if k in exact_train]
    is_exact = set(exact)
    near = [i for i, k in enumerate(norm_held) if k in norm_train and i not in is_exact]
    n = len(held)
    if len(exact) == n:
        return [_contained(pair, exact, len(exact_train) == len(set(exact_held)), fatal and n >= MIN_FATAL)]
    out = []
    if exact:  # a few duplicates are common in real data (CLINC150: 0.1 %): a warning from 1 %
        out.append(Finding("warning" if len(exact) >= 0.01 * n else "info", "leakage",
                           f"{len(exact)} of {n} {held_name} examples ({len(exact) / n:.1%}) also occur in "
                           f"{train_name} (exact duplicates); their scores measure memory, not generalisation: "
                           "remove them from one side", [_shown(held, i) for i in exact[:EXAMPLES]]))
    if near:
        out.append(Finding("warning" if len(near) >= 0.05 * n else "info", "leakage",
                           f"{len(near)} of {n} {held_name} examples ({len(near) / n:.1%}) equal a {train_name} "
                           "example once case, punctuation and spacing are ignored",
                           [_shown(held, i) for i in near[:EXAMPLES]]))
    return out


def _contained(pair: tuple, exact: list, same: bool, fatal: bool) -> Finding:
    train_name, _, held_name, held = pair
    why = (f"it would score training data; give a separate {held_name} file, or drop it and let kdflow hold one "
           "out" if train_name != "validation" else "it repeats the data that picks the best epoch; give a "
           f"separate {held_name} file")
    return Finding("error" if fatal else "warning", "leakage",
                   f"The {held_name} split {'equals' if same else 'is contained in'} the {train_name} split (all "
                   f"{len(held)} of its examples are {train_name} examples), so {why}",
                   [_shown(held, i) for i in exact[:EXAMPLES]])


def leakage_findings(data: TaskData, keys: Optional[Keys] = None) -> list[Finding]:
    """Overlaps of every held-out split with train and the transfer set, and of test with validation."""
    held = [("validation", data.validation), ("test", data.test),
            *((f"test_{k}", v) for k, v in data.extra_tests.items())]
    sources = [("train", data.train)] + ([("transfer set", data.unlabelled)] if data.unlabelled is not None else [])
    # a validation split kdflow held out of train repeats train only where train repeats itself: not the
    # user's mistake, so said as a warning (with its fix), never a refusal
    held_out_here = any(n.startswith("no validation split given") for n in data.notes)
    out, keys = [], keys or Keys()
    for held_name, part in held:
        if part is None:
            continue
        for source_name, source in sources:
            fatal = not (held_name == "validation" and held_out_here)
            out += _overlap((source_name, source, held_name, part), keys, fatal)
    if data.test is not None:
        out += _overlap(("validation", data.validation, "test", data.test), keys, fatal=False)
    return out


def label_findings(data: TaskData, heads: dict[str, Optional[list]], keys: Optional[Keys] = None) -> list[Finding]:
    """Label names (missing-looking, rare), conflicting labels, and the models' heads against the data."""
    out = [*_head_findings(data, heads)]
    if data.task != "classification" or not data.label_names:
        return out
    labelled = data.train.targets[data.train.labelled]
    counts = np.bincount(labelled.astype(np.int64), minlength=data.num_labels)
    missing = [n for n in data.label_names if str(n).strip().casefold() in MISSING_LIKE]
    if missing:
        rows = sum(int(counts[data.label_names.index(n)]) for n in missing)
        out.append(Finding("warning", "labels", f"Label(s) {', '.join(repr(n) for n in missing)} look like missing "
                           f"values ({rows} training rows); drop those rows or give them their real label"))
    rare = [f"{n!r} ({c})" for n, c in zip(data.label_names, counts) if c < 2]
    if rare:
        out.append(Finding("warning", "labels", f"{len(rare)} class(es) have fewer than 2 training examples: "
                           f"{', '.join(rare[:10])}; the model cannot learn them, and a stratified split cannot "
                           "hold them out", rare[:EXAMPLES]))
    out += _conflicts(data, keys or Keys())
    return out


def _conflicts(data: TaskData, keys: Keys) -> list[Finding]:
    """Training inputs (normalised) that carry two different labels: noise, or a task the inputs cannot decide."""
    by_input: dict[str, set] = defaultdict(set)
    first: dict[str, int] = {}
    for i, (key, y) in enumerate(zip(keys(data.train)[1], data.train.targets)):
        if y >= 0:
            by_input[key].add(int(y))
            first.setdefault(key, i)
    clash = [k for k, ys in by_input.items() if len(ys) > 1]
    if not clash:
        return []
    return [Finding("warning", "labels", f"{len(clash)} training input(s) occur with different labels (label "
                    "noise, or inputs that cannot decide the label)",
                    [f"{_shown(data.train, first[k])} -> {sorted(data.label_names[y] for y in by_input[k])}"
                     for k in clash[:EXAMPLES]])]


def _head_findings(data: TaskData, heads: dict[str, Optional[list]]) -> list[Finding]:
    out = []
    for role, labels in heads.items():
        if labels is None or labels == data.label_names:
            continue
        if data.label_names is None:
            out.append(Finding("error", "labels", f"The {role} has a classification head ({len(labels)} labels) and "
                               "this data is regression; give a model trained on this data"))
        elif sorted(map(str, labels)) == sorted(data.label_names):
            moved = next(i for i, (a, b) in enumerate(zip(labels, data.label_names)) if a != b)
            out.append(Finding("error", "labels", f"The {role}'s labels are this data's in another order (position "
                               f"{moved}: {labels[moved]!r} vs the data's {data.label_names[moved]!r}), so every "
                               "score would compare the wrong classes; retrain it on this data"))
        else:
            extra, lacking = sorted(set(map(str, labels)) - set(data.label_names)), \
                sorted(set(data.label_names) - set(map(str, labels)))
            out.append(Finding("error", "labels", f"The {role}'s labels differ from this data's (only the {role} has "
                               f"{extra[:5]}, only the data has {lacking[:5]}); use a {role} trained on this data"))
    return out


def task_findings(cfg, data: TaskData) -> list[Finding]:
    """The task type against the labels, and the logit loss and metrics against the task."""
    out = []
    names = data.label_names or []
    numbers = [float(n) for n in names if _number(n)]
    if data.task == "classification" and len(numbers) == len(names) and len(names) > 10 \
            and any(not x.is_integer() for x in numbers):
        out.append(Finding("warning", "task", f"The {len(names)} labels are all numbers, some fractional "
                           f"({', '.join(names[:4])}, ...): is it a regression target? Set data.task: regression"))
    if data.task == "regression":
        values = np.unique(data.train.targets[data.train.labelled])
        if len(values) <= 10 and np.all(values == np.round(values)):
            out.append(Finding("warning", "task", f"The regression targets take only {len(values)} integer values "
                               f"({', '.join(f'{v:g}' for v in values[:6])}): are they classes? Set data.task: "
                               "classification"))
    from .distiller import resolve_logit_loss
    from .metrics import check_metric
    for label, probe in (("distill.logit_loss", lambda: resolve_logit_loss(cfg.distill.logit_loss, data.task,
                                                                            1 + len(cfg.distill.extra_teachers))),
                         ("train.metric", lambda: check_metric(cfg.train.metric, data.task, data.num_labels)),
                         ("teach.metric", lambda: check_metric(cfg.teach.metric, data.task, data.num_labels,
                                                               "teach.metric"))):
        try:
            probe()
        except KdflowError as err:
            out.append(Finding("error", "task", str(err)))
    return out


def _number(text) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def head_labels(cfg) -> dict[str, Optional[list]]:
    """Label names of the models this config uses that are already saved: the run's teacher and student,
    else ``model.teacher.name`` when it is a folder with a kdflow label file."""
    from .models import LABELS_FILE, saved_labels
    run = cfg.run_dir
    heads: dict[str, Optional[list]] = {}
    teacher = run / "teacher"
    if not (teacher / LABELS_FILE).is_file() and cfg.model.teacher.name:
        teacher = Path(cfg.model.teacher.name)
    for role, folder in (("teacher", teacher), ("student", run / "student")):
        if (folder / LABELS_FILE).is_file():
            heads[f"{role} in '{folder}'"] = saved_labels(folder)[0]
    return heads


def data_findings(cfg, data: TaskData, heads: Optional[dict] = None) -> list[Finding]:
    """Every check that reads the data and the saved heads only (fast: no model runs)."""
    keys = Keys()  # train's keys serve the leakage and the conflicting-label checks alike
    return [*leakage_findings(data, keys), *label_findings(data, head_labels(cfg) if heads is None else heads, keys),
            *task_findings(cfg, data)]


def plausibility(score: dict, task: str, n: int, teacher: Optional[dict] = None, role: str = "student"
                 ) -> list[Finding]:
    """Test scores that are too good to be true: near perfect, or a student far above its teacher."""
    metric = "accuracy" if task == "classification" else "pearson"
    value = score.get(metric)
    if value is None or not math.isfinite(value):
        return []
    out = []
    noise = 3 * math.sqrt(max(value * (1 - value), 1e-4) / max(n, 1))
    if value >= 0.995 and n >= 50:
        out.append(Finding("warning", "plausibility", f"The {role}'s test {metric} is {value:.4f} on {n} examples, "
                           "near perfect: check that test does not overlap train (kdflow check) and that no input "
                           "column gives the label away"))
    best = (teacher or {}).get(metric)
    if best is not None and math.isfinite(best) and value > best + max(0.05, noise):
        out.append(Finding("warning", "plausibility", f"The {role}'s test {metric} {value:.4f} is far above its "
                           f"teacher's {best:.4f}: check that both were scored on the same split and labels"))
    return out


def first_error(findings: list[Finding]) -> Optional[Finding]:
    return next((f for f in findings if f.level == "error"), None)


def summary_counts(findings: list[Finding]) -> dict:
    counts = Counter(f.level for f in findings)
    return {level: counts.get(level, 0) for level in ("error", "warning", "info")}


__all__ = ["Finding", "normalise", "normalised_keys", "leakage_findings", "label_findings", "task_findings",
           "head_labels", "data_findings", "plausibility", "first_error", "summary_counts", "MISSING_LIKE"]
