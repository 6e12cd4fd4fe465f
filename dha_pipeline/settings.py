"""Typed settings tables: dataclass fields with ranges and choices, built from raw TOML with checks.

A recipe (`recipe.py`) and each search space's own `[model]` settings (`spaces/*/settings.py`) are
dataclasses whose fields are declared with `setting(...)`. `build` turns a raw TOML table into one,
rejecting unknown keys (with the closest valid key), wrong types, values out of range and values
outside their choices, each as one error naming the key path. A choice list is written once: as a
`Literal[...]` type (whose arguments are the choices), or, where it is only known at run time (the
registered search spaces), in the field's `choices`. A field whose table class depends on the table's
content (`[model]`: the chosen space's settings) names a `resolve` function that picks the class.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Any, Literal

from dha_pipeline.errors import DhaError

Resolver = Callable[[dict[str, Any], str], type]
"""(raw table, its key path) -> the dataclass the table is built into."""


def setting(default: Any, *, low: float | None = None, high: float | None = None,
            choices: tuple[Any, ...] | None = None, help: str = "") -> Any:
    """A settings field with its allowed range or run-time choices recorded for validation."""
    meta = {"low": low, "high": high, "choices": choices, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def table(default_factory: Callable[[], Any], resolve: Resolver) -> Any:
    """A nested settings table whose dataclass `resolve` picks from the raw table."""
    return field(default_factory=default_factory, metadata={"resolve": resolve})


def choices_of(tp: Any) -> tuple[Any, ...]:
    """The values a `Literal[...]` type allows."""
    return typing.get_args(tp)


def type_name(tp: Any) -> str:
    """How an error names a type."""
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def coerce(path: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    """Check one leaf value against its declared type, range and choices; returns it (ints widened to
    floats where a float is declared, ints to strings where the choices are strings)."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise DhaError(f"recipe key '{path}' = {value!r} must be a list of {type_name(item_tp)}s",
                           f"write it like {path.split('.')[-1]} = [\"a\", \"b\"]")
        return [coerce(f"{path}[{i}]", item, item_tp, {"choices": meta.get("choices")}) for i, item in enumerate(value)]
    choices = meta.get("choices")
    if origin is Literal:
        choices, tp = typing.get_args(tp), str
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is str and isinstance(value, int) and not isinstance(value, bool) and choices:
        value = str(value)
    if type(value) is not tp:
        raise DhaError(f"recipe key '{path}' = {value!r} has the wrong type: expected {type_name(tp)}, "
                       f"got {type_name(type(value))}", "fix the value in the recipe or --set")
    if tp is float and not math.isfinite(value):
        raise DhaError(f"recipe key '{path}' = {value!r} must be a finite number")
    if choices is not None and value not in choices:
        raise DhaError(f"recipe key '{path}' = {value!r} is not allowed; allowed: "
                       + ", ".join(repr(c) for c in choices))
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        raise DhaError(f"recipe key '{path}' = {value!r} is out of range; allowed range: [{low}, {high}]")
    return value


def build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    """Build dataclass `cls` from `raw`, rejecting unknown keys with the closest valid one."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            valid = [f"{prefix}{name}" for name in fields]
            hint = f"did you mean '{prefix}{close[0]}'?" if close else "valid keys: " + ", ".join(valid)
            raise DhaError(f"unknown recipe key '{path}'", hint)
        tp, meta = hints[key], dict(fields[key].metadata)
        if "resolve" in meta or dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise DhaError(f"recipe key '{path}' must be a table ([{path}]), got {value!r}")
            table_cls = meta["resolve"](value, path) if "resolve" in meta else tp
            kwargs[key] = build(table_cls, value, f"{path}.")
        else:
            kwargs[key] = coerce(path, value, tp, meta)
    return cls(**kwargs)
