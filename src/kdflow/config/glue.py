"""The GLUE table (Wang et al. 2019, "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language
Understanding"): per task its kind, label names in the hub's order, reported metrics, hub splits and the file
layouts its files come in. A leaf: the config checks ``data.glue`` against it, :mod:`kdflow.data.glue_files` reads the
files it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..errors import KdflowError

Column = Union[str, int]  # a header name, or a field index in a header-less file


@dataclass(frozen=True)
class Layout:
    """One file layout: the text, pair and label columns (names when the file has a header row,
    0-based field indices when it has none)."""

    name: str
    text: Column
    label: Column
    pair: Optional[Column] = None

    @property
    def header(self) -> bool:
        return isinstance(self.text, str)

    @property
    def columns(self) -> list[Column]:
        return [c for c in (self.text, self.pair, self.label) if c is not None]


def _pairs(*names: tuple[str, str, str]) -> tuple[Layout, ...]:
    return tuple(Layout(f"{a} / {b} / {y}", a, y, b) for a, b, y in names)


@dataclass(frozen=True)
class GlueTask:
    name: str
    labels: Optional[tuple[str, ...]]  # class names, label i = labels[i] (the hub's order); None = regression
    metrics: tuple[str, ...]           # the task's reported metrics; the first selects models by default
    layouts: tuple[Layout, ...]
    hub_test: str = "validation"       # the hub split reported as test (GLUE's dev set; test labels are hidden)
    hub_extra_tests: dict = field(default_factory=dict)  # further reported sets: name -> hub split

    @property
    def task(self) -> str:
        return "regression" if self.labels is None else "classification"

    @property
    def pair(self) -> bool:
        return self.layouts[0].pair is not None


SINGLE = (Layout("sentence / label", "sentence", "label"),)
GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", ("unacceptable", "acceptable"), ("mcc", "accuracy"),
             SINGLE + (Layout("x / y", "x", "y"),
                       Layout("GLUE TSV without header: source, label, original label, sentence", 3, 1))),
    GlueTask("sst2", ("negative", "positive"), ("accuracy",), SINGLE),
    GlueTask("mrpc", ("not_equivalent", "equivalent"), ("f1", "accuracy"),
             (Layout("Quality / #1 String / #2 String (GLUE TSV, original MSR files)", "#1 String", "Quality",
                     "#2 String"),) + _pairs(("sentence1", "sentence2", "label"))),
    GlueTask("qqp", ("not_duplicate", "duplicate"), ("f1", "accuracy"),
             _pairs(("question1", "question2", "is_duplicate"), ("question1", "question2", "label"))),
    GlueTask("stsb", None, ("pearson", "spearman"),
             _pairs(("sentence1", "sentence2", "score"), ("sentence1", "sentence2", "label"))
             + (Layout("STS benchmark CSV: genre, file, year, id, score, sentence1, sentence2", 5, 4, 6),)),
    GlueTask("mnli", ("entailment", "neutral", "contradiction"), ("accuracy",),
             _pairs(("sentence1", "sentence2", "gold_label"), ("premise", "hypothesis", "label"),
                    ("sentence1", "sentence2", "label")),
             hub_test="validation_matched", hub_extra_tests={"mismatched": "validation_mismatched"}),
    GlueTask("qnli", ("entailment", "not_entailment"), ("accuracy",),
             _pairs(("question", "sentence", "label"))),
    GlueTask("rte", ("entailment", "not_entailment"), ("accuracy",),
             _pairs(("sentence1", "sentence2", "label"))),
)}
GLUE_NAMES = tuple(GLUE_TASKS)


def glue_task(name: str) -> GlueTask:
    task = GLUE_TASKS.get(name.lower().replace("-", ""))
    if task is None:
        raise KdflowError(f"'{name}' is not a GLUE task; choose one of {', '.join(GLUE_NAMES)}")
    return task


def glue_of_hub(hub: Optional[str], hub_config: Optional[str]) -> Optional[str]:
    """The GLUE task a hub name means (``glue/rte``, ``nyu-mll/glue`` + hub_config ``rte``), else None."""
    if not hub:
        return None
    parts = hub.strip("/").split("/")
    if parts[-1] in ("glue",) and hub_config:  # glue + config, nyu-mll/glue + config
        return hub_config if hub_config in GLUE_TASKS else None
    if len(parts) == 2 and parts[0] == "glue" and parts[1] in GLUE_TASKS:
        return parts[1]
    return None


__all__ = ["Column", "Layout", "GlueTask", "GLUE_TASKS", "GLUE_NAMES", "glue_task", "glue_of_hub"]
