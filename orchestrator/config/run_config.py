"""A run directory's saved config (RUN_DIR/config.yaml) read as DATA: every command that reads it goes here.

Run directories are shared, and whoever can write one can write its config.yaml: so it is read through
analysis.run_files.read_run_file (a regular file, no symlinks, at most 1 MiB: a 40 MB or linked config.yaml is
one error line, fast), parsed by the strict YAML loader, and validated with ``user_code=False``: nothing it names
(a dataset or model function, metrics.extra, a probe maker) is imported or called. Only `landscape resume`
imports that code, after saying which (orchestrator/config/user_code.py).

    read_run_config_raw(run_dir) -> dict          the checked mapping (ConfigError naming the problem and the fix)
    load_run_config(run_dir) -> SweepConfig       built and checked as data only
    saved_config_or_none(run_dir) -> SweepConfig | None    the same, None when there is no usable one

The configs a sweep starts from, for `landscape run` / `landscape resume` and the Python API alike (every
problem a ConfigError whose message is the command line's ``error:`` line):

    config_to_run(config, overrides, address, log) -> SweepConfig      a built-in name, a YAML file or a mapping
    config_to_resume(run_dir, overrides, address, log, notice) -> SweepConfig   the config saved in RUN_DIR
    default_run_dir(cfg) -> str                                        run.storage, else runs/<name>-<time>
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime
from typing import Callable

from analysis.run_files import RunFileError, read_run_file
from orchestrator.rundir import storage
from orchestrator.config import ConfigError, apply_overrides, load_config, parse_config, parse_yaml
from orchestrator.cluster.ray_env import joins_cluster

# A run's config.yaml holds the settings its rows were computed with (the tables' config hash checks them).
RUN_CONFIG_FIX = ("restore the run's config.yaml from a copy, or rewrite it with the settings the run was started "
                  "with (resume checks them against the tables' config hash)")


def read_run_config_raw(run_dir: str) -> dict:
    """The mapping of ``run_dir``'s config.yaml, read with read_run_file's checks; ConfigError otherwise."""
    uri = storage.config_uri(run_dir)
    try:
        data = read_run_file(uri, "config", root=None if storage.is_uri(run_dir) else run_dir)
    except RunFileError as exc:  # a link, a device, a file too large: named, never followed or read
        raise ConfigError(f"{exc}; {RUN_CONFIG_FIX}") from None
    except (FileNotFoundError, OSError):
        raise ConfigError(f"{run_dir} is not a run directory (no readable config.yaml); start one with "
                          f"`landscape run`") from None
    try:
        raw = parse_yaml(data, uri)  # damaged bytes: ConfigError, not a traceback
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {RUN_CONFIG_FIX}") from None
    if raw is None:
        raise ConfigError(f"{uri} is empty; {RUN_CONFIG_FIX}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{uri}: a sweep config is a YAML mapping (key: value), got {type(raw).__name__}; "
                          f"{RUN_CONFIG_FIX}")
    return raw


def parse_run_config(raw: dict, run_dir: str):
    """``raw`` (a run's config, perhaps with --set overrides) built and checked as data only."""
    try:
        return parse_config(raw, check_data=False, user_code=False)
    except ConfigError as exc:
        raise ConfigError(f"{storage.config_uri(run_dir)}: {exc}") from None


def load_run_config(run_dir: str):
    """``run_dir``'s saved SweepConfig, checked as data only (nothing it names is imported or called)."""
    return parse_run_config(read_run_config_raw(run_dir), run_dir)


def saved_config_or_none(run_dir: str):
    """load_run_config, or None when ``run_dir`` has no config.yaml or none that can be read as a config."""
    try:
        return load_run_config(run_dir)
    except ConfigError:
        return None


# ---------------------------------------------------------------------------------------------------------
# The config a sweep runs with


def logger_names(log=()) -> tuple[str, ...]:
    """The names of repeatable, comma-separated ``--log`` options."""
    return tuple(n.strip() for item in log for n in item.split(",") if n.strip())


def checked_loggers(cfg, names):
    """``cfg`` with exactly the loggers ``names``, each known and its package installed (a ConfigError naming it
    and its pip install before Ray starts)."""
    from orchestrator.driver.loggers import check_loggers, loggers_check

    problem = loggers_check(names)
    if problem:
        raise ConfigError(f"--log: {problem}")
    check_loggers(names)
    return dataclasses.replace(cfg, logging=tuple(names))


def config_to_run(config, overrides=(), address=None, log=()):
    """The validated config of `landscape run CONFIG`: a built-in name, a YAML path, or (from Python) a mapping
    holding what such a file holds, with the ``--log`` loggers added to its own. A local run reads the data
    here; on a cluster the nodes that run the trials read it."""
    check_data = not joins_cluster(address)
    if isinstance(config, dict):
        cfg = parse_config(apply_overrides(config, overrides), check_data=check_data)
    else:
        cfg = load_config(os.fspath(config), overrides, check_data=check_data)
    return checked_loggers(cfg, tuple(dict.fromkeys([*cfg.logging, *logger_names(log)])))


def config_to_resume(run_dir: str, overrides=(), address=None, log=(), notice: Callable[[str], None] = print):
    """The config saved in ``run_dir`` (normalised) with the overrides (grid values and seeds may grow), to be
    called inside ``workloads.plugins.code_from(code_dirs)``, which also holds while the sweep runs.

    The saved config is read and checked as data first; ``notice`` gets, before anything it names is imported,
    the lines saying which modules will be imported and from where, and which of its loggers (those sending data
    off this machine) are left off unless named again in ``log``."""
    from orchestrator.driver.loggers import loggers_for_resume
    from orchestrator.config.user_code import resume_notice

    uri = storage.config_uri(run_dir)
    raw = apply_overrides(read_run_config_raw(run_dir), overrides)
    if raw.get("run") is None or isinstance(raw["run"], dict):  # else parse_config names the problem
        raw["run"] = {**(raw.get("run") or {}), "storage": run_dir}
    saved = parse_run_config(raw, run_dir)  # as data: nothing it names is imported yet
    names, dropped = loggers_for_resume(saved.logging, logger_names(log), run_dir)
    if dropped:
        notice(f"note: {uri} turns on {', '.join(dropped)}, which would send this sweep's data off this machine: "
               f"left off for this resume (add {' '.join('--log ' + n for n in dropped)} to use "
               f"{'it' if len(dropped) == 1 else 'them'})")
    for line in resume_notice(saved, uri):
        notice(line)
    try:
        cfg = parse_config(raw, check_data=not joins_cluster(address))
    except ConfigError as exc:
        raise ConfigError(f"{uri}: {exc}") from None
    return checked_loggers(cfg, names)


def default_run_dir(cfg) -> str:
    return cfg.run.storage or os.path.join("runs", f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}")
