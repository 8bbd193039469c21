"""Answers of a teacher that is paid per call (an LLM, local or remote), kept on disk as they arrive.

One JSON line per answer in ``answers.jsonl`` under a folder named by the teacher's fingerprint (its
weights or endpoint, prompt settings and labels): ``{"key": ..., ...}``, the key a hash of the full prompt.
A line is written and flushed the moment its answer exists, so a run killed mid-way keeps every answer it
paid for; the half line a kill may leave at the end is dropped when the file is read back (and counted).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Optional

from ..errors import KdflowError

ANSWERS_FILE = "answers.jsonl"


def answer_key(*parts: str) -> str:
    """A stable key for a request (the prompt and whatever else decides the answer)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


class AnswerCache:
    """``{key: answer}`` read from and appended to ``<folder>/answers.jsonl``; ``folder`` None keeps the
    answers in memory only."""

    def __init__(self, folder: Optional[Path]):
        self.path = Path(folder) / ANSWERS_FILE if folder is not None else None
        self.rows: dict[str, dict] = {}
        self.dropped = 0  # a half-written last line (a killed run), not counted as an answer
        if self.path is not None and self.path.is_file():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        lines, good = data.split(b"\n"), 0  # good: bytes up to the end of the last whole line
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    self.rows[row.pop("key")] = row
                except (ValueError, KeyError, AttributeError):
                    if n < len(lines):  # not the last line: no kill leaves that
                        raise KdflowError(f"Line {n} of the answer cache '{self.path}' is damaged; delete the file "
                                          "(its answers are asked again on the next run)") from None
                    self.dropped += 1  # a write a kill cut short: dropped from the file too
                    break
            good += len(line) + 1
        if self.dropped:
            with open(self.path, "r+b") as f:
                f.truncate(min(good, len(data)))

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> Optional[dict]:
        return self.rows.get(key)

    def add(self, items: Iterable[tuple[str, dict]]) -> None:
        """Keep answers, and append them to the file at once (flushed to disk)."""
        items = list(items)
        for key, row in items:
            self.rows[key] = row
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps({"key": key, **row}) + "\n" for key, row in items))
            f.flush()
            os.fsync(f.fileno())


def preview(keys: dict[str, list[str]], answers: AnswerCache, who: str, cost: str) -> str:
    """What a pass would pay, before paying it: ``keys`` holds each split's answer keys (name -> keys, one per
    example); a prompt asked twice is paid once, a cached one not at all. ``cost``: how the new prompts are
    paid, ``{}`` standing for their number."""
    asked = set().union(*keys.values())
    new = sum(k not in answers for k in asked)
    sizes = " + ".join(f"{name} {len(split)}" for name, split in keys.items())
    return (f"{who} would be asked about {len(asked)} distinct prompts ({sizes} examples); {len(asked) - new} are "
            f"answered in its cache, so {cost.format(new)}")


__all__ = ["ANSWERS_FILE", "AnswerCache", "answer_key", "preview"]
