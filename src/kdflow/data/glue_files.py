"""Task presets: the eight GLUE tasks (Wang et al. 2019, "GLUE: A Multi-Task Benchmark and Analysis
Platform for Natural Language Understanding").

``data.glue: <task>`` (or ``data.hub: glue/<task>``) fixes what a user would otherwise
have to know: the task kind (STS-B is regression), the label names in the hub's order
(so ``0``/``1`` files and ``entailment``/``not_entailment`` files mean the same), the
model-selection metric (CoLA MCC, MRPC/QQP F1, STS-B Pearson), which hub split is the
reported dev set (MNLI: matched, plus mismatched as a second test set), and the column
layouts the task's files come in:

* the GLUE TSVs (``train.tsv``/``dev.tsv``, e.g. MNLI's ``sentence1 ... gold_label``,
  CoLA's header-less ``source, label, *, sentence``);
* the original MRPC files (UTF-8 BOM, ``Quality  #1 ID  #2 ID  #1 String  #2 String``);
* the STS benchmark files (``sts-*.csv``: tab-separated, no header, ``genre, file,
  year, id, score, sentence1, sentence2`` and on some rows extra trailing fields);
* a table with the hub's column names (``sentence1``, ``sentence2``, ``label``...).

GLUE's own test files carry no labels: they cannot be a kdflow test split (use dev).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config.glue import GlueTask, Layout
from ..errors import KdflowError
from .tables import must_exist, split_files

# ------------------------------------------------------------------ labels

def label_value(raw, task: GlueTask, where: str):
    """A raw label as the task names it: a class name (from its index or its name), or a float score."""
    s = str(raw).strip()
    if task.labels is None:
        try:
            return float(s)
        except ValueError:
            raise KdflowError(f"The {task.name} score {s!r} ({where}) is not a number; STS-B targets are "
                              "similarity scores from 0 to 5") from None
    if s in task.labels:
        return s
    if s.lstrip("-").isdigit() and 0 <= int(s) < len(task.labels):
        return task.labels[int(s)]
    raise KdflowError(f"Label {s!r} ({where}) is not a {task.name} label; GLUE {task.name} labels are "
                      + ", ".join(f"{i} = {n}" for i, n in enumerate(task.labels)))


# ------------------------------------------------------------------ files

def _rows(path: Path) -> list[list[str]]:
    """Tab-separated rows, quotes kept as text (GLUE files are not CSV-quoted); a BOM is dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise KdflowError(f"'{path}' is not UTF-8 text (byte {err.start}); GLUE files are UTF-8 TSV") from None
    return [line.rstrip("\r").split("\t") for line in text.split("\n") if line.strip()]


def _pick(task: GlueTask, first: list[str], path: Path, given: Optional[Layout]) -> Layout:
    candidates = (given,) if given else task.layouts
    names = {c.strip() for c in first}
    for layout in candidates:
        if layout.header and all(c in names for c in layout.columns):
            return layout
        if not layout.header and len(first) > max(layout.columns) and _numeric(first[layout.label], task):
            return layout
    unlabelled = next((lay for lay in candidates if lay.header and lay.text in names
                       and (lay.pair is None or lay.pair in names)), None)
    if unlabelled is not None:
        raise KdflowError(f"'{path}' has no '{unlabelled.label}' column: GLUE test files carry no labels; use the "
                          f"task's dev file (e.g. dev.tsv) as data.test")
    expected = "; ".join(lay.name for lay in candidates)
    raise KdflowError(f"'{path}' is not in a {task.name} layout (its first row: {', '.join(first[:8])}); expected "
                      f"{expected}, or set data.text_column/data.label_column to its columns")


def _numeric(cell: str, task: GlueTask) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return task.labels is not None and cell.strip() in task.labels


def given_layout(cfg, task: GlueTask) -> Optional[Layout]:
    """The user's own column names (data.text_column etc. set explicitly) override the task's layouts."""
    named = cfg.columns_given()
    if not named:
        return None
    pair = cfg.text_pair_column if "text_pair_column" in named else task.layouts[0].pair
    return Layout("data.text_column / text_pair_column / label_column", cfg.text_column, cfg.label_column,
                  pair if task.pair else None)


def read_glue_file(path: Path, task: GlueTask, key: str, given: Optional[Layout] = None) -> tuple[dict, list]:
    """``(inputs, labels)`` of one GLUE-task file, its layout recognised from its first row."""
    rows = _rows(must_exist(path, key))
    if not rows:
        raise KdflowError(f"data.{key} file '{path}' holds no rows; give a file with examples")
    layout = _pick(task, rows[0], path, given)
    if layout.header:
        index = {c.strip(): i for i, c in enumerate(rows[0])}
        cols = [index[c] if c is not None else None for c in (layout.text, layout.pair, layout.label)]
        rows = rows[1:]
    else:
        cols = [layout.text, layout.pair, layout.label]
    text_i, pair_i, label_i = cols
    need = max(c for c in cols if c is not None)
    inputs: dict[str, list] = {"text": []}
    if pair_i is not None:
        inputs["text_pair"] = []
    labels = []
    line0 = 2 if layout.header else 1
    for n, row in enumerate(rows):
        where = f"line {n + line0} of '{path}'"
        if len(row) <= need:
            raise KdflowError(f"{where} has {len(row)} tab-separated fields, the {layout.name} layout needs "
                              f"{need + 1}; fix or drop that line")
        inputs["text"].append(row[text_i])
        if pair_i is not None:
            inputs["text_pair"].append(row[pair_i])
        labels.append(label_value(row[label_i], task, where))
    if not rows:
        raise KdflowError(f"data.{key} file '{path}' has a header but no examples")
    return inputs, labels


def read_glue_files(cfg, task: GlueTask) -> dict[str, tuple[dict, list]]:
    """``data.train`` / ``validation`` / ``test`` / ``extra_tests`` in any of the task's layouts."""
    given = given_layout(cfg, task)
    return {part: read_glue_file(path, task, key, given) for part, key, path in split_files(cfg)}


def normalise_labels(parts: dict[str, tuple[dict, list]], task: GlueTask, source: str) -> dict:
    """Hub (or table) labels as the task names them."""
    return {split: (inputs, [label_value(y, task, f"row {i} of the {source} {split} split")
                             for i, y in enumerate(labels)])
            for split, (inputs, labels) in parts.items()}
