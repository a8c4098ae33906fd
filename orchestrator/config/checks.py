"""Semantic validation of a built SweepConfig: what no single field's check can say (each field's own check
ran when it was built, orchestrator/config/build.py): the axes and their knobs, the seeds, the workload
(dataset and model), batch sizes against the training sets, the seed pairs, per-load resources, the grid's size.

``validate`` raises one ConfigError on the first problem, naming the field and the fix, before Ray starts.
It imports torch only through the workloads registries (did-you-mean of dataset and model names) and to
check that the model builds with its options.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from orchestrator.config.build import as_number, fail, one_line, show
from orchestrator.config.schema import PAIR_MODES, SweepConfig, gpu_check, pairs_per_cell
from workloads import knobs
from workloads.dataset_facts import DATASET_FACTS, DatasetFacts
from workloads.settings import MAX_SEED, choice_problem


def dataset_facts(name: str, root: Optional[str], seed: int = 0, args: Optional[dict] = None) -> tuple[int, tuple, int]:
    """(training-set size, input shape, classes) of a dataset, without loading it when it is known.

    A user's dataset function (``module:function`` or an entry point) is called once per process to learn them
    (workloads.data.load_dataset caches it), with the workload's root, data_seed and dataset_args."""
    if name in DATASET_FACTS:
        facts = DATASET_FACTS[name]
        return facts.train_size, facts.input_shape, facts.num_classes
    from workloads.data import load_dataset

    ds = load_dataset(name, root, seed=seed, args=args)
    return ds.train_size, tuple(ds.input_shape), int(ds.num_classes)


def workload_facts(workload) -> tuple[int, tuple, int]:
    """dataset_facts of a config's workload section."""
    return dataset_facts(workload.dataset, workload.data_root, workload.data_seed, workload.dataset_args)


def cell_knob_values(cfg: SweepConfig, load_value: float, temperature_value: float | None = None) -> dict:
    """{knob: value} of one cell: the two axes' values and the workload's fixed values of the other knobs."""
    temperature = cfg.temperature.name if temperature_value is not None else None
    return knobs.cell_values(cfg.load.name, load_value, temperature, temperature_value, cfg.workload)


def transformed_train_size(cfg: SweepConfig, load_value: float, full_size: int) -> int:
    """Training points left after the data knobs of a cell (a lower bound within num_classes for fractions)."""
    return knobs.train_size(knobs.applied(cell_knob_values(cfg, load_value)), full_size)


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
    facts = DATASET_FACTS.get(w.dataset, DatasetFacts(0, 0, (), 0))
    if not facts.needs_root or not w.data_root or "://" in w.data_root:
        return None
    root = expand_data_root(w.data_root)
    if not os.path.isdir(root):
        return f"folder {w.data_root!r} ({root}) does not exist on this machine"
    from workloads.datasets import missing_files

    return missing_files(w.dataset, root)  # the folder is there: are the dataset's files? (not read here)


def validate(cfg: SweepConfig, *, check_data: bool = True, user_code: bool = True) -> None:
    """Raise ConfigError on the first problem; ``check_data`` also checks the data folder exists here.

    ``user_code=False``: a config read from a run directory (status, resume before its notice, the --out
    checks) is checked as data only: nothing it names is imported, called or loaded (not the user's code, not
    metrics.extra, not even a built-in dataset: nothing read from a run directory is executed, and a read-only
    command needs none of it). The workload, the batch sizes against its data and the added metrics are then
    not checked (they were when the run started, and `resume` checks them again before it runs anything)."""
    _check_axes(cfg)
    _check_seeds(cfg)
    _check_search(cfg)
    if not user_code:
        _validate_pairs(cfg.metrics.pairs, cfg.seeds)
        _check_sizes(cfg)
        _check_per_load_resources(cfg)
        return
    full_size = _check_workload(cfg, check_data)

    # The batch size is the experiment: it is never shrunk, so it must fit every transformed training set.
    smallest = min(transformed_train_size(cfg, lv, full_size) for lv in cfg.load.values)
    batches = cfg.temperature.values if cfg.temperature.name == "batch_size" else (cfg.training.batch_size,)
    field_name = "temperature.values" if cfg.temperature.name == "batch_size" else "training.batch_size"
    if max(batches) > smallest:
        where = f"the smallest training set of the sweep ({smallest} examples"
        where += f" at train_fraction {min(cfg.load.values)})" if cfg.load.name == "train_fraction" else ")"
        fail(field_name, f"batch size {int(max(batches))} is larger than {where}; batches are never shrunk: "
                         f"use batch sizes <= {smallest}")
    c = cfg.metrics.curve
    if c.batch_size > smallest:
        fail("metrics.curve.batch_size", f"{c.batch_size} is larger than the smallest training set ({smallest}); "
                                         f"use a curve batch size <= {smallest}")
    _validate_pairs(cfg.metrics.pairs, cfg.seeds)
    _check_added_metrics(cfg)
    _check_sizes(cfg)
    _check_per_load_resources(cfg)


def _check_seeds(cfg: SweepConfig) -> None:
    if not cfg.seeds:
        fail("seeds", "no seeds: list at least one, e.g. seeds: [0, 1, 2]")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        fail("seeds", f"{list(cfg.seeds)} repeats a seed")
    if min(cfg.seeds) < 0 or max(cfg.seeds) >= MAX_SEED:
        fail("seeds", f"seeds must lie in [0, {MAX_SEED}), got {min(cfg.seeds) if min(cfg.seeds) < 0 else max(cfg.seeds)}")


def _check_search(cfg: SweepConfig) -> None:
    """An adaptive search starts every cell with start_seeds of the config's seeds and tops up to full_seeds."""
    if cfg.adaptive and not cfg.adaptive_search:
        fail("adaptive", f"settings are given but search is {cfg.search!r}; set search: adaptive, or remove the "
                         f"adaptive block")
    if not cfg.adaptive_search:
        return
    settings = cfg.adaptive_settings()
    for name in ("start_seeds", "full_seeds"):
        wanted = getattr(settings, name)
        if wanted is not None and wanted > len(cfg.seeds):
            fail(f"adaptive.{name}", f"{wanted} seeds, but the config lists {len(cfg.seeds)} ({list(cfg.seeds)}); "
                                     f"list more seeds or lower adaptive.{name}")
    start = set(cfg.seeds[: settings.start_seeds])
    if not any(a in start and b in start for a, b in cfg.seed_pairs()):
        fail("metrics.pairs", f"an adaptive search labels a cell by its phase, which needs a seed pair among the "
                              f"{settings.start_seeds} seeds it starts with ({sorted(start)}); connect two of them "
                              f"(e.g. pairs: auto) or raise adaptive.start_seeds")


def _check_added_metrics(cfg: SweepConfig) -> None:
    """Every metric of metrics.extra is found (a MetricSpec) and its compute function imports, before Ray starts."""
    from workloads.metric_discovery import run_metrics
    from workloads.plugins import PluginError, load_reference

    try:
        for spec in run_metrics(cfg.metrics.extra).added:
            load_reference(spec.compute, f"metric {spec.name!r}: compute")
    except PluginError as exc:
        fail("metrics.extra", str(exc))


def _check_axes(cfg: SweepConfig) -> None:
    """Each axis names a knob of its kind (workloads/knobs.py) and lists distinct values that knob accepts."""
    for axis, section in ((cfg.load, "load"), (cfg.temperature, "temperature")):
        spec = knobs.KNOBS.get(axis.name)
        if spec is None or spec.axis != section:
            fail(f"{section}.name", choice_problem(axis.name, knobs.names(section)))
    for axis, section in ((cfg.load, "load"), (cfg.temperature, "temperature")):
        if not axis.values:
            fail(f"{section}.values", f"the {section} axis is empty: list at least one {axis.name} value")
        if len(set(map(float, axis.values))) != len(axis.values):
            fail(f"{section}.values", f"{list(axis.values)} repeats a value; list each value once")
        spec = knobs.KNOBS[axis.name]
        for i, value in enumerate(axis.values):
            problem = spec.check(value)
            if problem:
                fail(f"{section}.values[{i}]", problem)


def _check_workload(cfg: SweepConfig, check_data: bool) -> int:
    """Names through the registries (did-you-mean), fixed knob values, the data folder, and the model must
    build with its options; returns the full training-set size."""
    w = cfg.workload
    from workloads.data import DATASETS
    from workloads.models import MODELS
    from workloads.plugins import PluginError, check_call, unknown_name_hint, user_callable

    user_fns = {}
    for kind, registry in (("dataset", DATASETS), ("model", MODELS)):
        try:  # a built-in, the user's module:function or an installed entry point (typo: did-you-mean)
            user_fns[kind] = user_callable(kind, getattr(w, kind), registry)
        except PluginError as exc:
            fail(f"workload.{kind}", one_line(exc))
        except LookupError as exc:
            fail(f"workload.{kind}", one_line(exc) + unknown_name_hint(kind))
    if user_fns["dataset"] is None and w.dataset_args:
        fail("workload.dataset_args", f"the built-in dataset {w.dataset!r} takes no options; dataset_args are for a "
                                      f"plug-in dataset function ('module:function')")
    for kind, required in (("dataset", ("root", "seed")), ("model", ("width", "num_classes", "input_shape"))):
        if user_fns[kind] is not None:
            try:
                check_call(kind, getattr(w, kind), user_fns[kind], required, getattr(w, f"{kind}_args"))
            except PluginError as exc:
                path = f"workload.{kind}_args" if "takes no option" in str(exc) else f"workload.{kind}"
                fail(path, one_line(exc).removeprefix(f"{path}: "))
    for name in knobs.fixed_knobs(w):
        if name == cfg.load.name and getattr(w, name) is not None and knobs.KNOBS[name].optional_fixed:
            fail(f"workload.{name}", f"the load axis is {name} already: remove this fixed value")
    facts = DATASET_FACTS.get(w.dataset)
    if facts is not None and facts.needs_root:
        if not w.data_root:
            fail("workload.data_root",
                 f"dataset {w.dataset!r} is read from local files (never downloaded): set workload.data_root "
                 f"to the folder holding them, e.g. --set workload.data_root=/data")
        problem = missing_data_root(cfg) if check_data else None
        if problem:
            fail("workload.data_root", f"{problem}; point it at the dataset's folder")
    try:
        full_size, input_shape, num_classes = workload_facts(w)
    except (PluginError, TypeError, ValueError) as exc:  # the user's dataset function raised or returned bad data
        fail("workload.dataset", one_line(exc))
    _check_probe_maker(cfg, token_inputs=user_fns["dataset"] is not None and token_inputs(w))
    _check_probe_pool_size(cfg, full_size)
    widths = cfg.load.values if cfg.load.name == "width" else (w.width,)
    _check_model_builds(cfg, int(min(widths)), input_shape, num_classes, max_width=int(max(widths)))
    return full_size


def token_inputs(workload) -> bool:
    """Whether the workload's inputs are integer tokens (built-ins: never; a plug-in: its cached load, see
    dataset_facts)."""
    if workload.dataset in DATASET_FACTS:
        return False
    from workloads.data import load_dataset

    return load_dataset(workload.dataset, workload.data_root, seed=workload.data_seed,
                        args=workload.dataset_args).tokens


def _check_probe_maker(cfg: SweepConfig, token_inputs: bool) -> None:
    """metrics.cka_probe_maker names a built-in, the user's module:function or an entry point of landscape.probes,
    and can make probes of these inputs (mixup cannot average tokens)."""
    from workloads.metrics.probes import PROBE_MAKERS, maker_problem
    from workloads.plugins import PluginError, unknown_name_hint, user_callable

    maker = cfg.metrics.cka.probe_maker
    try:
        fn = user_callable("probes", maker, PROBE_MAKERS)
    except PluginError as exc:
        fail("metrics.cka_probe_maker", one_line(exc))
    except LookupError as exc:
        fail("metrics.cka_probe_maker", one_line(exc) + unknown_name_hint("probes"))
    problem = None if fn is not None else maker_problem(maker, token_inputs)
    if problem:
        fail("metrics.cka_probe_maker", problem)


def _check_probe_pool_size(cfg: SweepConfig, full_size: int) -> None:
    """The points maker draws distinct inputs: the smallest probe pool of the sweep must hold cka_probes of them."""
    cka = cfg.metrics.cka
    if cka.probe_maker != "points":
        return
    if cka.probe_pool == "train":
        pool = min(transformed_train_size(cfg, v, full_size) for v in cfg.load.values)
        what = "the smallest training set of the sweep"
    else:
        w = cfg.workload
        facts = DATASET_FACTS.get(w.dataset)
        if facts is None:
            from workloads.data import load_dataset

            pool = int(load_dataset(w.dataset, w.data_root, seed=w.data_seed, args=w.dataset_args).test_x.shape[0])
        else:
            pool = facts.test_size
        what = "the test set"
    if cka.probes > pool:
        fail("metrics.cka_probes", f"{cka.probes} distinct probe inputs, but {what} has {pool}; the points maker "
                                   f"draws without replacement: set metrics.cka_probes to at most {pool}")


def _check_per_load_resources(cfg: SweepConfig) -> None:
    r = cfg.resources
    load_floats = {float(v) for v in cfg.load.values}
    for what, by_load in (("gpu", r.gpu_by_load), ("cpu", r.cpu_by_load)):
        for k, v in by_load.items():
            path = f"resources.{what}_by_load.{k}"
            kv = as_number(k)
            if kv is None or float(kv) not in load_floats:
                fail(path, f"{k!r} is not a load value of the sweep ({list(cfg.load.values)})")
            number = as_number(v)
            if what == "gpu":
                if number is None or not math.isfinite(number):
                    fail(path, f"must be a number of GPUs, got {show(v)}")
                problem = gpu_check(float(number))
                if problem:
                    fail(path, problem)
            elif number is None or not math.isfinite(number) or not number > 0:
                fail(path, f"must be a number of CPUs > 0, got {show(v)}")


def _validate_pairs(pairs, seeds) -> None:
    if isinstance(pairs, str):
        if pairs not in PAIR_MODES:
            fail("metrics.pairs", choice_problem(pairs, PAIR_MODES) + " or a list of seed pairs [[0, 1], ...]")
        return
    if not isinstance(pairs, (list, tuple)):
        fail("metrics.pairs", f"must be auto, all, ring or a list of seed pairs [[0, 1], ...], got {show(pairs)}")
    for i, p in enumerate(pairs):
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) for s in p)
        ):
            fail(f"metrics.pairs[{i}]", f"a pair is two seeds, e.g. [0, 1], got {show(p)}")
        if p[0] == p[1]:
            fail(f"metrics.pairs[{i}]", f"a pair needs two different seeds, got {list(p)}")
        missing = [s for s in p if s not in seeds]
        if missing:
            fail(f"metrics.pairs[{i}]", f"seed(s) {missing} are not in seeds {list(seeds)}")


# Caps on the grid, far above any real sweep, so that a typo (a 2-million-model grid) is one clear error naming
# the field instead of a driver that grows to gigabytes (the caps of single settings are in their declarations).
MAX_MODELS = 100_000  # 110x the largest paper grid (910 models); the driver holds ~1 kB per job (2 M: 1.6 GB)
MAX_PAIRS = 100_000  # as many pair jobs (the paper grids have one per model)


def _check_sizes(cfg: SweepConfig) -> None:
    cells = len(cfg.load.values) * len(cfg.temperature.values)
    models = cells * len(cfg.seeds)
    if models > MAX_MODELS:
        fail("seeds" if len(cfg.seeds) > cells else "load.values",
             f"the grid has {models:,} models ({len(cfg.load.values)} loads x {len(cfg.temperature.values)} "
             f"temperatures x {len(cfg.seeds)} seeds), more than the {MAX_MODELS:,} this tool runs in one sweep; "
             f"split it into several run directories")
    pairs = cells * pairs_per_cell(cfg.metrics.pairs, len(cfg.seeds))
    if pairs > MAX_PAIRS:
        fail("metrics.pairs", f"the grid has {pairs:,} seed pairs, more than {MAX_PAIRS:,}; use pairs: ring "
                              f"(one pair per seed) or fewer seeds")


def config_warnings(cfg: SweepConfig) -> list[str]:
    """What a valid config will not give, for `validate` and `run` to say before any work."""
    if cfg.pair_keys():
        return []
    why = "one seed" if len(cfg.seeds) < 2 else "metrics.pairs connects none of them"
    return [f"no seed pairs ({why}): the models are trained and measured, but there is no mode connectivity, so no "
            f"cell gets a phase; give at least two seeds for phases"]


MAX_MODEL_OPTION = 10_000  # no numeric model option (depth, ...) of a trainable network comes near this
MAX_PARAMETERS = 10**10  # 40 GB of float32 weights (x3 with gradients and momentum): beyond one accelerator


def _check_model_builds(cfg: SweepConfig, width: int, input_shape: tuple, num_classes: int,
                        max_width: Optional[int] = None) -> None:
    """The model builds with its options at ``width`` and, when given, is not absurdly large at ``max_width``.

    Built on the meta device (shapes only). Huge options are refused before building: building a depth of
    10^9 layers takes forever even without weights, and a huge width overflows torch's size arithmetic.
    """
    from workloads.models import count_parameters, shape_model
    from workloads.plugins import PluginError

    for name, value in cfg.workload.model_args.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MODEL_OPTION:
            fail(f"workload.model_args.{name}", f"{value:g} is beyond any network this tool trains "
                                                f"(at most {MAX_MODEL_OPTION})")
    for w in sorted({width, max_width or width}):
        try:
            # Checks options and shapes without allocating (or initialising) weights: torch's meta device.
            model = shape_model(cfg.workload.model, width=w, num_classes=num_classes, input_shape=input_shape,
                                **cfg.workload.model_args)
            params = count_parameters(model)
        except PluginError as exc:  # the user's function raised, or returned no nn.Module
            fail("workload.model", f"{one_line(exc)} (while building it at width {w})")
        except (TypeError, ValueError) as exc:
            fail("workload.model_args", one_line(exc))
        except (RuntimeError, OverflowError, MemoryError) as exc:  # torch's size arithmetic overflowed
            fail("load.values" if cfg.load.name == "width" else "workload.width",
                 f"model {cfg.workload.model!r} cannot be built at width {w} ({one_line(exc)[:200]})")
        if params > MAX_PARAMETERS:
            fail("load.values" if cfg.load.name == "width" else "workload.width",
                 f"model {cfg.workload.model!r} at width {w} has {params:.3g} parameters ({params * 4 / 1e9:.0f} "
                 f"GB of weights), more than any accelerator holds; lower the width")
