"""``kind: predictions``: a file of teacher outputs per example (teachers only).

Another team's model, a vendor's batch job, several annotators' votes: whatever produced them, the rows
(CSV, JSON or JSONL) name their example by ``id`` (kdflow's example id) or ``text`` (+ ``text_pair``) and
give ``probs`` (one per label), ``logits``, or ``label`` (+ ``confidence``, default 1). They become the
logits the distiller reads: ``log p`` for a single-label task (softmax), ``log(p / (1 - p))`` for label
sets (sigmoid), the number itself for regression. Every row is checked when the file is read: a label
the data lacks, a probability outside [0, 1], probabilities that do not sum to one (``tolerance``), a
wrong count, an example given twice; an example the file lacks is named when a command asks for it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
from torch import nn

from ..config import DataConfig, PredictionsSpec
from ..data.features import from_bytes
from ..errors import KdflowError
from ..files import must_be_file, parse_json, read_text
from ..tasks import task_kind
from .base import BuildContext, fixed_teacher

FLOOR = 1e-6  # probabilities are kept inside [FLOOR, 1 - FLOOR] before the log: a 0 is "very unlikely", not -inf
OUTPUTS = ("probs", "logits", "label")


def read_rows(path: Path) -> list[dict]:
    """The file's rows: a JSON list of objects, JSON lines, or a CSV table (``probs``/``logits`` as JSON lists)."""
    what, fix = f"model.teacher.path '{path}'", "give one object per example with id or text and probs, logits or label"
    text = read_text(must_be_file(path, what, "give the file of teacher predictions"), what, fix)
    if path.suffix.lower() == ".csv":
        import io

        import pandas as pd
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        rows = frame.to_dict("records")
        for n, row in enumerate(rows, 2):
            for name in ("probs", "logits"):
                if row.get(name, "") != "":
                    row[name] = parse_json(row[name], f"Column {name} of line {n} of {what}", "write a JSON list")
            for name in [k for k, v in row.items() if v == ""]:
                del row[name]
        return rows
    if path.suffix.lower() == ".jsonl":
        rows = [parse_json(line, f"Line {n} of {what}", fix) for n, line in enumerate(text.splitlines(), 1)
                if line.strip()]
    else:
        rows = parse_json(text, what, fix)
        if not isinstance(rows, list):
            raise KdflowError(f"{what} holds a JSON {type(rows).__name__}, not a list of rows; {fix}")
    bad = next((n for n, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise KdflowError(f"Row {bad} of {what} is not an object; {fix}")
    return rows


def text_key(text: str, pair: Optional[str]) -> str:
    return text if pair is None else f"{text}\x00{pair}"


class PredictionsTable:
    """The rows of a predictions file as logits, keyed by example id and by text."""

    def __init__(self, spec: PredictionsSpec, label_names: Optional[list[str]], task: str):
        self.path, self.spec, self.names, self.kind = Path(spec.path), spec, label_names, task_kind(task)
        if self.kind.per_word:
            raise KdflowError(f"A predictions file gives one output per example, and data.task is {task}; use a "
                              "teacher of kind hf for token tagging")
        order = spec.labels or label_names
        if spec.labels is not None and sorted(spec.labels) != sorted(label_names or []):
            extra = sorted(set(spec.labels) - set(label_names or []))
            raise KdflowError(f"model.teacher.labels ({', '.join(spec.labels)}) are not the data's labels "
                              f"({', '.join(label_names or [])})" + (f": the data has no {extra[0]!r}" if extra else "")
                              + "; list the data's labels in the order of the file's probs")
        self.order = [label_names.index(n) for n in order] if label_names else [0]  # file column -> data label
        self.width = len(self.order)
        self.by_id: dict[str, torch.Tensor] = {}
        self.by_text: dict[str, torch.Tensor] = {}
        raw = self.path.read_bytes()
        self.digest = hashlib.sha256(raw).hexdigest()[:16]
        for n, row in enumerate(read_rows(self.path), 1):
            self._add(n, row)

    def _where(self, n: int) -> str:
        return f"Row {n} of model.teacher.path '{self.path}'"

    def _add(self, n: int, row: dict) -> None:
        where = self._where(n)
        key = self.spec.key
        use_id = key == "id" or (key == "auto" and "id" in row)
        if use_id and not isinstance(row.get("id"), str):
            raise KdflowError(f"{where} has no id; give each row the example's id (or its text, with "
                              "model.teacher.key: text)")
        if not use_id and not isinstance(row.get("text"), str):
            raise KdflowError(f"{where} has neither an id nor a text; name each row's example by id or text")
        table, name = (self.by_id, row["id"]) if use_id else \
            (self.by_text, text_key(row["text"], row.get("text_pair")))
        if name in table:
            raise KdflowError(f"{where} gives example {name.split(chr(0))[0]!r} a second time; keep one row per "
                              "example")
        table[name] = self.logits(row, where)

    def logits(self, row: dict, where: str) -> torch.Tensor:
        given = [k for k in OUTPUTS if k in row]
        if len(given) != 1:
            raise KdflowError(f"{where} gives {' and '.join(given) if given else 'none'} of probs, logits, label; "
                              "give exactly one")
        if given[0] == "label":
            return self._from_label(row, where)
        values = row[given[0]]
        values = [values] if isinstance(values, (int, float)) and not isinstance(values, bool) else values
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and math.isfinite(v) for v in values):
            raise KdflowError(f"{where}: {given[0]} must be a list of finite numbers")
        if len(values) != self.width:
            raise KdflowError(f"{where} gives {len(values)} {given[0]} for {self.width} labels; give one per label "
                              "(in model.teacher.labels order, else the data's)")
        out = torch.empty(self.width)
        out[self.order] = torch.tensor(values, dtype=torch.float32)
        return out if given[0] == "logits" else self._from_probs(out, where)

    def _from_probs(self, p: torch.Tensor, where: str) -> torch.Tensor:
        act = self.kind.activation
        if act == "none":
            raise KdflowError(f"{where} gives probs for a regression task; give its value as logits")
        if (p < 0).any() or (p > 1).any():
            raise KdflowError(f"{where}: probs must lie in [0, 1]; give probabilities, or the scores as logits")
        if act == "softmax" and abs(float(p.sum()) - 1) > self.spec.tolerance:
            raise KdflowError(f"{where}: probs sum to {float(p.sum()):.4f}, not 1; give a distribution over the "
                              "labels (or raise model.teacher.tolerance)")
        p = p.clamp(FLOOR, 1 - FLOOR)
        return p.log() if act == "softmax" else (p / (1 - p)).log()

    def _from_label(self, row: dict, where: str) -> torch.Tensor:
        if not self.kind.classes:
            raise KdflowError(f"{where} gives a label, and data.task {self.kind.name} needs probs or logits")
        label, conf = row["label"], row.get("confidence", 1.0)
        if isinstance(conf, str):
            try:
                conf = float(conf)
            except ValueError:
                raise KdflowError(f"{where}: confidence {conf!r} is no number; give a probability") from None
        if str(label) not in self.names:
            raise KdflowError(f"{where} gives label {label!r}, which the data does not have ({', '.join(self.names)}); "
                              "fix the label or drop the row")
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 < conf <= 1:
            raise KdflowError(f"{where}: confidence must be a number in (0, 1]")
        rest = (1 - conf) / max(len(self.names) - 1, 1)
        p = torch.full((len(self.names),), rest)
        p[self.names.index(str(label))] = conf
        return self._from_probs(p, where)

    def row(self, key: str, text: str, pair: Optional[str]) -> Optional[torch.Tensor]:
        found = self.by_id.get(key)
        return found if found is not None else self.by_text.get(text_key(text, pair))

    def lookup(self, ids: list[str], texts: list[str], pairs: Optional[list[str]]) -> torch.Tensor:
        rows = []
        for i, (key, text) in enumerate(zip(ids, texts)):
            row = self.row(key, text, pairs[i] if pairs else None)
            if row is None:
                raise KdflowError(f"model.teacher.path '{self.path}' has no row for example {key} ({text[:60]!r}); "
                                  "add its predictions (by id or text) to the file")
            rows.append(row)
        return torch.stack(rows)


class PredictionsTeacher(nn.Module):
    """``forward(ids, text, text_pair=None)`` (byte tensors) -> ``.logits`` read from the table."""

    def __init__(self, table: PredictionsTable):
        super().__init__()
        self.table = table
        self.calls = 0

    @property
    def identity(self) -> str:
        return f"predictions:{self.table.digest}:{self.table.order}"

    def forward(self, ids: torch.Tensor, text: torch.Tensor, text_pair: Optional[torch.Tensor] = None, **_):
        pairs = from_bytes(text_pair) if text_pair is not None else None
        logits = self.table.lookup(from_bytes(ids), from_bytes(text), pairs)
        self.calls += len(logits)
        return SimpleNamespace(logits=logits.to(ids.device))

    def preview(self, splits: dict) -> tuple[str, str]:
        """(level, sentence): whether the file has a row for every example of ``splits`` (name -> Split)."""
        missing = {}
        for name, split in splits.items():
            pairs = split.inputs.get("text_pair")
            gone = [i for i, (key, text) in enumerate(zip(split.ids, split.inputs["text"]))
                    if self.table.row(key, text, pairs[i] if pairs else None) is None]
            if gone:
                missing[name] = (len(gone), split.ids[gone[0]])
        if not missing:
            return "info", f"The predictions file has a row for every example ({', '.join(splits)})"
        where = "; ".join(f"{name} {n} (first {first})" for name, (n, first) in missing.items())
        return "error", (f"The predictions file '{self.table.path}' has no row for {where}; add their predictions "
                         "(by id or text)")

    def usage(self) -> dict:
        return {"rows_read": self.calls, "file": str(self.table.path), "sha256": self.table.digest}


def check(spec: PredictionsSpec, role: str, data: DataConfig) -> None:
    if role != "teacher":
        raise KdflowError(f"kind predictions is a teacher; give model.{role} kind hf, encoder or dkvb")
    must_be_file(Path(spec.path), f"model.teacher.path '{spec.path}'", "give the file of teacher predictions")


def teacher(spec: PredictionsSpec, ctx: BuildContext) -> nn.Module:
    table = PredictionsTable(spec, ctx.label_names, ctx.task)
    ctx.log(f"[teacher] predictions {spec.path}: {len(table.by_id)} rows by id, {len(table.by_text)} by text")
    return PredictionsTeacher(table)


KIND = fixed_teacher("predictions", check, teacher, {"kind": "predictions", "path": "predictions.jsonl"})


__all__ = ["KIND", "PredictionsTable", "PredictionsTeacher", "read_rows"]
