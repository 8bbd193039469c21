"""Local files: CSV / TSV / JSON / JSONL / Parquet tables, and the CLINC150 one-file layout.

Each reader returns ``(inputs, raw labels)`` per split; :func:`kdflow.data.load_data`
turns the raw labels into targets with one label map.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import KdflowError, first_line
from ..files import json_type, must_be_file, must_be_folder, parse_json, read_text, text_encoding
from ..tasks import task_kind

TEXT_FORMATS = ("csv", "tsv", "json", "jsonl")
SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "jsonl",
                 ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}


def format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise KdflowError(f"Cannot tell the format of '{path}' from its suffix; set data.format to one of "
                          "csv, tsv, json, jsonl, parquet, clinc, npz, folder")
    return fmt


def must_exist(path: Path, key: str, folder: bool = False) -> Path:
    """``path`` if it is a file (or, with ``folder``, a folder that holds something); else one sentence naming
    ``data.<key>``: it does not exist, it is an empty folder, a folder where a file belongs, or the reverse."""
    fix = f"check data.{key} (relative paths are read from the current directory)"
    if folder:
        return must_be_folder(path, f"data.{key} '{path}'", fix)
    return must_be_file(path, f"data.{key} '{path}'", f"point data.{key} at the file itself" if path.is_dir() else fix)


def read_table(path: Path, cfg: DataConfig, key: str = "train"):
    """A pandas DataFrame from CSV/TSV/JSON/JSONL/Parquet, with cfg.columns for header-less files."""
    fmt = format_of(must_exist(path, key), cfg.format)
    what = f"data.{key} file '{path}'"
    encoding = text_encoding(path, what, f"give a {fmt} text file") if fmt in TEXT_FORMATS else None
    if encoding is not None and _blank(path, encoding):
        raise KdflowError(f"{what} is empty; give a {fmt} file with " + ("a header row and " if fmt in ("csv", "tsv")
                                                                          and cfg.header else "") + "examples")
    try:
        df = _read_frame(path, fmt, cfg, key, encoding)
    except KdflowError:
        raise
    except Exception as err:  # a malformed file: say which, and what the parser saw
        raise KdflowError(f"Could not read '{path}' as {fmt}: {first_line(err)}") from None
    if cfg.header is False and cfg.columns is None and fmt in ("csv", "tsv"):
        df.columns = [str(c) for c in df.columns]
    return df


def _read_frame(path: Path, fmt: str, cfg: DataConfig, key: str, encoding: "str | None" = None):
    import pandas as pd
    if fmt in ("csv", "tsv"):
        df = pd.read_csv(path, sep="," if fmt == "csv" else "\t", header=0 if cfg.header else None, index_col=False,
                         quoting=3 if fmt == "tsv" else 0, dtype=str, keep_default_na=False, encoding=encoding)
        if cfg.columns is not None:
            if len(df.columns) != len(cfg.columns):
                raise KdflowError(f"'{path}' has {len(df.columns)} fields per row but data.columns names "
                                  f"{len(cfg.columns)}; list one name per field")
            df.columns = cfg.columns
        return df
    if fmt == "jsonl":
        return pd.DataFrame.from_records(read_jsonl(path, key, encoding))  # "001" stays a string, as in CSV
    if fmt == "json":
        return pd.DataFrame(_json_table(path, key, encoding))
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt in ("npz", "folder"):
        raise KdflowError(f"data.{key} '{path}' must be a table (csv, tsv, json, jsonl or parquet); "
                          f"data.format {fmt} holds images, which data.{key} does not read")
    raise KdflowError(f"data.format '{fmt}' is for data.path files; for data.{key} use csv, tsv, "
                      "json, jsonl or parquet")


def _blank(path: Path, encoding: str) -> bool:
    """Whether a text file holds nothing but white space (read until the first other character)."""
    with open(path, encoding=encoding) as fh:
        while True:
            chunk = fh.read(1 << 16)
            if not chunk or chunk.strip():
                return not chunk


def read_jsonl(path: Path, key: str, encoding: str = "utf-8") -> list[dict]:
    """One JSON object per line (blank lines skipped); a broken line is an error naming its number."""
    records = []
    with open(path, encoding=encoding) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise KdflowError(f"Line {n} of data.{key} file '{path}' is not valid JSON (column {err.colno}: "
                                  f"{err.msg}); each line of a JSONL file must be one JSON object") from None
            if not isinstance(value, dict):
                raise KdflowError(f"Line {n} of data.{key} file '{path}' holds {json_type(value)}, not a JSON object; "
                                  'write each row as {"text": ..., "label": ...}')
            records.append(value)
    return records


def _json_table(path: Path, key: str, encoding: str = "utf-8"):
    """A JSON table: a list of records, or an object of equal-length column lists."""
    what = f"data.{key} file '{path}'"
    obj = parse_json(path.read_text(encoding=encoding), what, "fix the file there")
    if isinstance(obj, dict) and {"train", "val", "validation", "test"} & set(obj):
        raise KdflowError(f"'{path}' holds several splits ({', '.join(obj)}); point data.path "
                          "(not data.train) at it, with data.format: clinc for the CLINC150 layout")
    fix = 'give a list of records [{"text": ..., "label": ...}] or an object of column lists {"text": [...], ...}'
    if not isinstance(obj, (list, dict)):
        raise KdflowError(f"{what} holds {json_type(obj)}; {fix}")
    bad = next((c for c, v in obj.items() if not isinstance(v, list)), None) if isinstance(obj, dict) else \
        next((i for i, v in enumerate(obj) if not isinstance(v, dict)), None)
    if bad is not None:
        part = f"column {bad!r}" if isinstance(obj, dict) else f"item {bad}"
        raise KdflowError(f"{what}: its {part} holds {json_type(obj[bad])}; {fix}")
    return obj


def text_inputs(df, cfg: DataConfig, path: Path) -> dict[str, list]:
    """The text (and text pair) columns of a table, as strings."""
    inputs = {"text": [str(v) for v in cells(df, cfg.text_column, path)]}
    if cfg.text_pair_column:
        inputs["text_pair"] = [str(v) for v in cells(df, cfg.text_pair_column, path)]
    return inputs


def columns_from_frame(df, cfg: DataConfig, path: Path) -> tuple[dict[str, list], list]:
    if cfg.values_column:
        wanted = [cfg.values_column]
    else:
        wanted = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for col in wanted + (cfg.label_columns or [cfg.label_column]):
        if col not in df.columns:
            have = ", ".join(map(str, df.columns))
            key = "data.label_columns" if col in cfg.label_columns else "data.label_column"
            raise KdflowError(f"Column '{col}' is not in '{path}' (columns: {have}); set data.text_column / "
                              f"{key} to the right names" + ("" if cfg.header else " or data.columns to name them"))
    labels = label_sets(df, cfg, path) if task_kind(cfg.task).label_sets else cells(df, cfg.label_column, path)
    if cfg.values_column:
        return {"values": [sequence(v, i, path, cfg.values_column) for i, v in enumerate(df[cfg.values_column])]}, \
            labels
    return text_inputs(df, cfg, path), labels


def cells(df, column: str, path: Path) -> list:
    """A column's values; a missing or empty cell is an error naming its row, never a class "nan"."""
    values = df[column].tolist()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise KdflowError(f"Row {i} of '{path}' has no value in column '{column}'; fill it in or drop the row")
    return values


FLAGS = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False, "1.0": True, "0.0": False}


def label_sets(df, cfg: DataConfig, path: Path) -> list[list[str]]:
    """Multi-label: each row's label names (none is a valid answer). From ``data.label_columns`` (one 0/1 column
    per label) or from ``data.label_column``: a list (JSON / JSONL arrays), a JSON array in a text cell, names
    split by ``data.label_delimiter``, or one name; a missing or empty cell is the empty set."""
    if cfg.label_columns:
        out: list[list[str]] = [[] for _ in range(len(df))]
        for col in cfg.label_columns:
            for i, v in enumerate(df[col].tolist()):
                flag = FLAGS.get(str(v).strip().casefold())
                if flag is None:
                    raise KdflowError(f"Row {i} of '{path}' holds {v!r} in label column '{col}'; a label column "
                                      "holds 1 or 0 (true / false, yes / no)")
                if flag:
                    out[i].append(col)
        return out
    return [_label_set(v, i, path, cfg) for i, v in enumerate(df[cfg.label_column].tolist())]


def _label_set(value, row: int, path: Path, cfg: DataConfig) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    items = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise KdflowError(f"Row {row} of '{path}' holds {value!r} in column '{cfg.label_column}', which "
                                  "starts like a JSON array and is not one; write [\"a\", \"b\"]") from None
        elif cfg.label_delimiter:
            items = [t for t in text.split(cfg.label_delimiter) if t.strip()]
        else:
            items = [text] if text else []
    if not isinstance(items, (list, tuple, np.ndarray)):
        items = [items]
    names = [str(x).strip() for x in items]
    if any(not n or isinstance(x, (list, dict)) for n, x in zip(names, items)):
        raise KdflowError(f"Row {row} of '{path}' holds an empty or nested label in column '{cfg.label_column}' "
                          f"({value!r}); give a flat list of label names")
    return list(dict.fromkeys(names))  # a name given twice counts once


def sequence(value, row: int, path: Path, column: str) -> list:
    """A numeric sequence cell: a list of numbers ([L]) or of equal-length vectors ([L, D])."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    try:
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf: refused below
            arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise KdflowError(f"Row {row} of column '{column}' in '{path}' is not a non-empty list of numbers (or of "
                          "equal-length vectors); fix that row")
    if not np.isfinite(arr).all():
        raise KdflowError(f"Row {row} of column '{column}' in '{path}' holds NaN, an infinity or a number beyond "
                          "float32's range (about 3.4e38); give finite values")
    return arr.tolist()


def read_clinc(path: Path, include_oos: bool) -> dict[str, tuple[dict, list]]:
    """``{"train": [[text, intent], ...], "val": ..., "test": ...}`` (and ``oos_*`` when asked)."""
    layout = 'data.format clinc expects {"train": [[text, intent], ...], "val": ..., "test": ...}'
    what = f"data.path file '{path}'"
    obj = parse_json(read_text(must_exist(path, "path"), what, layout), what, layout)
    if not isinstance(obj, dict) or "train" not in obj:
        raise KdflowError(f"'{path}' is not in the CLINC150 layout: expected a JSON object with a 'train' key "
                          "holding [text, intent] pairs")
    out = {}
    for split, key in (("train", "train"), ("validation", "val"), ("test", "test")):
        rows = []
        for part in (key, f"oos_{key}") if include_oos else (key,):
            if not isinstance(obj.get(part, []), list):
                raise KdflowError(f"'{path}' key '{part}' holds {json_type(obj[part])}; {layout}")
            rows += obj.get(part, [])
        if not rows:
            continue
        bad = next((i for i, r in enumerate(rows) if not (isinstance(r, list) and len(r) == 2)), None)
        if bad is not None:
            raise KdflowError(f"'{path}' {key}[{bad}] is {rows[bad]!r}; each CLINC150 row must be [text, intent]")
        bad = next((i for i, r in enumerate(rows) if r[0] is None or not str(r[0]).strip()), None)
        if bad is not None:
            raise KdflowError(f"'{path}' {key}[{bad}] has no text; fill it in or drop the row")
        out[split] = ({"text": [str(r[0]) for r in rows]}, [r[1] for r in rows])
    return out


def read_path(cfg: DataConfig) -> dict[str, tuple[dict, list]]:
    """``data.path``: one file holding every split (the CLINC150 layout)."""
    path = Path(cfg.path)
    fmt = cfg.format
    if fmt == "auto":
        fmt = "clinc" if path.suffix.lower() == ".json" else format_of(path, "auto")
    if fmt != "clinc":
        raise KdflowError(f"data.path holds all splits in one file and supports the CLINC150 layout "
                          f"(data.format: clinc); for a {fmt} file per split use data.train/validation/test")
    return read_clinc(path, cfg.include_out_of_scope)


def split_files(cfg: DataConfig) -> list[tuple[str, str, Path]]:
    """``(part, config key, path)`` of every per-split file: train, validation, test, then each of
    ``extra_tests`` as part ``test_<name>``."""
    out = [(split, split, Path(getattr(cfg, split))) for split in ("train", "validation", "test")
           if getattr(cfg, split)]
    return out + [(f"test_{name}", f"extra_tests.{name}", Path(p)) for name, p in cfg.extra_tests.items()]
