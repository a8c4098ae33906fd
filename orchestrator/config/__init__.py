"""Sweep configs: one YAML file per sweep, parsed into frozen dataclasses and validated before Ray starts.

A config names a workload (dataset + model), a *load* axis (width, training-set fraction or label noise),
a *temperature* axis (batch size, learning rate or weight decay), the seeds, the training and metric
settings, the resources each job asks for, and where the run lives. Every mistake a user can make in it is
reported as ONE ConfigError naming the field and the fix, before any cluster is started.

    schema.py    the sections (the workloads' own settings declarations among them), the grid's keys, the
                 saved form and the config hash
    build.py     the generic builder: plain dict -> dataclasses, each field's type, parse and check
    loading.py   built-ins, YAML files, --set overrides, saved configs of older runs (legacy values)
    checks.py    what no single field says: axes and knobs, the workload, batch sizes, pairs, the grid's size

This package does not import ray. It imports torch only through the workloads registries (did-you-mean of
dataset and model names) and to check that the model builds with its options.
"""

from orchestrator.config.build import ConfigError, build
from orchestrator.config.checks import (
    MAX_MODELS,
    cell_knob_values,
    config_warnings,
    expand_data_root,
    missing_data_root,
    token_inputs,
    workload_facts,
)
from orchestrator.config.loading import (
    apply_overrides,
    builtin_names,
    describe_builtin,
    load_config,
    parse_config,
    parse_yaml,
    read_raw,
)
from orchestrator.config.schema import CURVE_LR_SCHEDULES, SweepConfig, seed_pairs

__all__ = [
    "CURVE_LR_SCHEDULES", "MAX_MODELS", "ConfigError", "SweepConfig", "apply_overrides", "build", "builtin_names",
    "cell_knob_values", "config_warnings", "describe_builtin", "expand_data_root", "load_config", "missing_data_root",
    "parse_config", "parse_yaml", "read_raw", "seed_pairs", "token_inputs", "workload_facts",
]
