"""Token tagging data: sentences as words with one BIO tag each, from the layouts people have.

* CoNLL files: one ``token ... tag`` line per word (the tag is the last column), a blank line between
  sentences, ``-DOCSTART-`` lines skipped;
* JSON lines (or a JSON list) with ``tokens`` and ``tags``;
* text with character spans (NLU++'s ``slots``: ``{name: {"text", "span": [start, end]}}``), converted to
  BIO on reading: words are ``\\w+`` runs and single other characters, with their character offsets.

Span rules (BIO holds one tag per word): a word is in a span when their characters overlap, so a span that
starts or ends inside a word takes the whole word; of two spans that share a word the longer is kept (the
earlier on a tie) and the other dropped, with a note; an empty span, one outside the text, or one whose
``text`` differs from the characters it points at is an error naming the example.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Optional

from ..errors import KdflowError

WORD = re.compile(r"\w+|[^\w\s]")
BIO = re.compile(r"^(O|[BI]-.+)$")


def words(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` for every word of ``text`` (``\\w+`` runs and single other characters)."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def check_tags(tags: Iterable[str], where: str) -> list[str]:
    """The tags, each ``O``, ``B-TYPE`` or ``I-TYPE``; anything else is an error naming ``where``."""
    tags = [str(t) for t in tags]
    bad = next((t for t in tags if not BIO.match(t)), None)
    if bad is not None:
        raise KdflowError(f"{where} has tag {bad!r}, which is not BIO (O, B-TYPE or I-TYPE); convert the tags "
                          "to BIO (BIOES: S- becomes B-, E- becomes I-)")
    return tags


def spans_to_bio(text: str, spans: list[tuple[int, int, str]], where: str,
                 notes: Optional[list[str]] = None) -> tuple[list[str], list[str]]:
    """``(words, tags)`` of ``text`` with ``spans`` (character ``[start, end)``, type) as BIO (module docstring)."""
    for start, end, kind in spans:
        if not (0 <= start < end <= len(text)):
            raise KdflowError(f"{where} has span [{start}, {end}) for {kind!r}, which is empty or outside its "
                              f"{len(text)}-character text; fix the span")
    toks = words(text)
    covered = [[i for i, (_, a, b) in enumerate(toks) if a < end and start < b] for start, end, _ in spans]
    order = sorted(range(len(spans)), key=lambda j: (-(spans[j][1] - spans[j][0]), spans[j][0]))
    tags, taken, dropped = ["O"] * len(toks), set(), []
    for j in order:
        if not covered[j]:
            raise KdflowError(f"{where} has span [{spans[j][0]}, {spans[j][1]}) for {spans[j][2]!r} over no word "
                              "(only spaces); fix the span")
        if taken & set(covered[j]):
            dropped.append(spans[j][2])
            continue
        taken.update(covered[j])
        tags[covered[j][0]] = f"B-{spans[j][2]}"
        for i in covered[j][1:]:
            tags[i] = f"I-{spans[j][2]}"
    if dropped and notes is not None:
        notes.append(f"{where}: span(s) {', '.join(map(repr, dropped))} dropped: they share words with a longer "
                     "span, and BIO holds one tag per word")
    return [w for w, _, _ in toks], tags


def slot_spans(slots: dict, text: str, where: str) -> list[tuple[int, int, str]]:
    """NLU++'s ``slots`` as spans, each checked against the characters it points at."""
    out = []
    for name, slot in (slots or {}).items():
        try:
            start, end = (int(x) for x in slot["span"])
        except (KeyError, TypeError, ValueError):
            raise KdflowError(f"{where} has slot {name!r} without a [start, end] span; give each slot a span") \
                from None
        if "text" in slot and text[start:end] != slot["text"]:
            raise KdflowError(f"{where} has slot {name!r} whose span [{start}, {end}) reads "
                              f"{text[start:end]!r}, not its text {slot['text']!r}; fix the span")
        out.append((start, end, name))
    return out


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL file: ``token ... tag`` lines, blank lines between sentences."""
    sentences, toks, tags = [], [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if toks:
                sentences.append((toks, tags))
                toks, tags = [], []
            continue
        if len(parts) < 2:
            raise KdflowError(f"Line {n} of '{path}' holds {line.strip()!r}, a token without a tag; a CoNLL line is "
                              "'token tag' (the tag in the last column)")
        toks.append(parts[0])
        tags.append(check_tags([parts[-1]], f"Line {n} of '{path}'")[0])
    if toks:
        sentences.append((toks, tags))
    return sentences


def read_tagged_json(path: Path, notes: Optional[list[str]] = None, text_key: str = "text",
                     slots_key: str = "slots") -> list[tuple[list[str], list[str]]]:
    """Sentences of a JSON list or JSON-lines file: ``tokens`` + ``tags`` per row, or text with slot spans."""
    raw = Path(path).read_text(encoding="utf-8")
    try:
        rows = json.loads(raw) if raw.lstrip().startswith("[") else [json.loads(x) for x in raw.splitlines()
                                                                       if x.strip()]
    except json.JSONDecodeError as err:
        raise KdflowError(f"'{path}' is not valid JSON or JSON lines (line {err.lineno}); fix the syntax there") \
            from None
    out = []
    for i, row in enumerate(rows):
        where = f"Row {i} of '{path}'"
        if not isinstance(row, dict):
            raise KdflowError(f"{where} is not an object; give one object per sentence")
        if "tokens" in row:
            toks, tags = [str(t) for t in row["tokens"]], check_tags(row.get("tags", []), where)
            if len(toks) != len(tags):
                raise KdflowError(f"{where} has {len(toks)} tokens and {len(tags)} tags; give one tag per token")
            out.append((toks, tags))
        elif text_key in row:
            text = str(row[text_key])
            out.append(spans_to_bio(text, slot_spans(row.get(slots_key), text, where), where, notes))
        else:
            raise KdflowError(f"{where} has neither 'tokens' (with 'tags') nor '{text_key}' (with '{slots_key}')")
    return out


def read_tagged(path: Path, key: str, fmt: str, notes: list[str], text_key: str = "text") -> tuple[dict, list]:
    """One split of token-tagging data: ``({"words": [...]}, [tags per sentence])``; JSON / JSON lines by
    :func:`read_tagged_json`, anything else as CoNLL (``fmt``: ``data.format``, or ``auto``: by suffix)."""
    if not Path(path).is_file():
        raise KdflowError(f"data.{key} file '{path}' does not exist; check data.{key} (relative paths are read "
                          "from the current directory)")
    json_like = fmt in ("json", "jsonl") or (fmt == "auto" and Path(path).suffix.lower() in (".json", ".jsonl"))
    if fmt not in ("auto", "conll", "json", "jsonl"):
        raise KdflowError(f"data.format {fmt} holds no tags; token tagging reads conll, json or jsonl files")
    sentences = read_tagged_json(path, notes, text_key) if json_like else read_conll(path)
    if not sentences:
        raise KdflowError(f"data.{key} file '{path}' holds no sentence; give a file with tagged sentences")
    empty = next((i for i, (w, _) in enumerate(sentences) if not w), None)
    if empty is not None:
        raise KdflowError(f"Sentence {empty} of data.{key} file '{path}' has no word; drop it or give its text")
    return {"words": [w for w, _ in sentences]}, [t for _, t in sentences]


def tag_names(train_tags: list[list[str]]) -> list[str]:
    """The tags of the training sentences: ``O`` first, then the others sorted (``B-x`` and ``I-x`` of a
    type that only ever shows one of them still gets both)."""
    types = sorted({t[2:] for tags in train_tags for t in tags if t != "O"})
    return ["O"] + [f"{p}-{k}" for k in types for p in ("B", "I")]


__all__ = ["words", "check_tags", "spans_to_bio", "slot_spans", "read_conll", "read_tagged_json", "read_tagged",
           "tag_names"]
