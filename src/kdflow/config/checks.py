"""Reading YAML exactly: a key given twice is an error naming both lines, and ``1e-3`` is a number.

PyYAML follows YAML 1.1, where a number needs a dot and a signed exponent (``1.0e-3``) to be a
float, so ``lr: 1e-3`` would arrive as the string ``"1e-3"``; :class:`ConfigLoader` reads it (and
``1e999``, which is infinite and then refused) as YAML 1.2 and every other language does.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode

FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKey(yaml.YAMLError):
    """A mapping names ``key`` twice: first on line ``first``, again on line ``line`` (1-based)."""

    def __init__(self, key: Any, first: int, line: int):
        super().__init__(f"key {key!r} on line {line} repeats the one on line {first}")
        self.key, self.first, self.line = key, first, line


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses repeated keys and reads YAML 1.2 exponent floats."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == MERGE_TAG:
                continue  # merged keys (<<: *base) may be overridden on purpose
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: SafeLoader's own error names it
        return super().construct_mapping(node, deep=deep)


class ConfigDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes a string :class:`ConfigLoader` would read as a number (``"1e-3"``)."""


for _cls in (ConfigLoader, ConfigDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_1_2, list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """YAML text read by :class:`ConfigLoader` (raises ``yaml.YAMLError``, :class:`DuplicateKey` among them)."""
    return yaml.load(text, Loader=ConfigLoader)


def dump_yaml(value: Any) -> str:
    """``value`` as YAML that :func:`parse_yaml` reads back as it was (keys in their order)."""
    return yaml.dump(value, Dumper=ConfigDumper, sort_keys=False)


def plain_values(data: Any) -> Any:
    """A section's values as YAML would give them: tuples as lists, numpy scalars as Python numbers (the
    types stay exact: a numpy bool is still a bool, never an int)."""
    if not isinstance(data, dict):
        return data
    return {k: _plain(v) for k, v in data.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


__all__ = ["plain_values", "ConfigLoader", "ConfigDumper", "DuplicateKey", "parse_yaml", "dump_yaml", "FLOAT_1_2"]
