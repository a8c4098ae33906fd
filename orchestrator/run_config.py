"""A run directory's saved config (RUN_DIR/config.yaml) read as DATA: every command that reads it goes here.

Run directories are shared, and whoever can write one can write its config.yaml: so it is read through
analysis.run_files.read_run_file (a regular file, no symlinks, at most 1 MiB: a 40 MB or linked config.yaml is
one error line, fast), parsed by the strict YAML loader, and validated with ``user_code=False``: nothing it names
(a dataset or model function, metrics.extra, a probe maker) is imported or called. Only `landscape resume`
imports that code, after saying which (orchestrator/user_code.py).

    read_run_config_raw(run_dir) -> dict          the checked mapping (ConfigError naming the problem and the fix)
    load_run_config(run_dir) -> SweepConfig       built and checked as data only
    saved_config_or_none(run_dir) -> SweepConfig | None    the same, None when there is no usable one
"""

from __future__ import annotations

from analysis.run_files import RunFileError, read_run_file
from orchestrator import storage
from orchestrator.config import ConfigError, parse_config, parse_yaml

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
