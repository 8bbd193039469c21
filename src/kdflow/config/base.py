"""The base of every config section: a strict pydantic model (an unknown key or a bad value is an error)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator

from .checks import plain_values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)
    _plain = model_validator(mode="before")(plain_values)  # tuples and numpy scalars from Python callers


__all__ = ["Strict"]
