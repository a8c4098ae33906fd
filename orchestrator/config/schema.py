"""The sweep config's schema: one dataclass per YAML section, and the views derived from them (the grid's
keys, the resources of a job, the saved YAML form, the config hash).

Every field is declared once with workloads.settings.setting() (default, documentation, unit, check, legacy
value). The training, Hessian, CKA, curve and workload sections ARE the workloads' own declarations
(TrainConfig, HessianSettings, CkaSettings, CurveConfig, Workload): a job hands them to workloads/ as they
are. The Hessian and CKA settings keep their flat YAML keys (``metrics.hessian_samples``,
``metrics.cka_probes``) through ``flatten``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import yaml

from orchestrator.driver.loggers import loggers_check
from orchestrator.config.build import ConfigError, as_number, hashed, int_list, number_list, plain, show, string_list
from workloads.settings import (
    COMPILE_MODES,
    CURVE_LR_SCHEDULES,
    PRECISIONS,
    CkaSettings,
    CurveConfig,
    HessianSettings,
    TrainConfig,
    Workload,
    at_least,
    at_most,
    greater_than,
    one_of,
    optional,
    setting,
)

PAIR_MODES = ("auto", "all", "ring")
AUTO_GPU = "auto"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"


def name_check(value) -> str | None:
    """The name becomes part of the default run directory (runs/<name>-<time>) and of the run id."""
    if not value.strip():
        return "give the sweep a non-empty name"
    if not re.fullmatch(NAME_PATTERN, value):
        return (f"{value!r}: use letters, digits, '.', '_' and '-' (starting with a letter or digit, at most 100 "
                f"characters); it names the run directory")
    return None


def gpu_request(value, path: str):
    """``auto`` or a number of GPUs (the parse function of resources.gpu)."""
    if isinstance(value, str) and value.strip().lower() == AUTO_GPU:
        return AUTO_GPU
    number = None if isinstance(value, bool) else as_number(value)
    if number is None or not math.isfinite(number):
        hint = f"; did you mean {AUTO_GPU!r}?" if isinstance(value, str) and difflib.get_close_matches(
            value.lower(), [AUTO_GPU], n=1) else ""
        raise ConfigError(f"{path} must be auto (GPUs when the cluster has them) or a number of GPUs per trial, "
                          f"got {show(value)}{hint}")
    return float(number)


def gpu_check(value) -> str | None:
    """GPUs of one job: >= 0, and whole above one (fractions are for packing)."""
    if value == AUTO_GPU:
        return None
    if value < 0:
        return f"must be >= 0, got {value}"
    if value > 1 and not float(value).is_integer():
        return f"more than one GPU must be a whole number, got {value} (fractions are for packing: <= 1)"
    return None


def auto_share_check(value) -> str | None:
    if not value > 0:
        return f"a trial on a GPU cluster needs a GPU share > 0, got {value} (for CPU-only trials set resources.gpu: 0)"
    return gpu_check(value)


@dataclass(frozen=True)
class AxisConfig:
    name: str = setting("", doc="the knob of this axis (workloads/knobs.py)")
    values: tuple = setting((), doc="the grid values of the knob", parse=number_list)


@dataclass(frozen=True)
class MetricsConfig:
    hessian: HessianSettings = setting(factory=HessianSettings, flatten="hessian_", doc="metrics.hessian_*")
    cka: CkaSettings = setting(factory=CkaSettings, flatten="cka_", doc="metrics.cka_*")
    curve: CurveConfig = setting(factory=CurveConfig, doc="the Bezier curve of every pair")
    pairs: Any = setting("auto", doc="auto (all pairs for <= 3 seeds, else a ring) | all | ring | [[a, b], ...]",
                         hashed=False)
    # Metrics beyond the built-ins: the package's own (workloads/extra_metrics/) are always computed; these
    # name plug-ins ('module:NAME' of a MetricSpec, or an entry point of landscape.metrics; see
    # workloads/metric_discovery.py). A metric does not change the other values of a row, so it is not part of
    # the config hash.
    extra: tuple = setting((), doc="plug-in metrics to compute as well", parse=string_list, hashed=False, legacy=())


@dataclass(frozen=True)
class ResourcesConfig:
    cpu: float = setting(1.0, doc="CPUs per training trial", check=greater_than(0))
    # "auto": GPUs when the Ray cluster has any, else CPUs only (decided after Ray starts, on every run and
    # resume); a number is a requirement (a CPU-only cluster refuses it). Fractions pack trials: 0.25 = 4 per GPU.
    gpu: Any = setting(AUTO_GPU, doc="GPUs per training trial: auto or a number", parse=gpu_request,
                       check=gpu_check)
    auto_gpu_share: float = setting(0.25, doc="GPUs per trial when gpu is auto and the cluster has GPUs",
                                    check=auto_share_check)
    gpu_by_load: dict = setting(factory=dict, doc="load value -> GPUs, overrides gpu (e.g. by width)")
    cpu_by_load: dict = setting(factory=dict, doc="load value -> CPUs, overrides cpu")
    pair_cpu: float | None = setting(None, doc="CPUs per pair job (default: cpu)", check=optional(greater_than(0)))
    pair_gpu: float | None = setting(None, doc="GPUs per pair job (default: the trial's GPUs at that load)",
                                     check=optional(gpu_check))


@dataclass(frozen=True)
class RunSettings:
    storage: str | None = setting(None, doc="run directory: a path or a URI (s3://...); default runs/<name>-<time>")
    max_concurrent: int | None = setting(None, doc="jobs (trials + pairs) at once; default: what the cluster fits",
                                         check=optional(at_least(1, "or null (automatic)")))
    max_failures: int = setting(2, doc="retries of a job whose process dies or raises, before it is recorded as failed",
                                check=(at_least(0), at_most(100, "a job that failed 100 times will fail again")))
    object_store_mb: int = setting(256, doc="object store of a local Ray (models travel through storage, not Ray)",
                                   unit="MB", check=(at_least(80, "(Ray needs at least 80 MB of object store)"),
                                                     at_most(1_000_000, "1 TB; trained weights travel through the "
                                                                        "run directory, not Ray")))


SEARCH_MODES = ("grid", "adaptive")


def adaptive_block(value, path: str) -> dict:
    """The ``adaptive:`` settings of an adaptive search (the parse function of SweepConfig.adaptive): a mapping
    that analysis.adaptive.AdaptiveSettings accepts, kept as written (it is saved in config.yaml as data)."""
    from analysis.adaptive import AdaptiveSettings

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must be a mapping of adaptive settings, e.g. {{coarse_step: 2, budget_models: 40}}, "
                          f"got {show(value)}")
    try:
        AdaptiveSettings.from_mapping(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {' '.join(str(exc).split())}") from None
    return dict(value)


COHORT_AUTO, COHORT_OFF = "auto", "off"
MAX_COHORT = 10_000  # members of one cohort: far above a cell's seeds times a grid row


def cohort_request(value, path: str):
    """``auto``, ``off`` or a positive number of members (the parse function of execution.cohort). YAML reads
    a bare ``off`` as false and ``on`` as true: they mean off and auto."""
    if value is False:
        return COHORT_OFF
    if value is True:
        return COHORT_AUTO
    if isinstance(value, str) and value.strip().lower() in (COHORT_AUTO, COHORT_OFF):
        return value.strip().lower()
    number = as_number(value)
    if number is None or not math.isfinite(number) or number != int(number) or number < 1:
        close = difflib.get_close_matches(str(value).lower(), [COHORT_AUTO, COHORT_OFF], n=1)
        hint = f"; did you mean {close[0]!r}?" if isinstance(value, str) and close else ""
        raise ConfigError(f"{path} must be auto (every model that can share a cohort does), off (one model per "
                          f"trial) or a number >= 1 of members per cohort, got {show(value)}{hint}")
    if number > MAX_COHORT:
        raise ConfigError(f"{path}: {int(number):,} members per cohort is beyond any real sweep (at most "
                          f"{MAX_COHORT:,}); use auto")
    return int(number)


def off_or_string(value, path: str):
    """YAML reads a bare ``off`` as false: it means "off" (the parse function of execution.compile)."""
    if value is False:
        return "off"
    if not isinstance(value, str):
        raise ConfigError(f"{path} must be a string, got {show(value)}")
    return value.strip()


@dataclass(frozen=True)
class ExecutionConfig:
    """How the jobs run, not what they compute: left out of the config hash (hashed=False), so a run may be
    resumed under other execution settings. Cohorts (workloads/cohort_experiment.py) train models as one
    vectorised model; each member's weights equal its one-at-a-time run's up to float rounding (bit for bit for
    the demo's MLPs), and they do not change which rows exist. compile and precision apply to cohort training
    only (the metrics are always fp32); they change float rounding, not the definitions."""

    cohort: Any = setting(COHORT_AUTO, doc="auto (one trial per cohort of every missing model that can share one) "
                                           "| off (one model per trial) | N (at most N members per cohort)",
                          parse=cohort_request, hashed=False)
    compile: str = setting("off", doc="torch.compile of cohort training: off | default | reduce-overhead (CUDA "
                                      "graphs) | max-autotune", parse=off_or_string, check=one_of(*COMPILE_MODES),
                           hashed=False)
    precision: str = setting("fp32", doc="cohort training precision: fp32 | bf16 (autocast of the training forward "
                                         "pass; metrics always fp32)", check=one_of(*PRECISIONS), hashed=False)

    @property
    def cohort_cap(self) -> int | None:
        """Members per cohort at most: None = no cap (auto); 1 for off."""
        return None if self.cohort == COHORT_AUTO else 1 if self.cohort == COHORT_OFF else int(self.cohort)

    @property
    def cohorts(self) -> bool:
        """Whether model and pair jobs go through the cohort engine (anything but off)."""
        return self.cohort != COHORT_OFF


@dataclass(frozen=True)
class SweepConfig:
    name: str = setting("sweep", doc="names the run directory and the run id", check=name_check)
    description: str = setting("")
    workload: Workload = setting(factory=Workload)
    load: AxisConfig = setting(factory=AxisConfig)
    temperature: AxisConfig = setting(factory=AxisConfig)
    seeds: tuple = setting((0, 1, 2), doc="model seeds (initialisation and batch order)", parse=int_list)
    training: TrainConfig = setting(factory=TrainConfig)
    metrics: MetricsConfig = setting(factory=MetricsConfig)
    resources: ResourcesConfig = setting(factory=ResourcesConfig)
    execution: ExecutionConfig = setting(factory=ExecutionConfig, hashed=False)
    run: RunSettings = setting(factory=RunSettings)
    # Where Tune sends every job's epochs and results besides the tables (orchestrator/driver/loggers.py); how a run
    # is watched does not change a result, and science_dict leaves it out. Tune's JSON files are on by default
    # (what tune.ExperimentAnalysis reads; their cost: docs/benchmarks.md); runs saved before they were keep ().
    logging: tuple = setting(("json",), doc="Tune logger callbacks: tensorboard | wandb | mlflow | json | csv "
                                            "([] for none)", parse=string_list, check=loggers_check, legacy=())
    # Which of the grid's models are trained (orchestrator/driver/adaptive_sweep.py): all of them (grid), or waves chosen
    # by analysis.adaptive from the results so far. Which rows exist, not what a row's values are: not in the
    # config hash (rows of an adaptive and a grid run compare); a run keeps its mode (execute checks resume).
    search: str = setting("grid", doc="grid (every model of the grid) | adaptive (waves: coarse grid, boundary "
                                      "cells, top-ups; see the adaptive settings)", check=one_of(*SEARCH_MODES),
                          legacy="grid")
    adaptive: dict = setting(factory=dict, doc="settings of search: adaptive (analysis.adaptive.AdaptiveSettings: "
                                               "coarse_step, start_seeds, full_seeds, top_up, refine_iv, "
                                               "budget_models, ...)", parse=adaptive_block, legacy={})

    # -- derived views -------------------------------------------------------------------------------

    @property
    def adaptive_search(self) -> bool:
        return self.search == "adaptive"

    def adaptive_settings(self):
        """analysis.adaptive.AdaptiveSettings of the ``adaptive:`` block (validated when the config was built)."""
        from analysis.adaptive import AdaptiveSettings

        return AdaptiveSettings.from_mapping(self.adaptive)

    def model_keys(self) -> list[tuple[float, float, int]]:
        """(load value, temperature value, seed) of every model of the grid, in grid order."""
        return [(lv, tv, s) for lv in self.load.values for tv in self.temperature.values for s in self.seeds]

    def seed_pairs(self) -> list[tuple[int, int]]:
        """The seed pairs connected in every cell, each as (a, b) with a < b."""
        return seed_pairs(self.metrics.pairs, self.seeds)

    def pair_keys(self) -> list[tuple[float, float, int, int]]:
        return [(lv, tv, a, b) for lv in self.load.values for tv in self.temperature.values for a, b in self.seed_pairs()]

    @property
    def gpu_is_auto(self) -> bool:
        return self.resources.gpu == AUTO_GPU

    def with_gpus_available(self, cluster_has_gpus: bool) -> "SweepConfig":
        """This config with ``resources.gpu: auto`` decided for a cluster with or without GPUs.

        With GPUs: ``auto_gpu_share`` per trial (``gpu_by_load`` and ``pair_gpu`` apply as written). Without:
        every job runs on CPUs, so ``gpu_by_load`` and ``pair_gpu`` are dropped (they describe the GPU
        layout). A config with a number is returned unchanged: a number is a requirement.
        """
        r = self.resources
        if not self.gpu_is_auto:
            return self
        if cluster_has_gpus:
            return replace(self, resources=replace(r, gpu=float(r.auto_gpu_share)))
        return replace(self, resources=replace(r, gpu=0.0, gpu_by_load={}, pair_gpu=None))

    def trial_gpu(self, load_value: float) -> float:
        if self.gpu_is_auto:
            raise ValueError("resources.gpu is 'auto': decide it for a cluster first (with_gpus_available)")
        by_load = {float(k): float(v) for k, v in self.resources.gpu_by_load.items()}
        return by_load.get(float(load_value), float(self.resources.gpu))

    def trial_cpu(self, load_value: float) -> float:
        by_load = {float(k): float(v) for k, v in self.resources.cpu_by_load.items()}
        return by_load.get(float(load_value), float(self.resources.cpu))

    def trial_resources(self, load_value: float) -> dict:
        return {"cpu": self.trial_cpu(load_value), "gpu": self.trial_gpu(load_value)}

    def pair_resources(self, load_value: float) -> dict:
        r = self.resources
        cpu = self.trial_cpu(load_value) if r.pair_cpu is None else float(r.pair_cpu)
        gpu = self.trial_gpu(load_value) if r.pair_gpu is None else float(r.pair_gpu)
        return {"cpu": cpu, "gpu": gpu}

    def to_dict(self) -> dict:
        """Every field, in the layout the YAML has (what RUN_DIR/config.yaml holds)."""
        return plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    def science_dict(self) -> dict:
        """The settings that determine the value of a row (not which rows exist, nor where they run): the
        workload, the knob names, the training and metric settings, less what does not change a result
        (``hashed=False``: checkpoint_every, pairs, extra metrics) and less settings at their legacy value."""
        return {
            "workload": hashed(self.workload),
            "load_name": self.load.name,
            "temperature_name": self.temperature.name,
            "training": hashed(self.training),
            "metrics": hashed(self.metrics),
        }

    def config_hash(self) -> str:
        """sha256 prefix of :meth:`science_dict`.

        Grid values, seeds, pairs, resources and storage are left out on purpose: growing a sweep or
        running it elsewhere keeps the hash, so rows computed before and after stay comparable, while a
        change of any training or metric setting changes it (resume refuses to mix the two).
        """
        text = json.dumps(self.science_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_pairs(mode, seeds) -> list[tuple[int, int]]:
    """Seed pairs for a pairs setting: auto = all pairs for <= 3 seeds, else a ring (s0-s1, s1-s2, ..., sn-s0)."""
    seeds = list(seeds)
    if mode == "auto":
        mode = "all" if len(seeds) <= 3 else "ring"
    if mode == "all":
        return [(min(a, b), max(a, b)) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]
    if mode == "ring":
        if len(seeds) < 2:
            return []
        if len(seeds) == 2:
            return [tuple(sorted(seeds))]
        ring = [(seeds[i], seeds[(i + 1) % len(seeds)]) for i in range(len(seeds))]
        return [(min(a, b), max(a, b)) for a, b in ring]
    return sorted({(min(int(a), int(b)), max(int(a), int(b))) for a, b in mode})


def pairs_per_cell(mode, n_seeds: int) -> int:
    """len(seed_pairs(mode, seeds)) for n_seeds seeds, without building the list (a huge seed list would)."""
    if mode == "auto":
        mode = "all" if n_seeds <= 3 else "ring"
    if mode == "all":
        return n_seeds * (n_seeds - 1) // 2
    if mode == "ring":
        return 0 if n_seeds < 2 else 1 if n_seeds == 2 else n_seeds
    return len({(min(a, b), max(a, b)) for a, b in mode})


__all__ = ["AUTO_GPU", "CURVE_LR_SCHEDULES", "PAIR_MODES", "SEARCH_MODES", "AxisConfig", "ExecutionConfig", "MetricsConfig", "ResourcesConfig",
           "RunSettings", "SweepConfig", "gpu_request", "pairs_per_cell", "seed_pairs"]
