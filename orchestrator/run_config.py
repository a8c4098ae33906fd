"""The config a sweep starts from, for `landscape run` / `landscape resume` and the Python API alike.

    config_to_run(config, overrides, address, log) -> SweepConfig      a built-in name, a YAML file or a mapping
    config_to_resume(run_dir, overrides, address, log) -> SweepConfig  the config saved in RUN_DIR
    default_run_dir(cfg) -> str                                        run.storage, else runs/<name>-<time>

Every problem is a ConfigError whose message is the command line's ``error:`` line. A config read from a run
directory names the user's code but never runs it before the user asks for the sweep (see parse_config).
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime

from orchestrator.config import ConfigError, apply_overrides, load_config, parse_config, parse_yaml
from orchestrator.execute import joins_cluster


def with_loggers(cfg, log=()):
    """``cfg`` with the ``--log`` names added to its ``logging`` list, every logger's package checked (a
    ConfigError naming it and its pip install before Ray starts)."""
    from orchestrator.loggers import check_loggers, loggers_check

    names = tuple(dict.fromkeys([*cfg.logging, *(n.strip() for item in log for n in item.split(",") if n.strip())]))
    problem = loggers_check(names)
    if problem:
        raise ConfigError(f"--log: {problem}")
    check_loggers(names)
    return dataclasses.replace(cfg, logging=names)


def config_to_run(config, overrides=(), address=None, log=()):
    """The validated config of `landscape run CONFIG`: a built-in name, a YAML path, or (from Python) a mapping
    holding what such a file holds. A local run reads the data here; on a cluster the nodes that run the trials
    read it."""
    check_data = not joins_cluster(address)
    if isinstance(config, dict):
        cfg = parse_config(apply_overrides(config, overrides), check_data=check_data)
    else:
        cfg = load_config(os.fspath(config), overrides, check_data=check_data)
    return with_loggers(cfg, log)


def config_to_resume(run_dir: str, overrides=(), address=None, log=()):
    """The config saved in ``run_dir`` (normalised), with the overrides (grid values and seeds may grow)."""
    from orchestrator.status import RUN_CONFIG_FIX
    from orchestrator.storage import config_uri, read_bytes

    try:
        data = read_bytes(config_uri(run_dir))
    except (FileNotFoundError, OSError):
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); start one with `landscape run`") from None
    try:
        raw = parse_yaml(data, config_uri(run_dir))  # a damaged file: ConfigError, never a traceback
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {RUN_CONFIG_FIX}") from None
    if raw is None:
        raise ConfigError(f"{config_uri(run_dir)} is empty; {RUN_CONFIG_FIX}")
    try:
        if not isinstance(raw, dict):
            raise ConfigError(f"a sweep config is a YAML mapping (key: value), got {type(raw).__name__}")
        raw = apply_overrides(raw, overrides)
        if raw.get("run") is None or isinstance(raw["run"], dict):  # else parse_config names the problem
            raw["run"] = {**(raw.get("run") or {}), "storage": run_dir}
        cfg = parse_config(raw, check_data=not joins_cluster(address))
    except ConfigError as exc:
        raise ConfigError(f"{config_uri(run_dir)}: {exc}") from None
    return with_loggers(cfg, log)


def default_run_dir(cfg) -> str:
    return cfg.run.storage or os.path.join("runs", f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}")
