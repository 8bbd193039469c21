"""One loader for every source: hub names, local tables, the CLINC150 layout.

Whatever the source, the result is a :class:`TaskData`: train / validation /
test :class:`Split` objects holding stable example ids, inputs and targets, and
one label map shared by teacher and student. Inputs are kept generic
(``inputs`` maps a field name to a list) so that text, text pairs, numeric
sequences and, later, images travel the same path; :class:`Featurizer` turns a
batch of them into model keyword arguments.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from .config import DataConfig
from .errors import KdflowError

IGNORE = -100  # label of an example without a gold label (CE skips it)


@dataclass
class Split:
    """One split: ``ids[i]``, ``inputs[name][i]`` and ``targets[i]`` describe example i."""

    name: str
    ids: list[str]
    inputs: dict[str, list]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: "Split") -> "Split":
        """This split's examples followed by ``other``'s (same input names)."""
        if set(self.inputs) != set(other.inputs):
            raise KdflowError(f"Cannot join splits with inputs {sorted(self.inputs)} and {sorted(other.inputs)}")
        return Split(self.name, self.ids + other.ids, {k: v + other.inputs[k] for k, v in self.inputs.items()},
                     np.concatenate([self.targets, other.targets.astype(self.targets.dtype)]))

    @property
    def labelled(self) -> np.ndarray:
        """Positions of the examples that carry a label (not -100 / NaN)."""
        t = self.targets
        return np.flatnonzero(~np.isnan(t)) if t.dtype.kind == "f" else np.flatnonzero(t != -100)

    def subset(self, index: "np.ndarray | list[int]") -> "Split":
        index = np.asarray(index, dtype=np.int64)
        return Split(self.name, [self.ids[i] for i in index],
                     {k: [v[i] for i in index] for k, v in self.inputs.items()}, self.targets[index])


@dataclass
class TaskData:
    task: str  # "classification" | "regression"
    train: Split
    validation: Split
    test: Optional[Split]
    label_names: Optional[list[str]] = None  # index -> name; None for regression
    notes: list[str] = field(default_factory=list)
    unlabelled: Optional[Split] = None  # transfer set: inputs only (targets -100 / NaN)

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names else 1

    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.validation, self.test) if s is not None]


def example_ids(split: str, inputs: dict[str, list]) -> list[str]:
    """Content-derived ids: the same text gets the same id in every run and file order.

    A repeated text within a split gets ``#1``, ``#2`` ... so ids stay unique.
    """
    seen: dict[str, int] = {}
    ids = []
    keys = sorted(inputs)
    for i in range(len(inputs[keys[0]]) if keys else 0):
        blob = "\x1f".join(repr(inputs[k][i]) for k in keys)
        h = hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]
        n = seen.get(h, 0)
        seen[h] = n + 1
        ids.append(f"{split}:{h}" + (f"#{n}" if n else ""))
    return ids


# ------------------------------------------------------------ reading files

_SUFFIX_FORMAT = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "jsonl",
                  ".parquet": "parquet", ".pq": "parquet"}


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise KdflowError(f"Cannot tell the format of '{path}' from its suffix; set data.format to one of "
                          "csv, tsv, json, jsonl, parquet, clinc")
    return fmt


def _must_exist(path: Path, key: str) -> Path:
    if not path.is_file():
        raise KdflowError(f"data.{key} file '{path}' does not exist; check the path (relative paths are "
                          "read from the current directory)")
    return path


def read_table(path: Path, cfg: DataConfig, key: str = "train"):
    """A pandas DataFrame from CSV/TSV/JSON/JSONL/Parquet, with cfg.columns for header-less files."""
    import pandas as pd

    fmt = _format_of(_must_exist(path, key), cfg.format)
    header = 0 if cfg.header else None
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(path, sep="," if fmt == "csv" else "\t", header=header, index_col=False,
                             quoting=3 if fmt == "tsv" else 0, dtype=str, keep_default_na=False)
            if cfg.columns is not None:
                if len(df.columns) != len(cfg.columns):
                    raise KdflowError(f"'{path}' has {len(df.columns)} fields per row but data.columns names "
                                      f"{len(cfg.columns)}; list one name per field")
                df.columns = cfg.columns
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)  # keep "001" a string, as CSV does
        elif fmt == "json":
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
            if isinstance(obj, dict) and {"train", "val", "validation", "test"} & set(obj):
                raise KdflowError(f"'{path}' holds several splits ({', '.join(obj)}); point data.path "
                                  "(not data.train) at it, with data.format: clinc for the CLINC150 layout")
            df = pd.DataFrame(obj)  # a list of records, or a dict of columns
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            raise KdflowError(f"data.format '{fmt}' is for data.path files; for data.{key} use csv, tsv, "
                              "json, jsonl or parquet")
    except KdflowError:
        raise
    except Exception as err:  # a malformed file: say which, and what the parser saw
        raise KdflowError(f"Could not read '{path}' as {fmt}: {_first_line(err)}") from None
    if cfg.header is False and cfg.columns is None and fmt in ("csv", "tsv"):
        df.columns = [str(c) for c in df.columns]
    return df


def _columns_from_frame(df, cfg: DataConfig, path: Path) -> tuple[dict[str, list], list]:
    if cfg.values_column:
        wanted = [cfg.values_column]
    else:
        wanted = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for col in wanted + [cfg.label_column]:
        if col not in df.columns:
            have = ", ".join(map(str, df.columns))
            raise KdflowError(f"Column '{col}' is not in '{path}' (columns: {have}); set data.text_column / "
                              "data.label_column to the right names"
                              + ("" if cfg.header else " or data.columns to name them"))
    labels = _cells(df, cfg.label_column, path)
    if cfg.values_column:
        return {"values": [_sequence(v, i, path, cfg.values_column) for i, v in enumerate(df[cfg.values_column])]}, \
            labels
    inputs = {"text": [str(v) for v in _cells(df, cfg.text_column, path)]}
    if cfg.text_pair_column:
        inputs["text_pair"] = [str(v) for v in _cells(df, cfg.text_pair_column, path)]
    return inputs, labels


def _cells(df, column: str, path: Path) -> list:
    """A column's values; a missing or empty cell is an error naming its row, never a class "nan"."""
    values = df[column].tolist()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise KdflowError(f"Row {i} of '{path}' has no value in column '{column}'; fill it in or drop the row")
    return values


def _sequence(value, row: int, path: Path, column: str) -> list:
    """A numeric sequence cell: a list of numbers ([L]) or of equal-length vectors ([L, D])."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise KdflowError(f"Row {row} of column '{column}' in '{path}' is not a non-empty list of numbers (or of "
                          "equal-length vectors); fix that row")
    return arr.tolist()


def _read_clinc(path: Path, include_oos: bool) -> dict[str, tuple[dict, list]]:
    try:
        obj = json.loads(_must_exist(path, "path").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KdflowError(f"'{path}' is not valid JSON (line {err.lineno}); data.format clinc expects "
                          '{"train": [[text, intent], ...], "val": ..., "test": ...}') from None
    if not isinstance(obj, dict) or "train" not in obj:
        raise KdflowError(f"'{path}' is not in the CLINC150 layout: expected a JSON object with a 'train' key "
                          "holding [text, intent] pairs")
    out = {}
    for split, key in (("train", "train"), ("validation", "val"), ("test", "test")):
        rows = list(obj.get(key, []))
        if include_oos:
            rows += obj.get(f"oos_{key}", [])
        if not rows:
            continue
        bad = next((i for i, r in enumerate(rows) if not (isinstance(r, list) and len(r) == 2)), None)
        if bad is not None:
            raise KdflowError(f"'{path}' {key}[{bad}] is {rows[bad]!r}; each CLINC150 row must be [text, intent]")
        out[split] = ({"text": [str(r[0]) for r in rows]}, [r[1] for r in rows])
    return out


def _hub_attempts(hub: str, config: Optional[str]) -> list[tuple[str, Optional[str]]]:
    """``glue/sst2`` is (name, config) for the canonical sets, ``SetFit/sst2`` a repo id: try both."""
    if config or Path(hub).is_dir() or hub.count("/") != 1:
        return [(hub, config)]
    name, sub = hub.split("/")
    return [(name, sub), (hub, None)]


def _load_hub_dataset(datasets, hub: str, config: Optional[str]):
    errors = []
    for name, sub in _hub_attempts(hub, config):
        try:
            return datasets.load_dataset(name, sub)
        except Exception as err:  # try the other reading of the name, then report both failures
            errors.append(f"as {name!r}" + (f" config {sub!r}" if sub else "") + f": {_first_line(err)}")
    raise KdflowError(f"Could not load hub data set '{hub}' ({'; '.join(errors)}); check the name (and "
                      "data.hub_config) and your network, or download it and use data.train with local files")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _read_hub(cfg: DataConfig, notes: list[str]) -> dict[str, tuple[dict, list]]:
    """A Hugging Face hub data set (needs the network, or a local HF cache)."""
    try:
        import datasets
    except ImportError:
        raise KdflowError("data.hub needs the 'datasets' package: pip install 'kdflow[hf]'") from None
    ds = _load_hub_dataset(datasets, cfg.hub, cfg.hub_config)
    text_col, label_col, pair_col = cfg.text_column, cfg.label_column, cfg.text_pair_column
    first_split = next(iter(ds.values()))
    cols = first_split.column_names
    # the usual column names of popular sets, used only where the user kept the defaults
    given = cfg.model_fields_set
    if text_col not in cols and "text_column" not in given:
        pairs = [("sentence1", "sentence2"), ("question1", "question2"), ("question", "sentence"),
                 ("premise", "hypothesis"), ("question", "passage")]
        found = next(((a, b) for a, b in pairs if a in cols and b in cols), None)
        if found and "text_pair_column" not in given:
            text_col, pair_col = found
        else:
            text_col = next((c for c in ("text", "sentence", "content", "question") if c in cols), text_col)
    if label_col not in cols and "label_column" not in given:
        label_col = next((c for c in ("label", "intent", "labels") if c in cols), label_col)
    if (text_col, label_col) != (cfg.text_column, cfg.label_column) or pair_col != cfg.text_pair_column:
        notes.append(f"hub data set columns used: text '{text_col}'" + (f", pair '{pair_col}'" if pair_col else "")
                     + f", label '{label_col}'")
    for col in [text_col, label_col] + ([pair_col] if pair_col else []):
        if col not in cols:
            raise KdflowError(f"Column '{col}' is not in hub data set '{cfg.hub}' (columns: {', '.join(cols)}); "
                              "set data.text_column / data.label_column")
    names = None
    feat = first_split.features.get(label_col)
    if getattr(feat, "names", None):
        names = list(feat.names)
    out = {}
    for split, candidates in (("train", ("train",)), ("validation", ("validation", "val", "dev")),
                              ("test", ("test",))):
        key = next((c for c in candidates if c in ds), None)
        if key is None:
            continue
        part = ds[key]
        labels = part[label_col]
        if names is not None:
            labels = [names[y] if 0 <= y < len(names) else y for y in labels]
        inputs = {"text": list(part[text_col])}
        if pair_col:
            inputs["text_pair"] = list(part[pair_col])
        # GLUE test splits have hidden labels (-1): unusable for evaluation
        if all(y == -1 for y in labels[:100]):
            notes.append(f"hub split '{key}' has no labels (-1): not used as the {split} split")
            continue
        out[split] = (inputs, labels)
    if "test" not in out and "validation" in out:
        # the usual case of GLUE: report on the hub's validation split, select on a part of train
        out["test"] = out.pop("validation")
        notes.append("hub data set has no labelled test split: its validation split is used as test, and "
                     "validation is held out from train")
    return out


# ------------------------------------------------------------ assembling

def _label_map(raw_labels: list, cfg: DataConfig) -> list[str]:
    names = sorted({str(y) for y in raw_labels}, key=lambda s: (not s.lstrip("-").isdigit(),
                                                                 int(s) if s.lstrip("-").isdigit() else 0, s))
    if len(names) < 2:
        raise KdflowError(f"The training labels in column '{cfg.label_column}' hold {len(names)} distinct "
                          "value(s); classification needs at least 2 (for numeric targets set data.task: regression)")
    return names


def _targets(raw: list, names: Optional[list[str]], split: str, cfg: DataConfig) -> np.ndarray:
    if names is None:
        try:
            out = np.asarray([float(y) for y in raw], dtype=np.float32)
            if np.isnan(out).any():
                raise KdflowError(f"Regression target in row {int(np.flatnonzero(np.isnan(out))[0])} of the {split} "
                                  f"split is missing (NaN); fill it in or drop the row")
            return out
        except (TypeError, ValueError):
            bad = next(y for y in raw if not _is_float(y))
            raise KdflowError(f"Regression target {bad!r} in the {split} split is not a number; "
                              f"fix column '{cfg.label_column}' or set data.task: classification") from None
    index = {n: i for i, n in enumerate(names)}
    out = np.empty(len(raw), dtype=np.int64)
    for i, y in enumerate(raw):
        j = index.get(str(y))
        if j is None:
            raise KdflowError(f"Label {y!r} (row {i} of the {split} split) does not occur in train; "
                              "every evaluation label must be one of the training labels")
        out[i] = j
    return out


def _is_float(y) -> bool:
    try:
        float(y)
        return True
    except (TypeError, ValueError):
        return False


def stratified_sample(targets: np.ndarray, n: int, seed: int, classification: bool,
                      keep_one: bool = False) -> np.ndarray:
    """Exactly ``n`` sorted indices, each class in proportion (largest remainders), seeded.

    ``keep_one``: never take every example of a class (so a held-out split leaves one in train).
    """
    rng = np.random.default_rng(seed)
    if not classification:
        return np.sort(rng.permutation(len(targets))[:n])
    classes, counts = np.unique(targets, return_counts=True)
    caps = counts - 1 if keep_one else counts
    caps = np.maximum(caps, 0) if keep_one else caps
    quota = n * counts / len(targets)
    take = np.minimum(np.floor(quota).astype(int), caps)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    while take.sum() < min(n, caps.sum()):
        grew = False
        for j in order:
            if take.sum() >= n:
                break
            if take[j] < caps[j]:
                take[j] += 1
                grew = True
        if not grew:
            break
    picked = [rng.permutation(np.flatnonzero(targets == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)


def stratified_split(targets: np.ndarray, fraction: float, seed: int,
                     classification: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into (keep, held_out): ``fraction`` held out, per class when classifying."""
    n = max(1, int(round(fraction * len(targets)))) if len(targets) > 1 else 0  # tiny data: hold out one
    held = stratified_sample(targets, n, seed, classification, keep_one=True)
    return np.setdiff1d(np.arange(len(targets)), held), held


def load_data(cfg: DataConfig) -> TaskData:
    """Read, validate and split the data that ``cfg`` describes (seeded by ``cfg.seed``, so teach,
    distill and evaluate always see the same split)."""
    seed = cfg.seed
    notes: list[str] = []
    if cfg.hub:
        parts = _read_hub(cfg, notes)
    elif cfg.path:
        path = Path(cfg.path)
        fmt = cfg.format
        if fmt == "auto":
            fmt = "clinc" if path.suffix.lower() == ".json" else _format_of(path, "auto")
        if fmt != "clinc":
            raise KdflowError(f"data.path holds all splits in one file and supports the CLINC150 layout "
                              f"(data.format: clinc); for a {fmt} file per split use data.train/validation/test")
        parts = _read_clinc(path, cfg.include_out_of_scope)
    else:
        parts = {}
        for split in ("train", "validation", "test"):
            p = getattr(cfg, split)
            if p:
                df = read_table(Path(p), cfg, split)
                if len(df) == 0:
                    raise KdflowError(f"data.{split} file '{p}' holds no rows; give a file with examples")
                parts[split] = _columns_from_frame(df, cfg, Path(p))
    if "train" not in parts:
        raise KdflowError("The data has no train split; give data.train, or a data.path/hub with a 'train' part")

    classification = cfg.task == "classification"
    names = _label_map(parts["train"][1], cfg) if classification else None
    splits = {}
    for split, (inputs, raw) in parts.items():
        splits[split] = Split(split, example_ids(split, inputs), inputs, _targets(raw, names, split, cfg))

    train = splits["train"]
    if cfg.max_train_examples and len(train) > cfg.max_train_examples:
        keep = stratified_sample(train.targets, cfg.max_train_examples, seed + 1, classification)
        notes.append(f"train subsampled from {len(train)} to {len(keep)} examples (data.max_train_examples)")
        train = train.subset(keep)
    if "validation" in splits:
        validation = splits["validation"]
    else:
        keep, held = stratified_split(train.targets, cfg.validation_fraction, seed, classification)
        notes.append(f"no validation split given: held out a stratified {cfg.validation_fraction:.0%} of train "
                     f"({len(held)} examples, seed {seed})")
        validation = Split("validation", [train.ids[i].replace("train:", "validation:", 1) for i in held],
                           {k: [v[i] for i in held] for k, v in train.inputs.items()}, train.targets[held])
        train = train.subset(keep)
    if len(validation) == 0:
        raise KdflowError("The validation split is empty (too few examples per class to hold any out); give a "
                          "data.validation file or more training data")
    unlabelled = _read_unlabelled(cfg, [validation, splits.get("test")], notes) if cfg.unlabelled else None
    return TaskData(cfg.task, train, validation, splits.get("test"), names, notes, unlabelled)


def _read_unlabelled(cfg: DataConfig, held: list, notes: list[str]) -> Split:
    """The transfer set: inputs only; rows whose text is in validation or test are dropped (they
    would leak held-out inputs into training)."""
    if cfg.values_column:
        raise KdflowError("data.unlabelled reads text; numeric sequences (data.values_column) are not supported")
    path = Path(cfg.unlabelled)
    df = read_table(path, cfg, "unlabelled")
    cols = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for col in cols:
        if col not in df.columns:
            raise KdflowError(f"Column '{col}' is not in '{path}' (columns: {', '.join(map(str, df.columns))}); "
                              "the unlabelled file needs the same text column(s) as train")
    inputs = {"text": [str(v) for v in _cells(df, cfg.text_column, path)]}
    if cfg.text_pair_column:
        inputs["text_pair"] = [str(v) for v in _cells(df, cfg.text_pair_column, path)]
    seen = {t for s in held if s is not None for t in s.inputs.get("text", [])}
    keep = [i for i, t in enumerate(inputs["text"]) if t not in seen]
    if len(keep) < len(inputs["text"]):
        notes.append(f"unlabelled: dropped {len(inputs['text']) - len(keep)} texts that are in validation or test")
    if cfg.max_unlabelled_examples and len(keep) > cfg.max_unlabelled_examples:
        rng = np.random.default_rng(cfg.seed + 2)
        keep = sorted(rng.choice(keep, cfg.max_unlabelled_examples, replace=False).tolist())
    inputs = {k: [v[i] for i in keep] for k, v in inputs.items()}
    if not keep:
        raise KdflowError(f"data.unlabelled '{path}' has no usable rows; give texts that are not in validation "
                          "or test")
    targets = np.full(len(keep), np.nan if cfg.task == "regression" else -100,
                      dtype=np.float32 if cfg.task == "regression" else np.int64)
    notes.append(f"unlabelled (transfer set): {len(keep)} examples from {path}, labelled by the teacher only")
    return Split("unlabelled", example_ids("unlabelled", inputs), inputs, targets)


# ------------------------------------------------------------ batches

class Featurizer:
    """Turns the inputs of some examples into model keyword arguments.

    Text: tokenized once per split (no padding), padded per batch. Numeric
    sequences (``inputs["values"]``, each ``[L]`` or ``[L, D]``): padded into
    ``inputs_embeds``-like float tensors with an attention mask.
    """

    def __init__(self, tokenizer=None, max_length: int = 128):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._rows: dict[str, dict] = {}  # example id -> encoded row; ids are content-derived

    def encode(self, split: Split) -> list[dict]:
        """Encoded rows of ``split`` in order; each example is tokenized once, whatever subset asks."""
        missing = [i for i, key in enumerate(split.ids) if key not in self._rows]
        if missing:
            if "text" in split.inputs:
                if self.tokenizer is None:
                    raise KdflowError("This model reads text but has no tokenizer; use an hf model, or give an "
                                      "encoder a tokenizer through model.teacher.name")
                texts = [split.inputs["text"][i] for i in missing]
                pair = [split.inputs["text_pair"][i] for i in missing] if "text_pair" in split.inputs else None
                enc = self.tokenizer(texts, pair, truncation=True, max_length=self.max_length)
                names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in enc]
                for j, i in enumerate(missing):
                    self._rows[split.ids[i]] = {n: enc[n][j] for n in names}
            elif "values" in split.inputs:
                for i in missing:
                    self._rows[split.ids[i]] = {"values": np.asarray(split.inputs["values"][i], dtype=np.float32)}
            else:
                raise KdflowError(f"Split '{split.name}' has inputs {list(split.inputs)}; expected text or values")
        return [self._rows[key] for key in split.ids]

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if "values" in rows[0]:
            length = min(self.max_length, max(len(r["values"]) for r in rows))
            first = rows[0]["values"]
            dim = first.shape[1] if first.ndim == 2 else 1
            if any((r["values"].shape[1] if r["values"].ndim == 2 else 1) != dim for r in rows):
                raise KdflowError(f"Numeric sequences mix vector sizes (first is {dim}); every step of every "
                                  "example must have the same number of values")
            out = torch.zeros(len(rows), length, dim)
            mask = torch.zeros(len(rows), length, dtype=torch.long)
            for i, r in enumerate(rows):
                v = torch.from_numpy(r["values"][:length]).reshape(-1, dim)
                out[i, : len(v)] = v
                mask[i, : len(v)] = 1
            return {"values": out, "attention_mask": mask}
        pad = self.tokenizer.pad_token_id or 0
        length = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for name in rows[0]:
            fill = pad if name == "input_ids" else 0
            t = torch.full((len(rows), length), fill, dtype=torch.long)
            for i, r in enumerate(rows):
                t[i, : len(r[name])] = torch.tensor(r[name], dtype=torch.long)
            batch[name] = t
        return batch


class IndexDataset(torch.utils.data.Dataset):
    """Yields example positions; the collate function builds the batch from them."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def make_collate(split: Split, student_feat: Featurizer, teacher_feat: Optional[Featurizer] = None
                 ) -> Callable[[list[int]], dict[str, Any]]:
    """Batch = positions, student inputs, teacher inputs (same dict when the tokenizer is shared), targets."""
    s_rows = student_feat.encode(split)
    t_rows = teacher_feat.encode(split) if teacher_feat is not None and teacher_feat is not student_feat else None
    targets = torch.from_numpy(split.targets)

    def collate(index: list[int]) -> dict[str, Any]:
        idx = torch.tensor(index, dtype=torch.long)
        s_in = student_feat.collate([s_rows[i] for i in index])
        t_in = teacher_feat.collate([t_rows[i] for i in index]) if t_rows is not None else s_in
        return {"index": idx, "inputs": s_in, "teacher_inputs": t_in, "labels": targets[idx]}

    return collate


class EpochSampler(torch.utils.data.Sampler):
    """Order = f(seed, epoch): a resumed run replays exactly the batches it would have seen."""

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


def loader(split: Split, collate, batch_size: int, shuffle: bool, seed: int = 0) -> torch.utils.data.DataLoader:
    # a generator of its own: without one, every iteration of a DataLoader draws from the global
    # RNG, so inference loops (teacher outputs, validation) would shift the training's dropout masks
    return torch.utils.data.DataLoader(IndexDataset(len(split)), batch_size=batch_size,
                                       sampler=EpochSampler(len(split), shuffle, seed), collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed))


def set_epoch(dl, epoch: int) -> None:
    """Tell a (possibly accelerate-wrapped) loader's sampler which epoch starts."""
    if hasattr(dl, "set_epoch"):  # accelerate's loaders reach the sampler themselves
        dl.set_epoch(epoch)
    elif hasattr(dl.sampler, "set_epoch"):
        dl.sampler.set_epoch(epoch)
