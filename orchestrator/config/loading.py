"""Loading a sweep config: a built-in name or a YAML file, ``--set`` overrides, saved configs of older runs.

    load_config(source, overrides)  read_raw -> apply_overrides -> parse_config (build + validate)

YAML is read with a strict safe loader (no tags, no key twice, bounded size); nothing in a config is executed.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import os
from typing import Any

import yaml

from orchestrator.config.build import (
    ConfigError,
    build,
    json_default,
    key_type,
    legacy_values,
    one_line,
    section_keys,
    unknown_key_message,
)
from orchestrator.config.checks import validate
from orchestrator.config.schema import SweepConfig

# What tells a saved config from a user's: it holds every field of the schema as first released (to_yaml writes
# them all), which no hand-written config does. Frozen here: fields added since are not required, so saved
# configs of every age qualify.
SAVED_FORM_FIELDS = {
    "": ("name", "description", "workload", "load", "temperature", "seeds", "training", "metrics", "resources",
         "run"),
    "workload": ("dataset", "data_root", "model", "model_args", "width", "data_seed"),
    "load": ("name", "values"),
    "temperature": ("name", "values"),
    "training": ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "lr_scaling",
                 "base_batch_size", "checkpoint_every"),
    "metrics": ("hessian_samples", "hessian_backend", "hessian_eigen_tol", "hessian_eigen_max_iter",
                "hessian_trace_tol", "hessian_trace_max_probes", "hessian_batch_size", "hessian_seed", "cka_probes",
                "cka_probe_seed", "curve", "pairs"),
    "metrics.curve": ("epochs", "lr", "momentum", "weight_decay", "batch_size", "points", "seed"),
    "resources": ("cpu", "gpu", "gpu_by_load", "pair_cpu", "pair_gpu"),
    "run": ("storage", "max_concurrent", "max_failures", "object_store_mb"),
}


def _section(raw, dotted: str):
    node = raw
    for part in dotted.split(".") if dotted else ():
        node = node.get(part) if isinstance(node, dict) else None
    return node


def is_saved_form(raw) -> bool:
    """True when ``raw`` holds every field of SAVED_FORM_FIELDS: a config a run saved, not one a user wrote."""
    for dotted, names in SAVED_FORM_FIELDS.items():
        node = _section(raw, dotted)
        if not isinstance(node, dict) or any(name not in node for name in names):
            return False
    return True


def with_legacy_values(raw: dict) -> dict:
    """``raw`` with the legacy value of every setting that declares one (workloads.settings ``legacy``) filled in
    where a saved config lacks it: it was saved before the setting existed (a copy; user configs unchanged)."""
    if not is_saved_form(raw):
        return raw
    legacy = legacy_values(SweepConfig)
    missing = [path for path in legacy
               if isinstance(_section(raw, ".".join(path[:-1])), dict) and path[-1] not in _section(raw, ".".join(path[:-1]))]
    if not missing:
        return raw
    out = json.loads(json.dumps(raw, default=json_default))
    for path in missing:
        _section(out, ".".join(path[:-1]))[path[-1]] = legacy[path]
    return out



def builtin_dir():
    return importlib.resources.files("orchestrator.configs")


def builtin_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in builtin_dir().iterdir() if p.name.endswith(".yaml"))


def builtin_path(name: str) -> str:
    return str(builtin_dir() / f"{name}.yaml")


def read_raw(source: str) -> tuple[dict, str]:
    """(raw dict, where it came from) for a built-in name or a YAML path."""
    if source in builtin_names():
        path = builtin_path(source)
    elif os.path.exists(source):
        path = source
    else:
        hint = ""
        close = difflib.get_close_matches(source, builtin_names(), n=1)
        if close:
            hint = f"; did you mean the built-in {close[0]!r}?"
        raise ConfigError(
            f"config {source!r} is neither a built-in config nor an existing file{hint} "
            f"Built-ins: {', '.join(builtin_names())} (see `landscape configs`)."
        )
    try:
        # Bytes, not text: PyYAML then detects the encoding itself and reports bytes that are not text as a
        # YAMLError (a text-mode open raised UnicodeDecodeError from deep inside the reader).
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1_000_000} MB; a sweep config is a small YAML file")
    raw = parse_yaml(data, path)
    if raw is None:
        raise ConfigError(f"{path}: the file is empty (no YAML mapping); start from a built-in, e.g. "
                          f"`landscape validate demo` and orchestrator/configs/demo.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep config is a YAML mapping (key: value), got {type(raw).__name__}")
    return raw, path



MAX_CONFIG_BYTES = 1_000_000  # a real config is ~2 kB; this bounds reading junk such as a data file
MAX_CONFIG_NODES = 100_000  # values after YAML aliases are expanded (a "billion laughs" file expands to 10^9)


class DuplicateKey(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so a
    second `training:` block would quietly replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: PyYAML's own error follows
                break
            if duplicate:
                raise DuplicateKey(f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1}); "
                                   f"keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(data, where: str) -> Any:
    """YAML text or bytes -> plain data; ConfigError for anything that is not a small, valid YAML document."""
    try:
        raw = yaml.load(data, Loader=_StrictLoader)
    except DuplicateKey as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({one_line(exc)[:300]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a sweep config") from None
    _check_size(raw, where)
    return raw


def _check_size(raw, where: str) -> None:
    """Refuse data that expands to more than MAX_CONFIG_NODES values: YAML aliases can make a tiny file
    expand exponentially, and the config is copied and hashed as plain JSON (which expands them)."""
    count, stack = 0, [raw]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"{where}: expands to more than {MAX_CONFIG_NODES} values (YAML aliases?); "
                              f"a sweep config is small")
        if isinstance(node, dict):
            stack.extend(node.values())
            stack.extend(node.keys())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def load_config(source: str, overrides: list[str] | tuple = (), *, check_data: bool = True) -> SweepConfig:
    """Read a built-in name or YAML path, apply ``--set`` overrides, parse and validate."""
    raw, _ = read_raw(source)
    raw = apply_overrides(raw, overrides)
    return parse_config(raw, check_data=check_data)


def parse_config(raw: dict, *, check_data: bool = True, user_code: bool = True) -> SweepConfig:
    """A validated SweepConfig from a plain dict (ConfigError on the first problem).

    A saved config (see ``is_saved_form``) lacking a field of LEGACY_VALUES gets the value runs used before it.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a sweep config is a mapping, got {type(raw).__name__}")
    cfg = build(SweepConfig, with_legacy_values(raw), "")
    validate(cfg, check_data=check_data, user_code=user_code)  # user_code=False: see validate
    return cfg


def apply_overrides(raw: dict, overrides) -> dict:
    """Copy of ``raw`` with every ``dotted.key=value`` set; values are parsed as YAML (``[8, 16]``, ``0.1``, ``null``)."""
    out = json.loads(json.dumps(raw, default=json_default)) if raw else {}
    for item in overrides or ():
        item = str(item)
        if "=" not in item:
            raise ConfigError(f"--set {_clip(item)}: expected KEY=VALUE, e.g. --set training.epochs=20")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {_clip(item)}: the key must be a dotted path such as training.epochs")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"--set {_clip(item)}: the value is not valid YAML ({one_line(exc)[:300]})") from None
        _check_path(key)
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {_clip(item)}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _clip(text: str, limit: int = 80) -> str:
    """repr of a user's text for an error line, shortened (a pasted blob must not flood the terminal)."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _check_path(key: str) -> None:
    """Unknown dotted paths fail here with a did-you-mean (model_args and *_by_load take any sub-key)."""
    cls: Any = SweepConfig
    done = []
    for part in key.split("."):
        if cls is None:
            return  # inside a free-form dict
        known = list(section_keys(cls))
        if part not in known:
            where = ".".join(done) or "the top level"
            raise ConfigError(unknown_key_message(part, known, where, prefix=".".join(done)))
        done.append(part)
        cls = key_type(cls, part)



def describe_builtin(name: str) -> tuple[str, int, int]:
    """(one-line description, models, pairs) of a built-in config, without validation."""
    raw, _ = read_raw(name)
    cfg = build(SweepConfig, raw, "")
    return (cfg.description.strip().splitlines() or [""])[0], len(cfg.model_keys()), len(cfg.pair_keys())
