"""Loading a config: YAML file, dict or :class:`Config`, then ``--set`` overrides, then validation;
every error becomes one sentence naming the key and the fix (:func:`explain`)."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, Discriminator, ValidationError

from ..errors import KdflowError
from .sections import MODEL_SPECS, Config


def _section_of(annotation: Any) -> Optional[type]:
    """The config class a field holds (through Optional/list), or None for a plain value."""
    args = getattr(annotation, "__args__", ())
    return next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _walk(model: type[BaseModel], loc: tuple) -> tuple[tuple, Optional[type]]:
    """Follow a pydantic error location through the sections: (the location without the model-kind
    tags that discriminated unions insert, the class its last step points into)."""
    cls: Any = model
    clean: list = []
    i = 0
    while i < len(loc):
        part = loc[i]
        clean.append(part)
        if not isinstance(part, str):  # a list index: the items are of the class the list holds
            i += 1
            continue
        field = cls.model_fields.get(part) if cls is not None else None
        cls = _section_of(field.annotation) if field is not None else None
        if field is not None and cls is None and i + 1 < len(loc) and loc[i + 1] in MODEL_SPECS \
                and any(isinstance(m, Discriminator) for m in field.metadata):
            cls = MODEL_SPECS[loc[i + 1]]  # model.teacher / model.student: the tag names the kind
            i += 1
        i += 1
    return tuple(clean), cls


def explain(err: ValidationError, model: type[BaseModel] = Config) -> str:
    """Turn a pydantic error into one sentence naming the key and the fix."""
    e = err.errors()[0]
    raw_loc = tuple(e["loc"])
    loc, _ = _walk(model, raw_loc)
    key = ".".join(str(p) for p in loc) or "config"
    if e["type"] == "extra_forbidden":
        _, section = _walk(model, raw_loc[:-1])
        valid = list(section.model_fields) if section is not None else []
        owners = [k for k, c in MODEL_SPECS.items() if c is not section and loc[-1] in c.model_fields]
        if section in MODEL_SPECS.values() and owners:
            return (f"Config key '{key}' belongs to kind {' or '.join(owners)}, and {'.'.join(map(str, loc[:-1]))} "
                    f"is kind {section.model_fields['kind'].default}: set its kind, or drop the key")
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?" if close \
            else f"valid keys here: {', '.join(valid)}"
        return f"Unknown config key '{key}': {hint}"
    if e["type"] == "missing":
        return f"Config key '{key}' is required but missing: add it to the YAML or pass --set {key}=..."
    if e["type"] == "union_tag_invalid":
        return (f"Invalid value for '{key}.kind' (got {e.get('ctx', {}).get('tag')!r}): choose one of "
                f"{', '.join(MODEL_SPECS)}.")
    if e["type"] == "union_tag_not_found":
        return (f"Invalid value for '{key}' (got {e.get('input')!r}): give a mapping of its keys, with kind one of "
                f"{', '.join(MODEL_SPECS)}.")
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "value_error" and not loc:
        return f"Invalid config: {msg}."
    value = e.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    return f"Invalid value for '{key}'{shown}: {msg}."


def _parse_scalar(text: str) -> Any:
    """``--set`` values are YAML scalars: 4 -> int, 1e-3 -> float, true -> bool, [1,2] -> list."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") and value[0] in "0123456789.-+" else value
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides or []:
        if "=" not in item:
            raise KdflowError(f"--set {item!r} must look like section.key=value, e.g. --set train.lr=3e-5")
        dotted, text = item.split("=", 1)
        parts = [p for p in dotted.strip().split(".") if p]
        if not parts:
            raise KdflowError(f"--set {item!r} has no key before '='; write e.g. --set distill.alpha=0.7")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise KdflowError(f"--set {item!r}: '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = _parse_scalar(text)
    return raw


def build(raw: dict) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise KdflowError(explain(err)) from None


def load_config(source: "str | Path | dict | Config", overrides: Optional[list[str]] = None) -> Config:
    """Config from a YAML path, a dict or a Config, with dotted overrides applied."""
    if isinstance(source, Config):
        if not overrides:
            return source
        raw = source.model_dump(mode="json", exclude_unset=True)
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)  # overrides must not leak into the caller's dict
    else:
        path = Path(source)
        if not path.is_file():
            raise KdflowError(f"Config file '{path}' does not exist; pass the path of a YAML file "
                              "such as configs/clinc.yaml")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise KdflowError(f"Config file '{path}' is not valid YAML{where}; fix the syntax there") from None
        if not isinstance(raw, dict):
            raise KdflowError(f"Config file '{path}' must hold a mapping of sections (model, data, ...), "
                              f"not a {type(raw).__name__}")
    return build(apply_overrides(raw, overrides or []))


def same_setting(saved: Any, now: Any) -> bool:
    """Whether a setting a run saved (a resume signature) equals today's. Model specs are compared as
    their kind reads them: a run saved before the specs were split by kind listed every kind's keys."""
    if isinstance(saved, dict) and isinstance(now, dict) and saved.get("kind") in MODEL_SPECS:
        try:
            saved = MODEL_SPECS[saved["kind"]].model_validate(saved).model_dump(mode="json")
        except ValidationError:
            return False
    return saved == now
