"""Who labels the selected examples.

* ``gold`` — the pool's own labels, hidden until queried (simulation, for experiments).
* ``teacher`` — the teacher's prediction (its soft targets feed the student anyway);
  free of human effort, paid in teacher calls, which the run counts.
* ``human`` — the batch is written to ``to_label.csv`` / ``.jsonl`` and as Label Studio
  tasks; the run stops and goes on with ``kdflow active CONFIG --resume --labels FILE``.
* ``hybrid`` — the teacher labels what it is confident about (max probability >=
  ``active.hybrid_threshold``), humans (or, in simulation, the gold labels) the rest, an answer the teacher
  could not give (an LLM's unusable answer) included.

A label file is checked whole before anything is kept: an unknown id, a label that
is not one of the task's, a duplicate or a missing row stops with one sentence that
names the row. ``__skip__`` as a label leaves that example out of the pool for good.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..data import Split
from ..engine.distributed import is_main
from ..errors import KdflowError
from ..data.tagging import check_tags
from ..files import must_be_file

SKIP = "__skip__"


def gold_labels(pool: Split, positions: np.ndarray, label_names: list[str]) -> dict[str, tuple]:
    """The pool's own labels (a simulation): a name, the list of names of a multi-hot label set, or (token
    tagging) the list of a sentence's tags."""
    out = {}
    for p in positions:
        y = pool.targets[p]
        if "words" in pool.inputs:  # tags per word, padded
            tags = y[: len(pool.inputs["words"][p])]
            if (tags < 0).any():
                raise KdflowError(f"Pool sentence {pool.ids[p]} has no gold tags, so active.oracle gold cannot "
                                  "label it; use oracle human or teacher for a pool without tags")
            out[pool.ids[p]] = ([label_names[int(j)] for j in tags], "gold")
            continue
        if (np.isnan(y).any() if y.dtype.kind == "f" else int(y) < 0):
            raise KdflowError(f"Pool example {pool.ids[p]} has no gold label, so active.oracle gold cannot label "
                              "it; use oracle human, teacher or hybrid for a pool without labels")
        out[pool.ids[p]] = ([label_names[j] for j in np.flatnonzero(y > 0.5)] if y.ndim else label_names[int(y)],
                            "gold")
    return out


def teacher_labels(ids: list[str], teacher_probs: np.ndarray, label_names: list[str], sets: bool = False,
                   lengths: Optional[list[int]] = None) -> dict[str, tuple]:
    """The teacher's answers: its most probable class, or (``sets``) every label whose probability reaches 0.5,
    or (``lengths``: token tagging, the sentences' word counts) its most probable tag for each word."""
    if lengths is not None:
        return {key: ([label_names[int(j)] for j in p[:n].argmax(-1)], "teacher")
                for key, p, n in zip(ids, teacher_probs, lengths)}
    if sets:
        return {key: ([label_names[j] for j in np.flatnonzero(p >= 0.5)], "teacher")
                for key, p in zip(ids, teacher_probs)}
    return {key: (label_names[int(np.argmax(p))], "teacher") for key, p in zip(ids, teacher_probs)}


def confident(teacher_probs: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the examples the teacher labels in hybrid mode (max probability >= threshold)."""
    return np.asarray(teacher_probs).max(-1) >= threshold


# ------------------------------------------------------------------ human: export

def write_tag_request(folder: Path, pool: Split, positions: np.ndarray, pre_tags: list[list[str]]) -> dict[str, str]:
    """Sentences to tag as JSON lines (``id``, ``tokens``, ``tags``) and CoNLL (a ``# id = ...`` line before each
    sentence), both pre-tagged with the teacher's predictions for the labeller to correct; returns the paths."""
    paths = {"jsonl": folder / "to_label.jsonl", "conll": folder / "to_label.conll"}
    if not is_main():
        return {k: str(v) for k, v in paths.items()}
    folder.mkdir(parents=True, exist_ok=True)
    with open(paths["jsonl"], "w", encoding="utf-8") as fh:
        for p, tags in zip(positions, pre_tags):
            fh.write(json.dumps({"id": pool.ids[p], "tokens": list(pool.inputs["words"][p]), "tags": tags},
                                ensure_ascii=False) + "\n")
    with open(paths["conll"], "w", encoding="utf-8") as fh:
        for p, tags in zip(positions, pre_tags):
            fh.write(f"# id = {pool.ids[p]}\n" + "".join(f"{w} {t}\n" for w, t in zip(pool.inputs["words"][p], tags))
                     + "\n")
    return {k: str(v) for k, v in paths.items()}


def _tag_rows(path: Path) -> list[tuple[str, Optional[str], Optional[list], Optional[list]]]:
    """``(where, id, tokens, tags)`` per sentence of a JSON-lines or CoNLL (``# id = ...``) label file; ``tags``
    is the string ``__skip__`` for a sentence left out."""
    text = label_file(path).read_text(encoding="utf-8-sig")
    out: list = []
    if path.suffix.lower() == ".jsonl":
        return [(where, _str(obj.get("id")), obj.get("tokens"), obj.get("tags"))
                for where, obj in _jsonl_objects(path, text, "id, tokens and tags")]
    if path.suffix.lower() not in (".conll", ".txt"):
        raise KdflowError(f"Label file '{path}' has suffix '{path.suffix or '(none)'}'; give the to_label.jsonl or "
                          "to_label.conll you corrected")
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# id ="):
            current = [f"line {n}", line.split("=", 1)[1].strip(), [], []]
            out.append(current)
        elif line.strip():
            parts = line.split()
            if current is None:
                raise KdflowError(f"Line {n} of '{path}' comes before any '# id = ...' line; keep the id lines of "
                                  "to_label.conll")
            if len(parts) < 2:
                raise KdflowError(f"Line {n} of '{path}' holds {line.strip()!r}, a word without a tag; write "
                                  f"'word tag' (or {SKIP} as the tag of every word to leave the sentence out)")
            current[2].append(parts[0])
            current[3].append(parts[-1])
    return [(w, k, toks, SKIP if tags and all(t == SKIP for t in tags) else tags) for w, k, toks, tags in out]


def read_tags(path: "str | Path", requested: list[str], label_names: list[str], words: dict[str, list]
              ) -> tuple[dict[str, list], list[str]]:
    """``({id: tags}, [skipped ids])`` for exactly the ``requested`` sentences (``words``: id -> its words, which
    the file must keep), or one error naming the bad row."""
    path = label_file(path)
    names, labels, skipped, seen = set(label_names), {}, [], {}
    for where, key, toks, tags in _tag_rows(path):
        key = (key or "").strip()
        if key not in words or key not in requested:
            raise KdflowError(f"{where.capitalize()} of '{path}' has id '{key}', which this round did not ask for; "
                              "tag the sentences of this round's to_label file")
        if key in seen:
            raise KdflowError(f"{where.capitalize()} of '{path}' repeats id '{key}' (first at {seen[key]}); keep one "
                              "entry per sentence")
        seen[key] = where
        if tags == SKIP:
            skipped.append(key)
            continue
        if [str(t) for t in toks or []] != [str(w) for w in words[key]]:
            raise KdflowError(f"{where.capitalize()} of '{path}' (id '{key}') changes the sentence's words; keep the "
                              "tokens as written and correct only the tags")
        if not isinstance(tags, list) or len(tags) != len(words[key]):
            raise KdflowError(f"{where.capitalize()} of '{path}' (id '{key}') has "
                              f"{len(tags) if isinstance(tags, list) else 'no'} tags for {len(words[key])} words; "
                              "give one tag per word")
        check_tags(tags, f"{where.capitalize()} of '{path}' (id '{key}')")
        bad = next((t for t in tags if t not in names), None)
        if bad is not None:
            raise KdflowError(f"{where.capitalize()} of '{path}' (id '{key}') has tag '{bad}', which is not one of "
                              f"the task's {len(label_names)} tags; correct it or tag the sentence {SKIP}")
        labels[key] = [str(t) for t in tags]
    missing = [k for k in requested if k not in seen]
    if missing:
        raise KdflowError(f"{len(missing)} of the {len(requested)} sentences asked for have no entry in '{path}' "
                          f"(first: id '{missing[0]}'); tag them, or write {SKIP} as their tags")
    return labels, skipped


def write_request(folder: Path, pool: Split, positions: np.ndarray, label_names: list[str]) -> dict[str, str]:
    """The batch to label as CSV, JSONL and Label Studio tasks (+ its labelling config); returns the paths."""
    if "text" not in pool.inputs:
        raise KdflowError("The human oracle writes the texts to label (CSV, JSONL, Label Studio), and this pool "
                          "holds no text; use active.oracle: gold or teacher")
    fields = [k for k in ("text", "text_pair") if k in pool.inputs]
    rows = [{"id": pool.ids[p], **{k: pool.inputs[k][p] for k in fields}, "label": ""} for p in positions]
    paths = {"csv": folder / "to_label.csv", "jsonl": folder / "to_label.jsonl",
             "label_studio": folder / "label_studio_tasks.json", "label_studio_config": folder / "label_studio.xml"}
    if not is_main():  # under torchrun process 0 writes the request
        return {k: str(v) for k, v in paths.items()}
    folder.mkdir(parents=True, exist_ok=True)
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", *fields, "label"])
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["jsonl"], "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tasks = [{"data": {"kdflow_id": r["id"], **{k: r[k] for k in fields}}} for r in rows]
    paths["label_studio"].write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    choices = "\n".join(f'    <Choice value="{_xml(n)}"/>' for n in label_names)
    shown = "\n".join(f'  <Text name="{k}" value="${k}"/>' for k in fields)
    paths["label_studio_config"].write_text(
        f'<View>\n{shown}\n  <Choices name="label" toName="text" choice="single" required="true">\n{choices}\n'
        "  </Choices>\n</View>\n", encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ human: import

def _rows(path: Path) -> list[tuple[str, Optional[str], Optional[str]]]:
    """``(where, id, label)`` per row of a CSV/TSV, JSONL, Label Studio export or JSON list.

    The id is ``kdflow_id`` where the file has one (Label Studio's own exports carry their
    task ``id`` beside it), else ``id``. A byte-order mark (Excel's "CSV UTF-8") is fine.
    """
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise KdflowError(f"Label file '{path}' is not UTF-8 text; save it as UTF-8 CSV, JSONL or JSON") from None
    except OSError as err:
        raise KdflowError(f"Label file '{path}' cannot be read ({err.strerror or err}); check its permissions") from None
    if suffix in (".csv", ".tsv"):
        return _table_rows(path, text, suffix)
    if suffix == ".jsonl":
        return _jsonl_rows(path, text)
    if suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise KdflowError(f"Label file '{path}' is not valid JSON (line {err.lineno}); fix the syntax there") from None
        if not isinstance(obj, list):
            raise KdflowError(f"Label file '{path}' must hold a list (a Label Studio JSON export, or "
                              "[{\"id\": ..., \"label\": ...}])")
        return [_json_item(item, i) for i, item in enumerate(obj)]
    raise KdflowError(f"Label file '{path}' has suffix '{suffix or '(none)'}'; give a .csv, .tsv, .jsonl or .json "
                      "(Label Studio export) file")


def _table_rows(path: Path, text: str, suffix: str) -> list[tuple[str, Optional[str], Optional[str]]]:
    csv.field_size_limit(2**31 - 1)  # the pool's own long documents come back in this file
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",",
                            strict=True)  # an unclosed quote is an error, not a label swallowing the rest
    cols = reader.fieldnames or []
    key = "kdflow_id" if "kdflow_id" in cols else "id"
    for need in (key, "label"):
        if need not in cols:
            raise KdflowError(f"Label file '{path}' has no '{need}' column (columns: {', '.join(cols) or 'none'}); "
                              "keep the id and label columns of to_label.csv")
    out, rows = [], iter(reader)
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: name the line its row starts on
        try:
            r = next(rows)
        except StopIteration:
            return out
        except csv.Error as err:
            raise KdflowError(f"Line {start} of '{path}' is not valid {suffix[1:].upper()} ({err}); fix the "
                              "quoting there") from None
        out.append((f"line {start}", r.get(key), r.get("label")))


def _jsonl_objects(path: Path, text: str, keys: str) -> list[tuple[str, dict]]:
    """``(where, object)`` per non-blank line of a JSON-lines label file (``keys``: what each object holds)."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise KdflowError(f"Line {i + 1} of '{path}' is not valid JSON; fix that line") from None
        if not isinstance(obj, dict):
            raise KdflowError(f"Line {i + 1} of '{path}' is not an object with {keys}; fix that line")
        out.append((f"line {i + 1}", obj))
    return out


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, Optional[str], Optional[str]]]:
    return [(where, _str(obj.get("kdflow_id", obj.get("id"))), _str(obj.get("label")))
            for where, obj in _jsonl_objects(path, text, "id and label")]


def _str(v) -> Optional[str]:
    return None if v is None else str(v)


def _json_item(item, i: int) -> tuple[str, Optional[str], Optional[str]]:
    where = f"item {i}"
    if not isinstance(item, dict):
        raise KdflowError(f"Item {i} of the label file is not an object; give objects with id and label")
    if "annotations" not in item and "data" not in item:  # a plain list, or Label Studio's JSON-MIN export
        return where, _str(item.get("kdflow_id", item.get("id"))), _str(item.get("label"))
    data = item.get("data")
    if not isinstance(data, dict) or data.get("kdflow_id") is None:
        raise KdflowError(f"Item {i} of the Label Studio export has no data.kdflow_id; import label_studio_tasks.json "
                          "into Label Studio so each task keeps its kdflow_id")
    key = str(data["kdflow_id"])
    annotations = item.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise KdflowError(f"Item {i} (kdflow_id '{key}') of the Label Studio export has malformed annotations; "
                          "export it again from Label Studio as JSON")
    answers = []
    for a in annotations:
        if a.get("was_cancelled"):
            continue
        results = a.get("result") or []
        choices = [c for r in results if isinstance(r, dict) and isinstance(r.get("value"), dict)
                   for c in (r["value"].get("choices") or [])]
        if len(choices) > 1:
            raise KdflowError(f"Item {i} (kdflow_id '{key}') of the Label Studio export ticks {len(choices)} choices "
                              f"({', '.join(map(str, choices))}); keep one label per example")
        if choices:
            answers.append(str(choices[0]))
    if len(set(answers)) > 1:
        raise KdflowError(f"Item {i} (kdflow_id '{key}') of the Label Studio export has annotations that disagree "
                          f"({', '.join(answers)}); settle on one label in Label Studio and export again")
    return where, key, answers[0] if answers else None


def label_file(path: "str | Path") -> Path:
    """The label file a human filled in, when it is a file; else one sentence saying what it is instead."""
    return must_be_file(Path(path), f"Label file '{path}'", "give the path of the file you filled in (to_label.csv, "
                        "to_label.jsonl or a Label Studio JSON export)")


def read_labels(path: "str | Path", requested: list[str], label_names: list[str]
                ) -> tuple[dict[str, str], list[str]]:
    """``({id: label}, [skipped ids])`` for exactly the ``requested`` ids, or one error naming the bad row."""
    path = label_file(path)
    wanted, names = set(requested), set(label_names)
    labels: dict[str, str] = {}
    skipped: list[str] = []
    first_seen: dict[str, str] = {}
    for where, key, label in _rows(path):
        key = (key or "").strip()
        if not key:
            raise KdflowError(f"{where.capitalize()} of '{path}' has no id; keep the id column of to_label.csv")
        if key not in wanted:
            raise KdflowError(f"{where.capitalize()} of '{path}' has id '{key}', which this round did not ask for "
                              f"({len(requested)} examples were asked for); label the examples of this round's "
                              "to_label file")
        if key in first_seen:
            raise KdflowError(f"{where.capitalize()} of '{path}' repeats id '{key}' (first at {first_seen[key]}); "
                              "keep one row per example")
        first_seen[key] = where
        label = (label or "").strip()
        if not label:
            raise KdflowError(f"{where.capitalize()} of '{path}' (id '{key}') has no label; fill it in, or write "
                              f"{SKIP} to leave that example out")
        if label == SKIP:
            skipped.append(key)
        elif label not in names:
            shown = ", ".join(label_names[:12]) + (", ..." if len(label_names) > 12 else "")
            raise KdflowError(f"{where.capitalize()} of '{path}' (id '{key}') has label '{label}', which is not one "
                              f"of the task's {len(label_names)} labels ({shown}); correct it or write {SKIP}")
        else:
            labels[key] = label
    missing = [k for k in requested if k not in first_seen]
    if missing:
        raise KdflowError(f"{len(missing)} of the {len(requested)} examples asked for have no row in '{path}' "
                          f"(first: id '{missing[0]}'); label them, or write {SKIP} as their label")
    return labels, skipped


def label_batch(positions: np.ndarray, batch: int, *, ac, pool: Split, names: list[str], state,
                teacher_probs: Callable[[np.ndarray], np.ndarray], folder: Path) -> Optional[dict]:
    """Label pool ``positions`` (batch ``batch``) with ``ac.oracle``, adding what it labels to ``state``; the
    teacher answers through ``teacher_probs(positions) -> [n, C]``. Returns the pending request (its files
    written under ``folder``) when humans must label."""
    ids = [pool.ids[p] for p in positions]
    if ac.oracle == "gold":
        state.add_batch(gold_labels(pool, positions, names))
        return None
    words = "words" in pool.inputs  # token tagging
    lengths = [len(pool.inputs["words"][p]) for p in positions] if words else None
    if ac.oracle == "teacher":  # an answer the teacher could not give (NaN: kdflow.models.remote) labels nothing
        probs = teacher_probs(positions)
        usable = np.isfinite(np.asarray(probs, dtype=np.float64).reshape(len(ids), -1)).all(1)
        state.add_batch(teacher_labels([k for k, u in zip(ids, usable) if u], probs[usable], names,
                                       pool.targets.ndim == 2 and not words,
                                       [n for n, u in zip(lengths, usable) if u] if lengths else None),
                        {k: "the teacher gave no usable answer" for k, u in zip(ids, usable) if not u})
        return None
    if words:  # humans correct the teacher's tags
        pre = teacher_labels(ids, teacher_probs(positions), names, lengths=lengths)
        files = write_tag_request(folder / f"batch-{batch:03d}", pool, positions, [pre[k][0] for k in ids])
        return {"batch": batch, "ids": ids, "teacher": {}, "files": files}
    by_teacher: dict = {}
    rest = positions
    if ac.oracle == "hybrid":
        probs = teacher_probs(positions)
        sure = confident(probs, ac.hybrid_threshold)
        by_teacher = teacher_labels([k for k, s in zip(ids, sure) if s], probs[sure], names)
        rest = positions[~sure]
        if ac.hybrid_human == "gold" or len(rest) == 0:
            state.add_batch({**by_teacher, **gold_labels(pool, rest, names)})
            return None
    files = write_request(folder / f"batch-{batch:03d}", pool, rest, names)
    return {"batch": batch, "ids": [pool.ids[p] for p in rest],
            "teacher": {k: v[0] for k, v in by_teacher.items()}, "files": files}
