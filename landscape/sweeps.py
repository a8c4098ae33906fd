"""Running a sweep from Python: what `landscape run` and `landscape resume` do, returning the run as a Run.

    run(config, out=None, overrides=(), address=None, *, analysis=True, verbose=False) -> Run
    resume(run_dir, overrides=(), address=None, *, code_dirs=(), analysis=True, verbose=False) -> Run

Nothing is printed unless ``verbose``: what the command line would print is kept in ``Run.log``, and its
``warning:`` lines become LandscapeWarnings. Nothing exits the interpreter: a sweep that does not end with
every result raises (orchestrator/driver/sweep_errors.py: InputError before anything runs, SweepIncomplete or
SweepStopped after, SweepInterrupted on Ctrl-C), and whatever was finished is kept for ``resume``.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import yaml

from landscape.results import LandscapeWarning, Run
from orchestrator.config import ConfigError
from orchestrator.driver.console import captured, echo
from orchestrator.driver.execute import execute
from orchestrator.config.run_config import config_to_resume, config_to_run, default_run_dir
from orchestrator.rundir.storage import normalise_run_dir
from orchestrator.driver.sweep_errors import InputError
from workloads.plugins import code_from


def run(config, out=None, overrides=(), address=None, *, analysis: bool = True, verbose: bool = False) -> Run:
    """Run the sweep ``config``: a built-in name ("smoke", "demo", ...; `landscape configs` lists them), a YAML
    file, or a mapping holding what such a file holds. ``out``: the run directory (a folder or a URI; default
    run.storage of the config, else runs/<name>-<time>); ``overrides``: {"training.epochs": 2} or
    ["training.epochs=2"], like --set; ``address``: a Ray cluster's HOST:PORT (default RAY_ADDRESS, else a
    private local Ray); ``analysis``: analyse the run at its end (Run.cells, Run.claims)."""
    try:
        cfg = config_to_run(config, override_items(overrides), address)
    except ConfigError as exc:
        raise InputError(" ".join(str(exc).split())) from exc
    run_dir = normalise_run_dir(os.fspath(out) if out is not None else default_run_dir(cfg))
    return _execute(cfg, run_dir, address, analysis=analysis, verbose=verbose, resuming=False)


def resume(run_dir, overrides=(), address=None, *, code_dirs=(), analysis: bool = True,
           verbose: bool = False) -> Run:
    """Continue the sweep in ``run_dir``: only missing, failed or broken results are computed (``overrides``
    may grow grid values and seeds; training and metric settings must not change). ``code_dirs``: folders to
    import the run's own code from (`resume --code-dir`); never the working or the run directory otherwise.
    What code the saved config makes it import, and from where, is said before it is imported (in Run.log, or
    printed when ``verbose``), as the run directory's config is whatever its last writer put there."""
    run_dir = normalise_run_dir(os.fspath(run_dir))
    missing = [d for d in code_dirs if not os.path.isdir(d)]
    if missing:
        raise InputError(f"code_dirs: {missing[0]}: no such folder")
    with code_from(code_dirs):
        lines: list = []
        try:
            with contextlib.nullcontext() if verbose else captured(lines):
                cfg = config_to_resume(run_dir, override_items(overrides), address, notice=echo)
        except ConfigError as exc:
            raise InputError(" ".join(str(exc).split())) from exc
        return _execute(cfg, run_dir, address, analysis=analysis, verbose=verbose, resuming=True, lines=lines)


def override_items(overrides) -> list[str]:
    """``--set`` items of a mapping {"dotted.key": value} (values written as YAML) or of "key=value" strings."""
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, dict):
        return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}" for key, value in overrides.items()]
    return [str(item) for item in overrides or ()]


def _execute(cfg, run_dir: str, address, *, analysis: bool, verbose: bool, resuming: bool,
             lines: list | None = None) -> Run:
    lines = [] if lines is None else lines
    try:
        with contextlib.nullcontext() if verbose else captured(lines):
            execute(cfg, run_dir, address=address, analysis=analysis, resuming=resuming)
    finally:
        for stream, text in lines:
            if stream == "stderr" and text.startswith("warning: "):
                warnings.warn(LandscapeWarning(text[len("warning: "):]), stacklevel=3)
    return Run(run_dir, cfg, lines)
