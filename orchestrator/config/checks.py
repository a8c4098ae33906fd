"""Semantic validation of a built SweepConfig: ranges, the grid, the workload (dataset and model), caps.

``validate`` raises one ConfigError on the first problem, naming the field and the fix, before Ray starts.
It imports torch only through the workloads registries (did-you-mean of dataset and model names) and to
check that the model builds with its options.
"""

from __future__ import annotations

import math
import os
import re
from typing import Optional

from orchestrator.config.build import _as_number, _choice, _fail, _one_line, _show
from orchestrator.config.schema import (
    AUTO_GPU,
    CURVE_LR_SCHEDULES,
    HESSIAN_BACKENDS,
    LOAD_AXES,
    LR_SCALINGS,
    PAIR_MODES,
    SCHEDULES,
    TEMPERATURE_AXES,
    SweepConfig,
    pairs_per_cell,
)

# Sizes and shapes of the registered datasets (workloads/data.py's table), so that validation can check
# batch sizes and build the model without loading data (generating MNIST-1D alone costs ~5 s).
# A dataset registered later and missing here is loaded once to learn them.
KNOWN_DATASETS = {
    #            train size, input shape, classes, needs data_root
    "mnist1d": (4000, (40,), 10, False),
    "digits": (1437, (64,), 10, False),
    "cifar10": (50000, (3, 32, 32), 10, True),
    "cifar100": (50000, (3, 32, 32), 100, True),
    "svhn": (73257, (3, 32, 32), 10, True),
    "synthetic-cifar": (50000, (3, 32, 32), 10, False),  # NOT real data: CIFAR-shaped noise, benchmarks only
}

MAX_SEED = 2**31


def dataset_facts(name: str, root: Optional[str]) -> tuple[int, tuple, int]:
    """(training-set size, input shape, classes) of a dataset, without loading it when it is known."""
    if name in KNOWN_DATASETS:
        size, shape, classes, _ = KNOWN_DATASETS[name]
        return size, shape, classes
    from workloads.data import load_dataset

    ds = load_dataset(name, root)
    return ds.train_size, tuple(ds.input_shape), int(ds.num_classes)


def transformed_train_size(cfg: SweepConfig, load_value: float, full_size: int) -> int:
    """Training points left after the load transform (a lower bound within num_classes for fractions)."""
    if cfg.load.name == "train_fraction":
        return int(math.floor(float(load_value) * full_size))
    if cfg.workload.train_fraction is not None:
        return int(math.floor(float(cfg.workload.train_fraction) * full_size))
    return full_size


def expand_data_root(root: Optional[str]) -> Optional[str]:
    """``~`` expanded on the machine that reads the data (a worker's home on a cluster)."""
    if not root or "://" in root:
        return root
    return os.path.expanduser(root)


def missing_data_root(cfg: SweepConfig) -> Optional[str]:
    """Why the data folder of a file-backed dataset is not usable on THIS machine, or None when it is.

    On a cluster the trials read the data on the nodes that run them, so a folder missing on the driver
    is only a note there; a local run needs it here.
    """
    w = cfg.workload
    if not KNOWN_DATASETS.get(w.dataset, (0, (), 0, False))[3] or not w.data_root or "://" in w.data_root:
        return None
    root = expand_data_root(w.data_root)
    if not os.path.isdir(root):
        return f"folder {w.data_root!r} ({root}) does not exist on this machine"
    return None


def validate(cfg: SweepConfig, *, check_data: bool = True) -> None:
    """Raise ConfigError on the first problem; ``check_data`` also checks the data folder exists here."""
    if not isinstance(cfg.name, str) or not cfg.name.strip():
        _fail("name", "give the sweep a non-empty name")
    # The name becomes part of the default run directory (runs/<name>-<time>) and of the run id.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", cfg.name):
        _fail("name", f"{cfg.name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or digit, "
                      f"at most 100 characters); it names the run directory")
    # Axes
    if cfg.load.name not in LOAD_AXES:
        _fail("load.name", f"{_choice(cfg.load.name, LOAD_AXES)}")
    if cfg.temperature.name not in TEMPERATURE_AXES:
        _fail("temperature.name", f"{_choice(cfg.temperature.name, TEMPERATURE_AXES)}")
    for axis, section in ((cfg.load, "load"), (cfg.temperature, "temperature")):
        if not axis.values:
            _fail(f"{section}.values", f"the {section} axis is empty: list at least one {axis.name} value")
        if len(set(map(float, axis.values))) != len(axis.values):
            _fail(f"{section}.values", f"{list(axis.values)} repeats a value; list each value once")
    if not cfg.seeds:
        _fail("seeds", "no seeds: list at least one, e.g. seeds: [0, 1, 2]")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        _fail("seeds", f"{list(cfg.seeds)} repeats a seed")
    # Seeds feed numpy (< 2^32) and derived seeds (seed + offsets): keep them well inside 32 bits.
    for path, values in (("seeds", cfg.seeds), ("workload.data_seed", [cfg.workload.data_seed]),
                         ("metrics.hessian_seed", [cfg.metrics.hessian_seed]),
                         ("metrics.cka_probe_seed", [cfg.metrics.cka_probe_seed]),
                         ("metrics.curve.seed", [cfg.metrics.curve.seed])):
        if min(values) < 0 or max(values) >= MAX_SEED:
            _fail(path, f"seeds must lie in [0, {MAX_SEED}), got {min(values) if min(values) < 0 else max(values)}")
    for i, v in enumerate(cfg.load.values):
        p = f"load.values[{i}]"
        if cfg.load.name == "width" and (not float(v).is_integer() or not 1 <= v <= MAX_WIDTH):
            _fail(p, f"a width must be an integer in [1, {MAX_WIDTH}], got {v:g}")
        if cfg.load.name == "train_fraction" and not 0 < v <= 1:
            _fail(p, f"a training-set fraction must lie in (0, 1], got {v}")
        if cfg.load.name == "label_noise" and not 0 <= v < 1:
            _fail(p, f"a label-noise fraction must lie in [0, 1), got {v}")
    for i, v in enumerate(cfg.temperature.values):
        p = f"temperature.values[{i}]"
        if cfg.temperature.name == "batch_size" and (not float(v).is_integer() or v < 1):
            _fail(p, f"a batch size must be a positive integer, got {v}")
        if cfg.temperature.name == "learning_rate" and not v > 0:
            _fail(p, f"a learning rate must be > 0, got {v}")
        if cfg.temperature.name == "weight_decay" and v < 0:
            _fail(p, f"a weight decay must be >= 0, got {v}")

    # Workload: names through the registries (did-you-mean), then the model must build with its options.
    w = cfg.workload
    from workloads.data import DATASETS
    from workloads.models import MODELS

    if w.dataset not in DATASETS:
        try:
            DATASETS.get(w.dataset)
        except LookupError as exc:
            _fail("workload.dataset", str(exc))
    if w.model not in MODELS:
        try:
            MODELS.get(w.model)
        except LookupError as exc:
            _fail("workload.model", str(exc))
    if not 1 <= w.width <= MAX_WIDTH:
        _fail("workload.width", f"must be an integer in [1, {MAX_WIDTH}], got {w.width}")
    if w.train_fraction is not None:
        if cfg.load.name == "train_fraction":
            _fail("workload.train_fraction", "the load axis is train_fraction already: remove this fixed value")
        if not 0 < w.train_fraction <= 1:
            _fail("workload.train_fraction", f"a training-set fraction must lie in (0, 1], got {w.train_fraction}")
    if w.label_noise is not None:
        if cfg.load.name == "label_noise":
            _fail("workload.label_noise", "the load axis is label_noise already: remove this fixed value")
        if not 0 <= w.label_noise < 1:
            _fail("workload.label_noise", f"a label-noise fraction must lie in [0, 1), got {w.label_noise}")
    needs_root = KNOWN_DATASETS.get(w.dataset, (0, (), 0, False))[3]
    if needs_root:
        if not w.data_root:
            _fail(
                "workload.data_root",
                f"dataset {w.dataset!r} is read from local files (never downloaded): set workload.data_root "
                f"to the folder holding them, e.g. --set workload.data_root=/data",
            )
        problem = missing_data_root(cfg) if check_data else None
        if problem:
            _fail("workload.data_root", f"{problem}; point it at the dataset's folder")
    full_size, input_shape, num_classes = dataset_facts(w.dataset, w.data_root)
    widths = cfg.load.values if cfg.load.name == "width" else (w.width,)
    _check_model_builds(cfg, int(min(widths)), input_shape, num_classes, max_width=int(max(widths)))

    # Training
    t = cfg.training
    if t.epochs < 1:
        _fail("training.epochs", f"must be >= 1, got {t.epochs}")
    if t.schedule not in SCHEDULES:
        _fail("training.schedule", _choice(t.schedule, SCHEDULES))
    if t.lr_scaling not in LR_SCALINGS:
        _fail("training.lr_scaling", _choice(t.lr_scaling, LR_SCALINGS))
    _check_sgd("training", t)
    if t.batch_size < 1 or t.base_batch_size < 1:
        _fail("training.batch_size", "batch sizes must be >= 1")
    if t.checkpoint_every < 0:
        _fail("training.checkpoint_every", f"must be >= 0 (0 = never), got {t.checkpoint_every}")

    # The batch size is the experiment: it is never shrunk, so it must fit every transformed training set.
    smallest = min(transformed_train_size(cfg, lv, full_size) for lv in cfg.load.values)
    batches = cfg.temperature.values if cfg.temperature.name == "batch_size" else (t.batch_size,)
    field_name = "temperature.values" if cfg.temperature.name == "batch_size" else "training.batch_size"
    if max(batches) > smallest:
        where = f"the smallest training set of the sweep ({smallest} examples"
        where += f" at train_fraction {min(cfg.load.values)})" if cfg.load.name == "train_fraction" else ")"
        _fail(field_name, f"batch size {int(max(batches))} is larger than {where}; batches are never shrunk: "
                          f"use batch sizes <= {smallest}")

    # Metrics
    m = cfg.metrics
    if m.hessian_samples < 1:
        _fail("metrics.hessian_samples", f"must be >= 1, got {m.hessian_samples}")
    if m.hessian_backend not in HESSIAN_BACKENDS:
        _fail("metrics.hessian_backend", _choice(m.hessian_backend, HESSIAN_BACKENDS))
    for name in ("hessian_eigen_tol", "hessian_trace_tol"):
        if not getattr(m, name) > 0:
            _fail(f"metrics.{name}", f"must be > 0, got {getattr(m, name)}")
    for name in ("hessian_eigen_max_iter", "hessian_trace_max_probes"):
        if getattr(m, name) < 1:
            _fail(f"metrics.{name}", f"must be >= 1, got {getattr(m, name)}")
    if m.hessian_batch_size is not None and m.hessian_batch_size < 1:
        _fail("metrics.hessian_batch_size", f"must be >= 1 or null (all points at once), got {m.hessian_batch_size}")
    if m.cka_probes < 2:
        _fail("metrics.cka_probes", f"CKA needs at least 2 probe inputs, got {m.cka_probes}")
    c = m.curve
    if c.epochs < 0:
        _fail("metrics.curve.epochs", f"must be >= 0, got {c.epochs}")
    _check_sgd("metrics.curve", c)
    if c.points < 2:
        _fail("metrics.curve.points", f"the t-grid needs t=0 and t=1: at least 2 points, got {c.points}")
    if c.lr_schedule not in CURVE_LR_SCHEDULES:
        _fail("metrics.curve.lr_schedule", _choice(c.lr_schedule, CURVE_LR_SCHEDULES))
    if c.batch_size < 1:
        _fail("metrics.curve.batch_size", f"must be >= 1, got {c.batch_size}")
    if c.batch_size > smallest:
        _fail("metrics.curve.batch_size", f"{c.batch_size} is larger than the smallest training set ({smallest}); "
                                          f"use a curve batch size <= {smallest}")
    _validate_pairs(m.pairs, cfg.seeds)
    _check_sizes(cfg)

    # Resources
    r = cfg.resources
    if not r.cpu > 0:
        _fail("resources.cpu", f"each trial needs CPUs > 0, got {r.cpu}")
    if r.gpu != AUTO_GPU:
        _check_gpu("resources.gpu", r.gpu)
    if not r.auto_gpu_share > 0:
        _fail("resources.auto_gpu_share", f"a trial on a GPU cluster needs a GPU share > 0, got {r.auto_gpu_share} "
                                          f"(for CPU-only trials set resources.gpu: 0)")
    _check_gpu("resources.auto_gpu_share", r.auto_gpu_share)
    load_floats = {float(v) for v in cfg.load.values}
    for k, v in r.gpu_by_load.items():
        kv = _as_number(k)
        if kv is None or float(kv) not in load_floats:
            _fail(f"resources.gpu_by_load.{k}", f"{k!r} is not a load value of the sweep ({list(cfg.load.values)})")
        number = _as_number(v)
        if number is None or not math.isfinite(number):
            _fail(f"resources.gpu_by_load.{k}", f"must be a number of GPUs, got {_show(v)}")
        _check_gpu(f"resources.gpu_by_load.{k}", float(number))
    for k, v in r.cpu_by_load.items():
        kv = _as_number(k)
        if kv is None or float(kv) not in load_floats:
            _fail(f"resources.cpu_by_load.{k}", f"{k!r} is not a load value of the sweep ({list(cfg.load.values)})")
        number = _as_number(v)
        if number is None or not math.isfinite(number) or not number > 0:
            _fail(f"resources.cpu_by_load.{k}", f"must be a number of CPUs > 0, got {_show(v)}")
    if r.pair_cpu is not None and not r.pair_cpu > 0:
        _fail("resources.pair_cpu", f"must be > 0, got {r.pair_cpu}")
    if r.pair_gpu is not None:
        _check_gpu("resources.pair_gpu", r.pair_gpu)

    # Run
    if cfg.run.max_concurrent is not None and cfg.run.max_concurrent < 1:
        _fail("run.max_concurrent", f"must be >= 1 or null (automatic), got {cfg.run.max_concurrent}")
    if cfg.run.max_failures < 0:
        _fail("run.max_failures", f"must be >= 0, got {cfg.run.max_failures}")
    if cfg.run.object_store_mb < 80:
        _fail("run.object_store_mb", f"Ray needs at least 80 MB of object store, got {cfg.run.object_store_mb}")


def _check_sgd(section: str, settings) -> None:
    """The SGD settings shared by the training and the curve: lr, momentum, weight_decay."""
    if not settings.lr > 0:
        _fail(f"{section}.lr", f"must be > 0, got {settings.lr}")
    if not 0 <= settings.momentum < 1:
        _fail(f"{section}.momentum", f"must lie in [0, 1), got {settings.momentum}")
    if settings.weight_decay < 0:
        _fail(f"{section}.weight_decay", f"must be >= 0, got {settings.weight_decay}")


def _check_gpu(path: str, gpu: float) -> None:
    if gpu < 0:
        _fail(path, f"must be >= 0, got {gpu}")
    if gpu > 1 and not float(gpu).is_integer():
        _fail(path, f"more than one GPU must be a whole number, got {gpu} (fractions are for packing: <= 1)")


def _validate_pairs(pairs, seeds) -> None:
    if isinstance(pairs, str):
        if pairs not in PAIR_MODES:
            _fail("metrics.pairs", _choice(pairs, PAIR_MODES) + " or a list of seed pairs [[0, 1], ...]")
        return
    if not isinstance(pairs, (list, tuple)):
        _fail("metrics.pairs", f"must be auto, all, ring or a list of seed pairs [[0, 1], ...], got {_show(pairs)}")
    for i, p in enumerate(pairs):
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) for s in p)
        ):
            _fail(f"metrics.pairs[{i}]", f"a pair is two seeds, e.g. [0, 1], got {_show(p)}")
        if p[0] == p[1]:
            _fail(f"metrics.pairs[{i}]", f"a pair needs two different seeds, got {list(p)}")
        missing = [s for s in p if s not in seeds]
        if missing:
            _fail(f"metrics.pairs[{i}]", f"seed(s) {missing} are not in seeds {list(seeds)}")


# Caps on sizes, far above any real sweep, so that a typo (a 2-million-model grid, 1e9 CKA probes) is one
# clear error naming the field instead of a driver that grows to gigabytes or a job that never ends.
MAX_MODELS = 100_000  # 110x the largest paper grid (910 models); the driver holds ~1 kB per job (2 M: 1.6 GB)
MAX_PAIRS = 100_000  # as many pair jobs (the paper grids have one per model)
SIZE_CAPS = (
    # (field, cap, why)
    ("training.epochs", 100_000, "the paper trains 200 epochs"),
    ("metrics.curve.epochs", 100_000, "the paper trains a curve 200 epochs"),
    ("metrics.curve.points", 1_000, "the authors used 5; each point is a BatchNorm pass and a full evaluation"),
    ("metrics.cka_probes", 100_000, "the authors used 768; the probes and both models' outputs are held in memory"),
    ("metrics.hessian_eigen_max_iter", 1_000, "the authors used 100; Lanczos keeps one vector of the "
                                              "model's size per iteration"),
    ("metrics.hessian_trace_max_probes", 100_000, "the authors used 100"),
    ("run.max_failures", 100, "a job that failed 100 times will fail again"),
    ("run.object_store_mb", 1_000_000, "1 TB; trained weights travel through the run directory, not Ray"),
)



def _check_sizes(cfg: SweepConfig) -> None:
    cells = len(cfg.load.values) * len(cfg.temperature.values)
    models = cells * len(cfg.seeds)
    if models > MAX_MODELS:
        _fail("seeds" if len(cfg.seeds) > cells else "load.values",
              f"the grid has {models:,} models ({len(cfg.load.values)} loads x {len(cfg.temperature.values)} "
              f"temperatures x {len(cfg.seeds)} seeds), more than the {MAX_MODELS:,} this tool runs in one sweep; "
              f"split it into several run directories")
    pairs = cells * pairs_per_cell(cfg.metrics.pairs, len(cfg.seeds))
    if pairs > MAX_PAIRS:
        _fail("metrics.pairs", f"the grid has {pairs:,} seed pairs, more than {MAX_PAIRS:,}; use pairs: ring "
                               f"(one pair per seed) or fewer seeds")
    for path, cap, why in SIZE_CAPS:
        value = cfg
        for part in path.split("."):
            value = getattr(value, part)
        if value > cap:
            _fail(path, f"{value:,} is beyond any real sweep (at most {cap:,}: {why})")


def config_warnings(cfg: SweepConfig) -> list[str]:
    """What a valid config will not give, for `validate` and `run` to say before any work."""
    if cfg.pair_keys():
        return []
    why = "one seed" if len(cfg.seeds) < 2 else "metrics.pairs connects none of them"
    return [f"no seed pairs ({why}): the models are trained and measured, but there is no mode connectivity, so no "
            f"cell gets a phase; give at least two seeds for phases"]


MAX_WIDTH = 1_000_000  # beyond any trainable width (and torch's size arithmetic overflows far beyond it)
MAX_MODEL_OPTION = 10_000  # no numeric model option (depth, ...) of a trainable network comes near this
MAX_PARAMETERS = 10**10  # 40 GB of float32 weights (x3 with gradients and momentum): beyond one accelerator


def _check_model_builds(cfg: SweepConfig, width: int, input_shape: tuple, num_classes: int,
                        max_width: Optional[int] = None) -> None:
    """The model builds with its options at ``width`` and, when given, is not absurdly large at ``max_width``.

    Built on the meta device (shapes only). Huge options are refused before building: building a depth of
    10^9 layers takes forever even without weights, and a huge width overflows torch's size arithmetic.
    """
    import torch

    from workloads.models import build_model, count_parameters

    for name, value in cfg.workload.model_args.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MODEL_OPTION:
            _fail(f"workload.model_args.{name}", f"{value:g} is beyond any network this tool trains "
                                                 f"(at most {MAX_MODEL_OPTION})")
    for w in sorted({width, max_width or width}):
        try:
            with torch.device("meta"):  # checks options and shapes without allocating (or initialising) weights
                model = build_model(cfg.workload.model, width=w, num_classes=num_classes, input_shape=input_shape,
                                    **cfg.workload.model_args)
                params = count_parameters(model)
        except (TypeError, ValueError) as exc:
            _fail("workload.model_args", _one_line(exc))
        except (RuntimeError, OverflowError, MemoryError) as exc:  # torch's size arithmetic overflowed
            _fail("load.values" if cfg.load.name == "width" else "workload.width",
                  f"model {cfg.workload.model!r} cannot be built at width {w} ({_one_line(exc)[:200]})")
        if params > MAX_PARAMETERS:
            _fail("load.values" if cfg.load.name == "width" else "workload.width",
                  f"model {cfg.workload.model!r} at width {w} has {params:.3g} parameters ({params * 4 / 1e9:.0f} "
                  f"GB of weights), more than any accelerator holds; lower the width")

