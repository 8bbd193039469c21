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
from ..files import read_text
from .checks import DuplicateKey, parse_yaml
from .sections import Config
from .specs import MODEL_SPECS

# the names pydantic puts in an error's location for the member of a union that failed (int, list[int], ...)
UNION_MEMBERS = {"int", "str", "float", "bool", "none"}


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
        if isinstance(part, str) and cls is None and i > 0 and (part in UNION_MEMBERS or "[" in part):
            i += 1  # a union's member, not a key
            continue
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
        value = parse_yaml(text)
    except DuplicateKey:
        raise
    except (yaml.YAMLError, RecursionError):
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
        parts = [p.strip() for p in dotted.strip().split(".")]
        if not dotted.strip():
            raise KdflowError(f"--set {item!r} has no key before '='; write e.g. --set distill.alpha=0.7")
        if not all(parts):
            raise KdflowError(f"--set {item!r} has an empty part in its key; write section.key=value, e.g. "
                              "--set distill.alpha=0.7")
        if not text.strip():
            raise KdflowError(f"--set {item!r} has no value after '='; give one, or null to unset the key")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise KdflowError(f"--set {item!r}: '{part}' is a value, not a section")
            node = child
        try:
            node[parts[-1]] = _parse_scalar(text)
        except DuplicateKey as err:
            raise KdflowError(f"--set {item!r} names key {err.key!r} twice; keep one of them") from None
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
        raw = read_yaml(Path(source))
    return build(apply_overrides(raw, overrides or []))


def read_yaml(path: Path) -> dict:
    """A config file's mapping of sections; every way it can be broken is one sentence naming the file."""
    text = read_text(path, f"Config file '{path}'", "pass the path of a YAML file such as configs/clinc.yaml")
    try:
        raw = parse_yaml(text)
    except DuplicateKey as err:
        raise KdflowError(f"Config file '{path}' gives key {err.key!r} twice (lines {err.first} and {err.line}); "
                          "keep one of them") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise KdflowError(f"Config file '{path}' is not valid YAML{where}; fix the syntax there") from None
    except RecursionError:
        raise KdflowError(f"Config file '{path}' nests its YAML too deeply to read; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise KdflowError(f"Config file '{path}' must hold a mapping of sections (model, data, ...), "
                          f"not a {type(raw).__name__}")
    return raw


def same_setting(saved: Any, now: Any) -> bool:
    """Whether a setting a run saved (a resume signature) equals today's. Model specs are compared as
    their kind reads them: a run saved before the specs were split by kind listed every kind's keys."""
    if isinstance(saved, dict) and isinstance(now, dict) and saved.get("kind") in MODEL_SPECS:
        try:
            saved = MODEL_SPECS[saved["kind"]].model_validate(saved).model_dump(mode="json")
        except ValidationError:
            return False
    return saved == now
