"""The generic builder: a plain dict (parsed YAML) -> the schema's dataclasses, with type checks.

Every mistake is one ConfigError naming the field path and the fix (did-you-mean for unknown keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Union

from orchestrator.config.schema import AUTO_GPU, AxisConfig, ResourcesConfig, SweepConfig


class ConfigError(ValueError):
    """A sweep config that cannot run; the message names the field and how to fix it."""



def _fail(path: str, message: str) -> None:
    raise ConfigError(f"{path}: {message}")



def _choice(value, choices) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"unknown value {value!r}{hint} Choose one of: {', '.join(choices)}"



def _unknown_key_message(key: str, known: list[str], where: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    full = f"{prefix}.{key}" if prefix else str(key)
    msg = f"unknown key {full!r} in {where}"
    if close:
        msg += f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?"
    return msg + f" Known keys there: {', '.join(known)}."


def _build(cls, raw, path: str):
    """Instantiate dataclass ``cls`` from ``raw`` with type checks; ``path`` names the section in errors."""
    where = path or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping (key: value), got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(_unknown_key_message(key, names, where, prefix=path))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        fpath = f"{path}.{f.name}" if path else f.name
        hint = hints[f.name]
        value = raw[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, value, fpath)
        elif cls is AxisConfig and f.name == "values":
            kwargs[f.name] = _number_list(value, fpath)
        elif cls is SweepConfig and f.name == "seeds":
            kwargs[f.name] = tuple(_int_list(value, fpath))
        elif cls is ResourcesConfig and f.name == "gpu":
            kwargs[f.name] = _gpu_request(value, fpath)
        else:
            kwargs[f.name] = _coerce(value, hint, fpath)
    return cls(**kwargs)


def _coerce(value, hint, path: str):
    """Check ``value`` against a simple type hint (int, float, str, bool, dict, Optional[...], Any)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} must be true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{path} must be an integer, got {_show(value)}")
        number = _as_number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{path} must be an integer, got {_show(value)}")
        return int(number)
    if hint is float:
        number = None if isinstance(value, bool) else _as_number(value)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{path} must be a number, got {_show(value)}")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {_show(value)}")
        return value
    if hint is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping (key: value), got {_show(value)}")
        return dict(value)
    raise AssertionError(f"unsupported config type {hint} at {path}")


def _as_number(value):
    """int/float, or a numeric string (PyYAML reads 1e-3 as a string: YAML 1.1 floats need a dot)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _number_list(value, path: str) -> tuple:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list of numbers, e.g. [8, 16, 32], got {_show(value)}")
    out = []
    for i, v in enumerate(value):
        number = _as_number(v)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{path}[{i}] must be a number, got {_show(v)}")
        out.append(int(number) if float(number).is_integer() else float(number))
    return tuple(out)


def _int_list(value, path: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list of integers, e.g. [0, 1, 2], got {_show(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{path}[{i}] must be an integer, got {_show(v)}")
        out.append(v)
    return out


def _show(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _one_line(exc) -> str:
    return " ".join(str(exc).split())



def _json_default(obj):
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(type(obj).__name__)



def _gpu_request(value, path: str):
    """``auto`` or a number of GPUs."""
    if isinstance(value, str) and value.strip().lower() == AUTO_GPU:
        return AUTO_GPU
    number = None if isinstance(value, bool) else _as_number(value)
    if number is None or not math.isfinite(number):
        hint = f"; did you mean {AUTO_GPU!r}?" if isinstance(value, str) and difflib.get_close_matches(
            value.lower(), [AUTO_GPU], n=1) else ""
        raise ConfigError(f"{path} must be auto (GPUs when the cluster has them) or a number of GPUs per trial, "
                          f"got {_show(value)}{hint}")
    return float(number)

