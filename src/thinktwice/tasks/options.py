"""Building a task from user options (CLI ``-o key=value``) with one-line errors, not TypeErrors."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar

from thinktwice.errors import ConfigError

__all__ = ["check_options", "check_prompt_options", "create_task"]

T = TypeVar("T")


def _accepts(type_str: str, value: Any) -> bool:
    parts = {p.strip() for p in type_str.split("|")}
    if value is None:
        return "None" in parts
    if isinstance(value, bool):
        return "bool" in parts
    if isinstance(value, int) and ("int" in parts or "float" in parts):
        return True
    if isinstance(value, float) and "float" in parts:
        return True
    if isinstance(value, (str, os.PathLike)) and any(p == "str" or "PathLike" in p for p in parts):
        return True
    return not parts & {"int", "float", "bool", "str", "None"} and not any("PathLike" in p for p in parts)


def check_options(cls: type, options: Mapping[str, Any]) -> None:
    """Raise ConfigError when ``options`` names a field ``cls`` lacks or has a value of the wrong type."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    label = getattr(cls, "name", cls.__name__)
    for key, value in options.items():
        if key not in fields:
            raise ConfigError(f"task {label!r} has no option {key!r}; options: {', '.join(sorted(fields))}")
        type_str = fields[key].type if isinstance(fields[key].type, str) else getattr(fields[key].type, "__name__", "")
        if not _accepts(type_str, value):
            raise ConfigError(f"task {label!r} option {key!r} must be {type_str}, got {value!r}")


def create_task(cls: type[T], **options: Any) -> T:
    """``cls(**options)`` after :func:`check_options`."""
    check_options(cls, options)
    return cls(**options)


def check_prompt_options(shots: int, max_tokens: int | None = None) -> None:
    """Validate the prompt options the data-file tasks share (few-shot count, generation length)."""
    if shots < 0:
        raise ConfigError(f"shots must be >= 0, got {shots}")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
