"""Tune's own logger callbacks, turned on by ``logging: [tensorboard, wandb, mlflow]`` in a sweep config or
``--log NAME`` on `landscape run` / `resume`: every job's epoch reports (orchestrator/history.py) and final
result go to the tool a Ray Tune user already watches.

Off unless asked (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS stays set: the tables are the record). Each logger's
package is optional and imported only when asked for; a missing one is a ConfigError naming the package
and its ``pip install`` before Ray starts. Where each writes:

    tensorboard   event files in RUN_DIR/tune/<experiment>/<trial>/ (``tensorboard --logdir RUN_DIR/tune``)
    wandb         the W&B project named after the sweep (WANDB_API_KEY or WANDB_MODE=offline as usual)
    mlflow        the experiment named after the sweep, at MLFLOW_TRACKING_URI (default: RUN_DIR/mlruns for
                  a local run directory)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LoggerSpec:
    package: str  # what must be importable
    pip: str  # what to install
    module: str  # where Ray keeps the callback
    callback: str


LOGGERS = {
    "tensorboard": LoggerSpec("tensorboardX", "tensorboardX", "ray.tune.logger", "TBXLoggerCallback"),
    "wandb": LoggerSpec("wandb", "wandb", "ray.air.integrations.wandb", "WandbLoggerCallback"),
    "mlflow": LoggerSpec("mlflow", "mlflow", "ray.air.integrations.mlflow", "MLflowLoggerCallback"),
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
        if not installed(spec.package):
            raise ConfigError(f"logging: {name} needs the {spec.package} package, which is not installed: "
                              f"pip install {spec.pip}")


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
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if uri is None and "://" not in run_dir:
                uri = "file:" + os.path.join(os.path.abspath(run_dir), "mlruns")
            callbacks.append(cls(tracking_uri=uri, experiment_name=sweep_name))
        else:
            callbacks.append(cls())
    return callbacks
