"""Hugging Face hub data sets by name (``ag_news``, ``glue/sst2``, a repo id, or a local dataset folder).

Needs the network, or a local HF cache; the column names of popular sets are found
where the user kept the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..config import DataConfig
from ..errors import KdflowError, first_line
from .images import hub_image_column, hub_images, hub_labels

PAIR_COLUMNS = [("sentence1", "sentence2"), ("question1", "question2"), ("question", "sentence"),
                ("premise", "hypothesis"), ("question", "passage")]
TEXT_COLUMNS = ("text", "sentence", "content", "question")
LABEL_COLUMNS = ("label", "intent", "labels")
SPLIT_NAMES = (("train", ("train",)), ("validation", ("validation", "val", "dev")), ("test", ("test",)))


def hub_attempts(hub: str, config: Optional[str]) -> list[tuple[str, Optional[str]]]:
    """``glue/sst2`` is (name, config) for the canonical sets, ``SetFit/sst2`` a repo id: try both."""
    if config or Path(hub).is_dir() or hub.count("/") != 1:
        return [(hub, config)]
    name, sub = hub.split("/")
    return [(name, sub), (hub, None)]


def load_hub_dataset(datasets, hub: str, config: Optional[str]):
    if (Path(hub) / "dataset_dict.json").is_file():  # a folder written by DatasetDict.save_to_disk
        try:
            return datasets.load_from_disk(hub)
        except Exception as err:  # a damaged or incompatible folder: say which, and what datasets saw
            raise KdflowError(f"Could not load the saved data set folder '{hub}': {first_line(err)}") from None
    errors = []
    for name, sub in hub_attempts(hub, config):
        try:
            return datasets.load_dataset(name, sub)
        except Exception as err:  # try the other reading of the name, then report both failures
            errors.append(f"as {name!r}" + (f" config {sub!r}" if sub else "") + f": {first_line(err)}")
    raise KdflowError(f"Could not load hub data set '{hub}' ({'; '.join(errors)}); check the name (and "
                      "data.hub_config) and your network, or download it and use data.train with local files")


def _columns(cfg: DataConfig, cols: list[str], notes: list[str]) -> tuple[str, Optional[str], str]:
    """(text, pair, label) columns: the configured ones, or the usual names where the defaults were kept."""
    text_col, label_col, pair_col = cfg.text_column, cfg.label_column, cfg.text_pair_column
    given = cfg.columns_given()
    if text_col not in cols and "text_column" not in given:
        found = next(((a, b) for a, b in PAIR_COLUMNS if a in cols and b in cols), None)
        if found and "text_pair_column" not in given:
            text_col, pair_col = found
        else:
            text_col = next((c for c in TEXT_COLUMNS if c in cols), text_col)
    if label_col not in cols and "label_column" not in given:
        label_col = next((c for c in LABEL_COLUMNS if c in cols), label_col)
    if (text_col, label_col) != (cfg.text_column, cfg.label_column) or pair_col != cfg.text_pair_column:
        notes.append(f"hub data set columns used: text '{text_col}'" + (f", pair '{pair_col}'" if pair_col else "")
                     + f", label '{label_col}'")
    for col in [text_col, label_col] + ([pair_col] if pair_col else []):
        if col not in cols:
            raise KdflowError(f"Column '{col}' is not in hub data set '{cfg.hub}' (columns: {', '.join(cols)}); "
                              "set data.text_column / data.label_column")
    return text_col, pair_col, label_col


def read_hub(cfg: DataConfig, notes: list[str]) -> dict[str, tuple[dict, list]]:
    """A Hugging Face hub data set (needs the network, or a local HF cache)."""
    try:
        import datasets
    except ImportError:
        raise KdflowError("data.hub needs the 'datasets' package: pip install 'kdflow[hf]'") from None
    ds = load_hub_dataset(datasets, cfg.hub, cfg.hub_config)
    if cfg.glue:
        return read_glue_hub(ds, cfg, notes)
    first_split = next(iter(ds.values()))
    if hub_image_column(first_split, cfg):
        def read_part(part):
            return hub_images(part, cfg, notes)
    else:
        text_col, pair_col, label_col = _columns(cfg, first_split.column_names, notes)

        def read_part(part):
            return _hub_part(part, text_col, pair_col, label_col)
    out = {}
    for split, candidates in SPLIT_NAMES:
        key = next((c for c in candidates if c in ds), None)
        if key is None:
            continue
        inputs, labels = read_part(ds[key])
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


def _hub_part(part, text_col: str, pair_col: Optional[str], label_col: str) -> tuple[dict, list]:
    """One hub split as ``(inputs, labels)``; class indices become the data set's class names."""
    labels = hub_labels(part, label_col)
    inputs = {"text": list(part[text_col])}
    if pair_col:
        inputs["text_pair"] = list(part[pair_col])
    return inputs, labels


def read_glue_hub(ds, cfg: DataConfig, notes: list[str]) -> dict[str, tuple[dict, list]]:
    """A GLUE task from the hub: train, and its dev set(s) as test (GLUE's test labels are hidden);
    validation is held out from train, so the dev set is scored once, never used to select."""
    from ..config.glue import glue_task
    from .glue_files import normalise_labels
    task = glue_task(cfg.glue)
    text_col, pair_col, label_col = _columns(cfg, ds["train"].column_names, notes)
    wanted = {"train": "train", "test": task.hub_test,
              **{f"test_{name}": split for name, split in task.hub_extra_tests.items()}}
    missing = [split for split in wanted.values() if split not in ds]
    if missing:
        raise KdflowError(f"Hub data set '{cfg.hub}' has no split {', '.join(missing)} (it has {', '.join(ds)}); "
                          f"is it GLUE {task.name}? Check data.hub and data.glue")
    out = {ours: _hub_part(ds[theirs], text_col, pair_col, label_col) for ours, theirs in wanted.items()}
    notes.append(f"GLUE {task.name}: the hub's {task.hub_test} split is the test set (GLUE's dev set, scored once)"
                 + "".join(f", {theirs} the '{name}' test set" for name, theirs in task.hub_extra_tests.items()))
    return normalise_labels(out, task, f"hub data set '{cfg.hub}'")
