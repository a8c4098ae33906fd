"""Tune's own logger callbacks, turned on by ``logging: [tensorboard, wandb, mlflow, json, csv]`` in a sweep config or
``--log NAME`` on `landscape run` / `resume`: every job's epoch reports (orchestrator/worker/history.py: the mean of
a trial's models and each model's own numbers under its label) and final result (each member's final metrics,
orchestrator/worker/trial_outputs.py) go to the tool a Ray Tune user already watches.

Only what the config asks for: its default is ``[json]`` (Tune's result.json / params.json per trial, so that
tune.ExperimentAnalysis reads a run; cost measured by benchmarks/tune_json.py, docs/benchmarks.md), ``[]``
turns that off; Tune's automatic loggers stay off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS: the tables are the
record). Each logger's package is optional and imported only when asked for; a missing one is a ConfigError naming
the package and its ``pip install`` before Ray starts. Where each writes:

    tensorboard   event files in RUN_DIR/tune/<experiment>/<trial>/ (``tensorboard --logdir RUN_DIR/tune``),
                  with each trial's members' hyperparameters as HParams at its end
    json          result.json and params.json per trial: tune.ExperimentAnalysis(RUN_DIR/tune/<experiment>)
    csv           progress.csv per trial
    wandb         the W&B project named after the sweep (WANDB_API_KEY or WANDB_MODE=offline as usual)
    mlflow        the experiment named after the sweep, at MLFLOW_TRACKING_URI (default: RUN_DIR/mlruns for
                  a local run directory)

Loggers that send data off this machine (wandb unless WANDB_MODE is offline or disabled; mlflow with a tracking
URI that is not a local file or SQLite database) run only when the command's own user asked for them: in the
config given to `landscape run`, or with ``--log NAME`` on the command line. `landscape resume` reads its config
from the run directory, which somebody else may have written: it drops such loggers of that config (saying so)
unless ``--log NAME`` asks for them again (``loggers_for_resume``); local ones (tensorboard, mlflow to files)
stay on.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LoggerSpec:
    package: str  # what must be importable ("": nothing beyond Ray)
    pip: str  # what to install
    module: str  # where Ray keeps the callback
    callback: str


LOGGERS = {
    # tensorboardX writes the event files; the extra also installs tensorboard, the viewer (`tensorboard --logdir`)
    "tensorboard": LoggerSpec("tensorboardX", "'landscape[tensorboard]'", "ray.tune.logger", "TBXLoggerCallback"),
    "wandb": LoggerSpec("wandb", "wandb", "ray.air.integrations.wandb", "WandbLoggerCallback"),
    "mlflow": LoggerSpec("mlflow", "mlflow", "ray.air.integrations.mlflow", "MLflowLoggerCallback"),
    # Tune's own files per trial (result.json / params.json, progress.csv), what tune.ExperimentAnalysis reads
    "json": LoggerSpec("", "", "ray.tune.logger", "JsonLoggerCallback"),
    "csv": LoggerSpec("", "", "ray.tune.logger", "CSVLoggerCallback"),
}


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def loggers_check(value) -> str | None:
    """The check of the config's ``logging`` list (a tuple of names)."""
    unknown = [name for name in value if name not in LOGGERS]
    if unknown:
        return f"unknown logger {unknown[0]!r}; choose from {', '.join(LOGGERS)}"
    return None


def check_loggers(names) -> None:
    """ConfigError for a name that is not a logger, or a logger whose package is not installed."""
    from orchestrator.config.build import ConfigError  # (the config's schema imports LOGGERS from here)

    for name in names:
        spec = LOGGERS.get(name)
        if spec is None:
            raise ConfigError(f"logging: unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        if spec.package and not installed(spec.package):
            raise ConfigError(f"logging: {name} needs the {spec.package} package, which is not installed: "
                              f"pip install {spec.pip}")


def mlflow_tracking_uri(run_dir: str) -> str | None:
    """Where MLflowLoggerCallback writes: MLFLOW_TRACKING_URI, else RUN_DIR/mlruns for a local run directory
    (None: mlflow's own default, ./mlruns)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None and "://" not in run_dir:
        uri = "file:" + os.path.join(os.path.abspath(run_dir), "mlruns")
    return uri


LOCAL_MLFLOW_SCHEMES = ("file:", "sqlite:")


def sends_off_machine(name: str, run_dir: str) -> bool:
    """Whether the logger ``name`` would send the sweep's data to another machine."""
    if name == "wandb":
        return os.environ.get("WANDB_MODE", "").lower() not in ("offline", "disabled", "dryrun")
    if name == "mlflow":
        uri = mlflow_tracking_uri(run_dir)
        if uri is None or uri.startswith(LOCAL_MLFLOW_SCHEMES):
            return False
        return ":" in uri or uri.startswith("databricks")  # a plain path is local; http(s)://, databricks are not
    return False


def loggers_for_resume(saved, asked, run_dir: str) -> tuple[tuple, tuple]:
    """(the loggers a resume uses, the ones of the run's config it leaves off): the config's ``saved`` list
    without those that send data off this machine unless this command's ``--log`` (``asked``) names them, then
    ``asked``."""
    asked = tuple(dict.fromkeys(asked))
    dropped = tuple(n for n in dict.fromkeys(saved) if n not in asked and sends_off_machine(n, run_dir))
    used = tuple(dict.fromkeys([*(n for n in saved if n not in dropped), *asked]))
    return used, dropped


def logger_callbacks(names, sweep_name: str, run_dir: str) -> list:
    """The Tune callbacks of the loggers ``names`` (checked with check_loggers first)."""
    check_loggers(names)
    callbacks = []
    for name in names:
        spec = LOGGERS[name]
        cls = getattr(importlib.import_module(spec.module), spec.callback)
        if name == "wandb":
            callbacks.append(cls(project=sweep_name))
        elif name == "mlflow":
            callbacks.append(cls(tracking_uri=mlflow_tracking_uri(run_dir), experiment_name=sweep_name))
        else:
            callbacks.append(cls())
    return callbacks
