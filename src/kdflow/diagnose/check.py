"""``kdflow check``: can this run's numbers be trusted? Findings about the data and the models, before
any training, and about the scores after it.

A loss that keeps falling while test accuracy is "for some reason" very high is the classic sign of
scoring training data, of labels leaking into the inputs, or of the wrong loss. The checks:

* **leakage** — the rule of :mod:`kdflow.data.leakage`: each held-out split (a validation file, test, the extra
  tests) against the training data as given (train, the transfer set, a validation split held out of
  train), exact and normalised duplicates (case, accents' width forms, punctuation and spacing ignored).
  More than :data:`~kdflow.data.leakage.LEAK_SHARE` of a split is an error (its score would measure memory)
  unless ``data.allow_overlap: true``; a few are said (warning from 1 %, else info).
* **labels** — the data's label names and order against the saved teacher's and student's heads;
  classes with fewer than 2 training examples; label names that look like missing values; training
  inputs that occur with two different labels.
* **task** — numeric labels that look like a regression target under ``task: classification`` (and
  few integer targets under ``task: regression``); a logit loss or metric of the other task.
* **plausibility** (:func:`plausibility`) — test accuracy near 100 %, a student far above its teacher,
  a label-shuffled control far above chance (:mod:`kdflow.diagnose.baselines`).

Each finding is an ``error`` (the run would be wrong: teach, distill and active refuse it), a
``warning`` (shown, logged, kept in ``metrics.json`` and the report) or ``info``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..data import Split, TaskData, source_of
from ..data.leakage import Keys, Overlap, overlaps
from ..errors import KdflowError
from ..tasks import task_kind

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


def _shown(split: Split, i: int) -> str:
    fields = [str(split.inputs[k][i]) for k in ("text", "text_pair") if k in split.inputs]
    shown = " ||| ".join(fields) if fields else split.ids[i]
    return shown if len(shown) <= 80 else shown[:77] + "..."


def leakage_findings(data: TaskData, keys: Optional[Keys] = None, allow: bool = False,
                     where: Callable[[str], str] = lambda split: f"the {split} split") -> list[Finding]:
    """Each held-out split against the training data as given (:func:`kdflow.data.leakage.overlaps`: above the
    threshold an error unless ``allow``, data.allow_overlap), a validation split held out of a train that repeats
    itself, and test against validation. ``where(split)`` names the split's file for the fix."""
    keys = keys or Keys()
    out = [_training_overlap(o, data.split(name), allow, where(name)) for name, o in overlaps(data, keys).items()]
    if data.validation_from_train:  # it repeats train only where train repeats itself: said, never refused
        out += _overlap(("train", data.train, "validation", data.validation), keys, held_out_here=True)
    if data.test is not None and not data.validation_from_train:
        out += _overlap(("validation", data.validation, "test", data.test), keys)
    return out


def _training_overlap(o: Overlap, split: Split, allow: bool, where: str) -> Finding:
    examples = [_shown(split, int(i)) for i in o.rows[:EXAMPLES]]
    if o.too_many and not allow:
        return Finding("error", "leakage", f"{o.describe()}, so its score would measure memory, not generalisation: "
                       f"remove them from {where} (deduplicate it against train), or set data.allow_overlap: true "
                       f"to score it knowingly (the score of its {o.size - o.count} other examples is then reported "
                       "beside it)", examples)
    level = "warning" if o.too_many or o.share >= 0.01 else "info"  # a few duplicates are common (CLINC150: 0.1 %)
    why = ("data.allow_overlap is true: scored anyway" if o.too_many else "a few duplicates are common in real data")
    return Finding(level, "leakage", f"{o.describe()}; {why}, and the score of its {o.size - o.count} other "
                   "examples is reported beside the whole split's", examples)


def _overlap(pair: tuple[str, Split, str, Split], keys: Keys, held_out_here: bool = False) -> list[Finding]:
    """Examples of one split whose inputs are in another (exactly, or only once normalised): warnings, for
    splits that are not the user's training data against their held-out data."""
    train_name, train, held_name, held = pair
    if len(held) == 0 or len(train) == 0:
        return []
    (exact_train, norm_train), (exact_held, norm_held) = map(set, keys(train)), keys(held)
    exact = [i for i, k in enumerate(exact_held) if k in exact_train]
    is_exact = set(exact)
    near = [i for i, k in enumerate(norm_held) if k in norm_train and i not in is_exact]
    n = len(held)
    if len(exact) == n:
        why = ("train repeats itself; deduplicate train" if held_out_here else
               f"it repeats the data that picks the best epoch; give a separate {held_name} file")
        how = "equals" if len(exact_train) == len(set(exact_held)) else "is contained in"
        return [Finding("warning", "leakage", f"The {held_name} split {how} the {train_name} split (all {n} of its "
                        f"examples are {train_name} examples): {why}", [_shown(held, i) for i in exact[:EXAMPLES]])]
    out = []
    if exact:
        out.append(Finding("warning" if len(exact) >= 0.01 * n else "info", "leakage",
                           f"{len(exact)} of {n} {held_name} examples ({len(exact) / n:.1%}) also occur in "
                           f"{train_name} (exact duplicates); remove them from one side",
                           [_shown(held, i) for i in exact[:EXAMPLES]]))
    if near:
        out.append(Finding("warning" if len(near) >= 0.05 * n else "info", "leakage",
                           f"{len(near)} of {n} {held_name} examples ({len(near) / n:.1%}) equal a {train_name} "
                           "example once case, punctuation and spacing are ignored",
                           [_shown(held, i) for i in near[:EXAMPLES]]))
    return out


def label_findings(data: TaskData, heads: dict[str, Optional[list]], keys: Optional[Keys] = None) -> list[Finding]:
    """Label names (missing-looking, rare), conflicting labels, and the models' heads against the data."""
    out = [*_head_findings(data, heads)]
    if not task_kind(data.task).classes or not data.label_names:
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
    out = [Finding(severity, "task", message) for severity, message in
           task_kind(data.task).findings(data.label_names, data.train.targets[data.train.labelled])]
    from ..distillation.distiller import resolve_logit_loss
    from ..metrics import check_metric
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


def head_labels(cfg) -> dict[str, Optional[list]]:
    """Label names of the models this config uses that are already saved: the run's teacher and student,
    else ``model.teacher.name`` when it is a folder with a kdflow label file."""
    from ..models import LABELS_FILE, saved_labels
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
    return [*leakage_findings(data, keys, cfg.data.allow_overlap, lambda split: source_of(cfg.data, split)),
            *label_findings(data, head_labels(cfg) if heads is None else heads, keys), *task_findings(cfg, data)]


def plausibility(score: dict, task: str, n: int, teacher: Optional[dict] = None, role: str = "student"
                 ) -> list[Finding]:
    """Test scores that are too good to be true: near perfect, or a student far above its teacher."""
    metric = task_kind(task).headline
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


__all__ = ["Finding", "leakage_findings", "label_findings", "task_findings",
           "head_labels", "data_findings", "plausibility", "first_error", "summary_counts", "MISSING_LIKE"]
