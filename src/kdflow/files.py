"""Reading the text files kdflow is given (configs, data tables) or wrote earlier (metrics, label maps,
model configs), defensively: a folder, a binary file, a file in another encoding or broken JSON is a
:class:`~kdflow.errors.KdflowError` of one sentence naming the file and the fix, never a traceback.

``what`` names the file in those sentences (``"Config file 'c.yaml'"``, ``"data.train file 't.csv'"``);
``fix`` says what to do.
"""

from __future__ import annotations

import codecs
import io
import json
from pathlib import Path
from typing import Any

from .errors import KdflowError

# UTF-32 first: its little-endian mark starts with UTF-16's
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
CHUNK = 1 << 20
RUN_FIX = "give a run folder: runs/NAME, the run.output_dir/run.name of the config that made it"
CONTROL = bytes(b for b in range(32) if b not in b"\t\n\r\f\x1b") + b"\x7f"


def must_be_file(path: Path, what: str, fix: str) -> Path:
    """``path`` when it is a file; else one sentence for each other case: it does not exist, it is an empty
    folder, it is a folder."""
    path = Path(path)
    if path.is_dir():
        raise KdflowError(f"{what} is {'an empty folder' if is_empty_folder(path) else 'a folder'}, not a file; {fix}")
    if not path.is_file():
        raise KdflowError(f"{what} does not exist; {fix}")
    return path


def must_be_folder(path: Path, what: str, fix: str, empty: bool = False) -> Path:
    """``path`` when it is a folder (and, unless ``empty``, holds something); else one sentence for each other
    case: it does not exist, it is a file, it is an empty folder."""
    path = Path(path)
    if path.is_file():
        raise KdflowError(f"{what} is a file, not a folder; {fix}")
    if not path.is_dir():
        raise KdflowError(f"{what} does not exist; {fix}")
    if not empty and is_empty_folder(path):
        raise KdflowError(f"{what} is an empty folder; {fix}")
    return path


def may_be_folder(path: Path, what: str, fix: str) -> Path:
    """A folder kdflow writes into, created when missing: only an existing file there is an error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise KdflowError(f"{what} is a file, not a folder; {fix}")
    return path


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


def text_encoding(path: Path, what: str, fix: str) -> str:
    """The encoding to read ``path`` with: the one its byte-order mark names (UTF-8, UTF-16, UTF-32), else
    UTF-8; a binary file or bytes that do not decode are an error naming the line."""
    with open(must_be_file(path, what, fix), "rb") as fh:
        head = fh.read(CHUNK)
    encoding = _encoding_of(head, what, fix)
    _decodes(path, encoding, what)
    return encoding


def _encoding_of(head: bytes, what: str, fix: str) -> str:
    """The encoding a file's first bytes name (a byte-order mark), else UTF-8; binary bytes are an error."""
    encoding = next((enc for bom, enc in BOMS if head.startswith(bom)), None)
    if encoding is None:
        if looks_binary(head):
            raise KdflowError(f"{what} is not a text file (it holds NUL or other control bytes: binary data, or "
                              f"UTF-16 text without a byte-order mark); {fix}")
        encoding = "utf-8"
    return encoding


def looks_binary(head: bytes) -> bool:
    """NUL bytes, or more than 1 in 20 of the first 8 KiB control bytes other than tab and line breaks (text in
    any 8-bit encoding has next to none; random bytes about 1 in 8)."""
    sample = head[:8192]
    return b"\x00" in sample or (len(sample) > 0 and sum(b in CONTROL for b in sample) > len(sample) / 20)


def _decodes(path: Path, encoding: str, what: str) -> None:
    """Decode ``path`` chunk by chunk (memory stays small); the first undecodable byte names its line."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                at = max(err.start - pending, 0)
                bad = err.object[err.start:err.start + 1].hex()
                line = lines + chunk[:at].count(b"\n") + 1
                raise KdflowError(
                    f"{what} is not {encoding.upper().removesuffix('-SIG')} text (byte 0x{bad} on line {line} is not "
                    f"valid there, as in a Latin-1 or Windows-1252 file); re-save it as UTF-8, e.g. "
                    f"iconv -f cp1252 -t utf-8 '{path}' > fixed.{path.suffix.lstrip('.') or 'txt'}") from None
            if not chunk:
                return
            lines += chunk.count(b"\n")


def read_text(path: Path, what: str, fix: str) -> str:
    """The text of ``path`` in the encoding its byte-order mark names (UTF-8 without one), newlines
    translated as ``Path.read_text`` does; the file is read once (a second, chunked pass only to name the
    line of a byte that does not decode)."""
    data = must_be_file(path, what, fix).read_bytes()
    encoding = _encoding_of(data[:CHUNK], what, fix)
    try:
        return io.TextIOWrapper(io.BytesIO(data), encoding=encoding).read()
    except UnicodeDecodeError:
        _decodes(Path(path), encoding, what)  # raises, naming the line
        raise


def parse_json(text: str, what: str, fix: str) -> Any:
    """JSON text, or an error naming the line and column where it breaks."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise KdflowError(f"{what} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                          f"{fix}") from None
    except RecursionError:
        raise KdflowError(f"{what} nests its JSON too deeply to read; {fix}") from None


def read_json(path: Path, what: str, fix: str, kind: type = object) -> Any:
    """A JSON file; ``kind`` (``dict``, ``list``): the type its top level must have."""
    value = parse_json(read_text(path, what, fix), what, fix)
    if kind is not object and not isinstance(value, kind):
        want = {dict: "an object ({...})", list: "a list ([...])"}.get(kind, kind.__name__)
        raise KdflowError(f"{what} holds {json_type(value)} where {want} belongs; {fix}")
    return value


def json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words: an object, a list, a string, a number, true/false or null."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true/false"
    names = ((dict, "an object"), (list, "a list"), (str, "a string"), ((int, float), "a number"))
    return next((name for t, name in names if isinstance(value, t)), type(value).__name__)


__all__ = ["RUN_FIX", "must_be_file", "must_be_folder", "may_be_folder", "is_empty_folder", "text_encoding", "looks_binary", "read_text", "parse_json", "read_json", "json_type"]
