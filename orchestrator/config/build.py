"""The generic builder: a plain dict (parsed YAML) -> the schema's dataclasses, and back.

Every section of a sweep config is a dataclass whose fields are declared with workloads.settings.setting()
(the workloads' own TrainConfig, CurveConfig, HessianSettings, CkaSettings and Workload among them). The
builder coerces each value to its field's type hint (or its ``parse`` function), runs the field's checks,
and reports the first mistake as one ConfigError naming the field path and the fix (did-you-mean for
unknown keys). A field declared with ``flatten="hessian_"`` lays out its dataclass's fields in the section
itself (``metrics.hessian_samples`` is HessianSettings.samples); fields declared ``sweep=False`` are not
config keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Union

from workloads.settings import NO_LEGACY, info


class ConfigError(ValueError):
    """A sweep config that cannot run; the message names the field and how to fix it."""


def fail(path: str, message: str) -> None:
    raise ConfigError(f"{path}: {message}")


def unknown_key_message(key: str, known: list[str], where: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    full = f"{prefix}.{key}" if prefix else str(key)
    msg = f"unknown key {full!r} in {where}"
    if close:
        msg += f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?"
    return msg + f" Known keys there: {', '.join(known)}."


# ---------------------------------------------------------------------------------------------------------
# The layout of a section


def config_fields(cls) -> list[dataclasses.Field]:
    """The fields of a section that are config keys (or flattened into them)."""
    return [f for f in dataclasses.fields(cls) if info(f)["sweep"]]


def section_keys(cls) -> dict[str, tuple[dataclasses.Field, dataclasses.Field | None]]:
    """YAML key -> (field of ``cls``, field of its flattened dataclass or None), in declaration order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in config_fields(cls):
        prefix = info(f)["flatten"]
        if prefix:
            for sub in config_fields(hints[f.name]):
                out[prefix + sub.name] = (f, sub)
        else:
            out[f.name] = (f, None)
    return out


def key_type(cls, key: str):
    """The dataclass a dotted path part leads into (for --set paths), or None for a leaf or free-form map."""
    f, sub = section_keys(cls)[key]
    hint = typing.get_type_hints(typing.get_type_hints(cls)[f.name] if sub else cls)[sub.name if sub else f.name]
    return hint if dataclasses.is_dataclass(hint) else None


# ---------------------------------------------------------------------------------------------------------
# Building


def build(cls, raw, path: str = "", key_prefix: str = ""):
    """An instance of the section dataclass ``cls`` from ``raw``; ``path`` names the section in errors and
    ``key_prefix`` the prefix of a flattened section's keys."""
    where = path or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping (key: value), got {show(raw)}")
    hints = typing.get_type_hints(cls)
    layout = section_keys(cls)
    if not key_prefix:
        for key in raw:
            if key not in layout:
                raise ConfigError(unknown_key_message(key, list(layout), where, prefix=path))
    kwargs = {}
    for f in config_fields(cls):
        meta, hint = info(f), hints[f.name]
        if meta["flatten"]:
            prefix = meta["flatten"]
            sub = {key[len(prefix):]: value for key, value in raw.items() if key in layout and layout[key][0] is f}
            if sub:
                kwargs[f.name] = build(hint, sub, path, key_prefix=prefix)
            continue
        if f.name not in raw:
            continue
        fpath = ".".join(p for p in (path, key_prefix + f.name) if p)
        value = raw[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = build(hint, value, fpath)
            continue
        value = meta["parse"](value, fpath) if meta["parse"] else coerce(value, hint, fpath)
        for check in meta["check"]:
            problem = check(value)
            if problem:
                fail(fpath, problem)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a check across fields of a workloads dataclass
        raise ConfigError(f"{where}: {one_line(exc)}") from None


def coerce(value, hint, path: str):
    """Check ``value`` against a simple type hint (int, float, str, bool, dict, Optional[...], Any)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], path)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} must be true or false, got {show(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{path} must be an integer, got {show(value)}")
        number = as_number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{path} must be an integer, got {show(value)}")
        return int(number)
    if hint is float:
        number = None if isinstance(value, bool) else as_number(value)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{path} must be a number, got {show(value)}")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {show(value)}")
        return value
    if hint is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping (key: value), got {show(value)}")
        return dict(value)
    raise AssertionError(f"unsupported config type {hint} at {path}")


def as_number(value):
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


# Parse functions for YAML forms a type hint cannot say (a field's ``parse``)


def number_list(value, path: str) -> tuple:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list of numbers, e.g. [8, 16, 32], got {show(value)}")
    out = []
    for i, v in enumerate(value):
        number = as_number(v)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{path}[{i}] must be a number, got {show(v)}")
        out.append(int(number) if float(number).is_integer() else float(number))
    return tuple(out)


def int_list(value, path: str) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list of integers, e.g. [0, 1, 2], got {show(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{path}[{i}] must be an integer, got {show(v)}")
        out.append(v)
    return tuple(out)


def string_list(value, path: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{path} must be a list of names, e.g. [mymetrics:SPEC], got {show(value)}")
    return tuple(v.strip() for v in value)


def show(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def one_line(exc) -> str:
    return " ".join(str(exc).split())


# ---------------------------------------------------------------------------------------------------------
# Back to plain data


def plain(obj) -> Any:
    """A section (or any value) as plain YAML/JSON data, in the layout the builder reads."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in config_fields(type(obj)):
            value = plain(getattr(obj, f.name))
            if info(f)["flatten"]:
                out.update({info(f)["flatten"] + k: v for k, v in value.items()})
            else:
                out[f.name] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def hashed(obj) -> Any:
    """``plain(obj)`` without the fields that do not change what a result means (``hashed=False``) and without
    those at their legacy value (so the hash of a run made before a field existed stays the same)."""
    if not dataclasses.is_dataclass(obj):
        return plain(obj)
    out = {}
    for f in config_fields(type(obj)):
        meta, value = info(f), getattr(obj, f.name)
        if not meta["hashed"] or (meta["legacy"] is not NO_LEGACY and _equal(value, meta["legacy"])):
            continue
        data = hashed(value)
        if meta["flatten"]:
            out.update({meta["flatten"] + k: v for k, v in data.items()})
        else:
            out[f.name] = data
    return out


def _equal(value, legacy) -> bool:
    return plain(value) == plain(legacy)


def legacy_values(cls, path: tuple = ()) -> dict[tuple, Any]:
    """Raw key path -> legacy value of every field of the schema under ``cls`` that declares one."""
    hints = typing.get_type_hints(cls)
    out = {}
    for key, (f, sub) in section_keys(cls).items():
        target = sub or f
        meta = info(target)
        hint = typing.get_type_hints(hints[f.name])[sub.name] if sub else hints[f.name]
        if meta["legacy"] is not NO_LEGACY:
            out[(*path, key)] = plain(meta["legacy"])
        if dataclasses.is_dataclass(hint) and not sub:
            out.update(legacy_values(hint, (*path, key)))
    return out


def json_default(obj):
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(type(obj).__name__)
