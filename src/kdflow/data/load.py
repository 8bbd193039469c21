"""``load_data``: source -> labels -> splits -> transfer set, the same for every command.

Whatever the source (hub, one CLINC-layout file, one table per split), the result is
a :class:`~kdflow.data.splits.TaskData` with one label map shared by teacher and
student, seeded by ``data.seed`` so teach, distill and evaluate see the same split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..config import DataConfig
from ..config.glue import glue_task
from ..errors import KdflowError
from ..tasks import task_kind
from ..tasks.classification import IGNORE
from ..tasks.tokens import NO_WORD
from .features import modality_of
from .glue_files import read_glue_files
from .hub import read_hub
from .images import pixel_inputs, read_image_folder, read_npz, read_packaged, read_unlabelled_images, same_shape
from .leakage import overlapping
from .splits import Split, TaskData, example_ids, stratified_sample, stratified_split
from .tables import (
    SUFFIX_FORMAT,
    columns_from_frame,
    format_of,
    must_exist,
    read_path,
    read_table,
    split_files,
    text_inputs,
)
from .tagging import read_tagged, tag_names, words

MISSING_LABELS = {"", "nan", "null", "none"}  # label cells that read as a missing value (any case)


def refuse_missing_labels(parts: dict[str, tuple[dict, list]], cfg: DataConfig) -> None:
    """A class label that reads as a missing value (None, NaN, or the words nan / null / none, or blank) is
    refused with its split and row: never made a class of its own."""
    for split, (_, raw) in parts.items():
        for i, y in enumerate(raw):
            if isinstance(y, (list, tuple, np.ndarray)):
                raise KdflowError(f"Row {i} of the {split} split ({source_of(cfg, split)}, column "
                                  f"'{cfg.label_column}') holds a list of labels ({list(y)!r}), and data.task "
                                  f"{cfg.task} takes one label per example; set data.task: multilabel")
            if y is None or (isinstance(y, float) and y != y) or str(y).strip().casefold() in MISSING_LABELS:
                raise KdflowError(f"Row {i} of the {split} split ({source_of(cfg, split)}, column "
                                  f"'{cfg.label_column}') holds a label that reads as a missing value ({y!r}); give "
                                  "that row its label or drop it (a missing label is never made a class)")


def label_map(raw_labels: list, cfg: DataConfig) -> list[str]:
    """Sorted label names: integers in numeric order first, then strings (the names in train's label sets,
    multilabel; train's tags, ``O`` first, token tagging; ``data.label_names`` where given)."""
    if cfg.label_names:
        return list(cfg.label_names)
    if task_kind(cfg.task).per_word:
        return tag_names(raw_labels)
    sets = task_kind(cfg.task).label_sets
    seen = {str(y) for labels in raw_labels for y in labels} if sets else {str(y) for y in raw_labels}
    names = sorted(seen, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
    if sets and not names:
        raise KdflowError(f"No training example has a label in column '{cfg.label_column}'; give labelled examples "
                          "or data.label_names")
    if len(names) < 2 and not sets:
        raise KdflowError(f"The training labels in column '{cfg.label_column}' hold {len(names)} distinct "
                          "value(s); classification needs at least 2 (for numeric targets set data.task: regression)")
    return names


def _regression_targets(raw: list, split: str, cfg: DataConfig) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # a target beyond float32's range becomes inf: refused below
            out = np.asarray([float(y) for y in raw], dtype=np.float32)
    except (TypeError, ValueError):
        bad = next(y for y in raw if not _is_float(y))
        raise KdflowError(f"Regression target {bad!r} in the {split} split is not a number; "
                          f"fix column '{cfg.label_column}' or set data.task: classification") from None
    if np.isnan(out).any():
        raise KdflowError(f"Regression target in row {int(np.flatnonzero(np.isnan(out))[0])} of the {split} "
                          f"split ({source_of(cfg, split)}) is missing (NaN); fill it in or drop the row")
    if not np.isfinite(out).all():
        row = int(np.flatnonzero(~np.isfinite(out))[0])
        raise KdflowError(f"Regression target {raw[row]!r} in row {row} of the {split} split ({source_of(cfg, split)}, "
                          f"column '{cfg.label_column}') is infinite or beyond float32's range (about 3.4e38); give "
                          "finite targets")
    return out


def source_of(cfg: DataConfig, split: str) -> str:
    """Where ``split``'s examples come from, for an error: its file and config key, or the hub data set."""
    files = {part: f"file '{path}', data.{key}" for part, key, path in split_files(cfg)}
    if split in files:
        return files[split]
    return f"hub data set '{cfg.hub}'" if cfg.hub else f"file '{cfg.path}'" if cfg.path else f"data.{split}"


def word_targets(raw: list, names: list[str], split: str, cfg: DataConfig) -> np.ndarray:
    """``[N, data.max_length]`` tag indices per word, :data:`~kdflow.tasks.tokens.NO_WORD` past each sentence."""
    index = {n: i for i, n in enumerate(names)}
    out = np.full((len(raw), cfg.max_length), NO_WORD, dtype=np.int64)
    for i, tags in enumerate(raw):
        if len(tags) > cfg.max_length:
            raise KdflowError(f"Sentence {i} of the {split} split ({source_of(cfg, split)}) has {len(tags)} words, "
                              f"more than data.max_length {cfg.max_length}; raise data.max_length or split the "
                              "sentence")
        for j, tag in enumerate(tags):
            k = index.get(tag)
            if k is None:
                raise KdflowError(f"Tag {tag!r} (sentence {i} of the {split} split) "
                                  + ("is not one of data.label_names; add it there" if cfg.label_names else
                                     "does not occur in train; every evaluation tag must be one of the training "
                                     "tags, or list them all in data.label_names"))
            out[i, j] = k
    return out


def unknown_tags(sentences: list[list[str]], cfg: DataConfig) -> np.ndarray:
    """``[N, data.max_length]`` targets of sentences whose tags are unknown: IGNORE at each word (distilled, never
    scored), NO_WORD past it; an empty or too long sentence is refused."""
    out = np.full((len(sentences), cfg.max_length), NO_WORD, dtype=np.int64)
    for i, s in enumerate(sentences):
        if not s or len(s) > cfg.max_length:
            raise KdflowError(f"Row {i} of data.unlabelled '{cfg.unlabelled}' has {len(s)} words; give sentences of "
                              f"1 to data.max_length ({cfg.max_length}) words")
        out[i, : len(s)] = IGNORE
    return out


def targets(raw: list, names: Optional[list[str]], split: str, cfg: DataConfig) -> np.ndarray:
    """Class indices under ``names`` (or floats for regression); an unknown label names its row."""
    if names is None:
        return _regression_targets(raw, split, cfg)
    if task_kind(cfg.task).per_word:
        return word_targets(raw, names, split, cfg)
    index = {n: i for i, n in enumerate(names)}
    sets = task_kind(cfg.task).label_sets
    out = np.zeros((len(raw), len(names)), dtype=np.float32) if sets else np.empty(len(raw), dtype=np.int64)
    for i, y in enumerate(raw):
        for name in y if sets else [y]:
            j = index.get(str(name))
            if j is None:
                raise KdflowError(f"Label {name!r} (row {i} of the {split} split) "
                                  + ("is not one of data.label_names; add it there" if cfg.label_names else
                                     "does not occur in train; every evaluation label must be one of the training "
                                     "labels, or list them all in data.label_names"))
            if sets:
                out[i, j] = 1.0
            else:
                out[i] = j
    return out


def _is_float(y) -> bool:
    try:
        float(y)
        return True
    except (TypeError, ValueError):
        return False


def _read_source(cfg: DataConfig, notes: list[str]) -> dict[str, tuple[dict, list]]:
    if cfg.hub:
        parts = read_hub(cfg, notes)
    elif cfg.packaged:
        parts = read_packaged(cfg)
    elif cfg.path:
        parts = read_path(cfg)
    elif cfg.glue:
        parts = read_glue_files(cfg, glue_task(cfg.glue))
    elif task_kind(cfg.task).per_word:
        parts = {part: read_tagged(path, key, cfg.format, notes, cfg.text_column) for part, key, path in
                 split_files(cfg)}
    else:
        parts = read_split_files(cfg)
    if "train" not in parts:
        raise KdflowError("The data has no train split; give data.train, or a data.path/hub with a 'train' part")
    if "image" in parts["train"][0]:
        same_shape(parts)
    return parts


def _hold_out_validation(train: Split, cfg: DataConfig, notes: list[str]) -> tuple[Split, Split]:
    keep, held = stratified_split(train.targets, cfg.validation_fraction, cfg.seed, task_kind(cfg.task).classes)
    notes.append(f"no validation split given: held out a stratified {cfg.validation_fraction:.0%} of train "
                 f"({len(held)} examples, seed {cfg.seed})")
    validation = Split("validation", [train.ids[i].replace("train:", "validation:", 1) for i in held],
                       {k: [v[i] for i in held] for k, v in train.inputs.items()}, train.targets[held])
    return train.subset(keep), validation


def read_split_files(cfg: DataConfig) -> dict[str, tuple[dict, list]]:
    """``data.train`` / ``validation`` / ``test`` (and ``extra_tests``): one table, image folder or
    ``.npz`` file per split."""
    return {part: read_split(path, cfg, key) for part, key, path in split_files(cfg)}


def read_split(path: Path, cfg: DataConfig, key: str) -> tuple[dict, list]:
    """One split file: an image folder (a directory, or ``format: folder``), an ``.npz`` of images, a
    table of pixels (with ``data.image_shape``) or a table of text / numeric sequences."""
    image_folder = path.is_dir() and path.suffix.lower() not in SUFFIX_FORMAT  # a folder named x.csv is none
    if cfg.format == "folder" or (cfg.format == "auto" and image_folder):
        return read_image_folder(must_exist(path, key, folder=True), cfg, key)
    if format_of(must_exist(path, key), cfg.format) == "npz":
        return read_npz(path, key, cfg.image_size)
    df = read_table(path, cfg, key)
    if len(df) == 0:
        raise KdflowError(f"data.{key} file '{path}' holds no rows; give a file with examples")
    return pixel_inputs(df, cfg, path) if cfg.image_shape else columns_from_frame(df, cfg, path)


def load_data(cfg: DataConfig) -> TaskData:
    """Read, validate and split the data that ``cfg`` describes (seeded by ``cfg.seed``, so teach,
    distill and evaluate always see the same split)."""
    notes: list[str] = []
    parts = _read_source(cfg, notes)
    kind = task_kind(cfg.task)
    classification = kind.classes
    if classification:
        refuse_missing_labels(parts, cfg)
    if cfg.glue:  # the task's own label names and order, whatever the training labels hold
        names = list(glue_task(cfg.glue).labels) if classification else None
    else:
        names = label_map(parts["train"][1], cfg) if kind.named else None
    splits = {split: Split(split, example_ids(split, inputs), inputs, targets(raw, names, split, cfg))
              for split, (inputs, raw) in parts.items()}
    train = splits["train"]
    if cfg.max_train_examples and len(train) > cfg.max_train_examples:
        keep = stratified_sample(train.targets, cfg.max_train_examples, cfg.seed + 1, classification)
        notes.append(f"train subsampled from {len(train)} to {len(keep)} examples (data.max_train_examples)")
        train = train.subset(keep)
    carved = "validation" not in splits
    if not carved:
        validation = splits["validation"]
    else:
        train, validation = _hold_out_validation(train, cfg, notes)
    if len(validation) == 0:
        raise KdflowError("The validation split is empty (too few examples per class to hold any out); give a "
                          "data.validation file or more training data")
    extra = {k[len("test_"):]: v for k, v in splits.items() if k.startswith("test_")}
    held = [validation, splits.get("test"), *extra.values()]
    images = "image" in train.inputs
    unlabelled = (read_unlabelled(cfg, held, notes, train if images else None, len(names or []) or 1)
                  if cfg.unlabelled else None)
    return TaskData(cfg.task, train, validation, splits.get("test"), names, notes, unlabelled, extra, carved,
                    modality_of(train.inputs))


def read_unlabelled(cfg: DataConfig, held: list, notes: list[str], image_train: Optional[Split] = None,
                    num_labels: int = 1) -> Split:
    """The transfer set: inputs only; rows whose inputs are in validation or test are dropped (the
    leakage rule: they would leak held-out inputs into training). Images (``image_train``: the training
    split they must match): an image folder, an ``.npz`` (``images``; any labels ignored) or a pixel table."""
    if cfg.values_column:
        raise KdflowError("data.unlabelled reads text or images; numeric sequences (data.values_column) are not "
                          "supported")
    path = Path(cfg.unlabelled)
    inputs = _unlabelled_images(path, cfg, image_train) if image_train is not None else _unlabelled_text(path, cfg)
    if task_kind(cfg.task).per_word:  # sentences: their words as the spans rule splits text
        inputs = {"words": [[w for w, _, _ in words(t)] for t in inputs["text"]]}
    leaks = set(overlapping(inputs, held).tolist())
    keep = [i for i in range(len(next(iter(inputs.values())))) if i not in leaks]
    if leaks:
        noun = "images" if image_train is not None else "texts"
        notes.append(f"unlabelled: dropped {len(leaks)} {noun} that are in validation or test")
    if cfg.max_unlabelled_examples and len(keep) > cfg.max_unlabelled_examples:
        rng = np.random.default_rng(cfg.seed + 2)
        keep = sorted(rng.choice(keep, cfg.max_unlabelled_examples, replace=False).tolist())
    inputs = {k: [v[i] for i in keep] for k, v in inputs.items()}
    if not keep:
        raise KdflowError(f"data.unlabelled '{path}' has no usable rows; give examples that are not in validation "
                          "or test")
    if task_kind(cfg.task).per_word:  # tags unknown
        targets_ = unknown_tags(inputs["words"], cfg)
    else:
        targets_ = task_kind(cfg.task).no_targets(len(keep), num_labels)
    notes.append(f"unlabelled (transfer set): {len(keep)} examples from {path}, labelled by the teacher only")
    return Split("unlabelled", example_ids("unlabelled", inputs), inputs, targets_)


def _unlabelled_text(path: Path, cfg: DataConfig) -> dict[str, list]:
    # data.format names the layout of data.path (clinc); the unlabelled table's format comes from its suffix
    df = read_table(path, cfg.model_copy(update={"format": "auto"}) if cfg.format == "clinc" else cfg, "unlabelled")
    cols = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    for col in cols:
        if col not in df.columns:
            raise KdflowError(f"Column '{col}' is not in '{path}' (columns: {', '.join(map(str, df.columns))}); "
                              "the unlabelled file needs the same text column(s) as train")
    return text_inputs(df, cfg, path)


def _unlabelled_images(path: Path, cfg: DataConfig, train: Split) -> dict[str, list]:
    inputs = read_unlabelled_images(path, cfg)
    want, got = train.inputs["image"][0].shape, inputs["image"][0].shape
    if got != want:
        raise KdflowError(f"data.unlabelled '{path}' holds {got[0]}x{got[1]}x{got[2]} images and train "
                          f"{want[0]}x{want[1]}x{want[2]}; give images of the training size, or set data.image_size")
    return inputs
