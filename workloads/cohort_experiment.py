"""The engine: cohorts of models and of pairs, from specs (workloads/experiment.py) to table rows
(workloads/rows.py). Every model of a sweep trains here, alone as a cohort of one (experiment.py's
train_and_measure / measure_pair) or with others; nothing here knows about Ray, storage or provenance.

    plan_model_cohorts(list[ModelSpec], max_size) -> list[list[ModelSpec]]   which models may train together
    train_and_measure_cohort(list[ModelSpec]) -> list[ModelOutcome]    one outcome per member, in order
    plan_pair_cohorts(list[PairSpec], max_size) -> list[list[PairSpec]]
    measure_pairs_cohort(list[PairSpec], states) -> list[PairOutcome]  one outcome per pair, in order

Outcomes are ModelOutcome / PairOutcome: a member's rows (the columns of analysis/tables.py without the caller's
provenance), weights, curve rows and ``cohort``, a CohortInfo with the bookkeeping the orchestrator needs
(size, member index, backend, the cohort's own seconds). Time columns are each member's share: train_seconds, metrics_seconds and
wall_seconds are the cohort's divided by its size, so sums over rows stay the compute spent.

Which models share a cohort (``model_cohort_key``): one architecture (model, model_args, width), the same
training inputs (dataset, its root, training subset), the same step count (epochs, batch size) and device,
and the same Hessian settings. They may differ in seed, learning rate, momentum, weight decay, schedule and
labels (label-noise fraction at the same n). Pairs (``pair_cohort_key``): one architecture and training
inputs, the same curve epochs, batch size, t-grid and device; curve lr, momentum, weight decay and seed may
differ. Cells of a batch-size temperature share curves, not trainings (their step counts differ).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from workloads.cohort_net import build_cohort_net, member_state, resolve_backend
from workloads.cohort_train import Execution, evaluate_cohort, train_cohort
from workloads.data import Dataset
from workloads.fingerprint import execution_path
from workloads.metric_discovery import measure_added
from workloads.metrics.cka import cka_or_reason, softmax_outputs
from workloads.metrics.probes import make_probes, probe_pool
from workloads.metrics.connectivity import connect_cohort, curve_cohort
from workloads.metrics.cohort_hessian import estimate_hessian_cohort, uses_fused_products
from workloads.metrics.distance import l2_distance
from workloads.metrics.hessian import estimate_hessian
from workloads.models import count_parameters
from workloads.rows import add_measurements, curve_history_rows, model_row, pair_rows, utc_now
from workloads.settings import HessianSettings
from workloads.specs import ModelSpec, PairSpec

# On a CPU the members' Hessian-vector products are taken together only for models of at most this many
# parameters. `benchmarks/cohort.py --hessian` (docs/benchmarks.md, "Cohorts: the engine"; 3 MLPs, 1000 points): the
# cohort took x1.13-1.40 less time at 490-1,098 parameters, the same at 2,698, and more above (x0.95 at 7,434,
# x0.6-0.7 at 23k-79k: the batched products' 3x larger tensors fall out of the caches). On CUDA they are
# always taken together (launch-bound there).
# The same limit holds for an MLP cohort (FusedNet), whose products are written out (metrics/fused_hessian.py):
# `benchmarks/cohort.py --fused-hessian` (docs/benchmarks.md, "Cohorts: the fused Hessian-vector product"; 5 MLPs,
# 1000 points, shared cores): one product per member took x1.2-3.0 less time than autograd's at every width, but
# the whole stage, whose members run in lock-step threads, only paid at 2,698 parameters (x1.23-1.59 less than
# the autograd cohort, 3 runs); at 7,434 it went x0.87-1.38 against one model at a time, above it x0.85-1.03.
HESSIAN_COHORT_CPU_MAX_PARAMS = 4096
EVAL_BATCH_SIZE = 1000  # examples per forward pass in evaluation (memory only; no effect on values)


@dataclass(frozen=True)
class CohortInfo:
    """size: members in the cohort; index: this member's position; backend: fused | grouped | vmap | plain; hessian:
    "fused" (products taken together, written out: metrics/fused_hessian.py), "cohort" (taken together through
    autograd), "per-member" or "none"; *_seconds: the whole cohort's times."""

    size: int
    index: int
    backend: str
    hessian: str
    train_seconds: float
    metrics_seconds: float
    wall_seconds: float


@dataclass
class ModelOutcome:
    """row: the ``models`` columns the engine knows (no provenance, node_id, model_uri, cohort).
    state_dict: the trained weights on the CPU (None when training diverged). history: per-epoch log.
    cohort: the cohort's bookkeeping (its size, this member's index, the cohort's own seconds)."""

    row: dict
    state_dict: dict | None
    history: list[dict]
    cohort: CohortInfo | None = None

    @property
    def status(self) -> str:
        return self.row["status"]


@dataclass
class PairOutcome:
    """row: the ``pairs`` columns the engine knows; curve_rows: one ``curves`` row per t; history_rows: one
    ``curve_history`` row per epoch of the curve's training; cohort: as in ModelOutcome."""

    row: dict
    curve_rows: list[dict]
    history_rows: list[dict] = field(default_factory=list)
    cohort: CohortInfo | None = None

    @property
    def status(self) -> str:
        return self.row["status"]


def hessian_points(data: Dataset, settings: HessianSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The training points the Hessian is taken over: a seeded subset of ``settings.samples`` (all if fewer).

    Returns (x (k, *input_shape), y (k,)); the same points for every seed of a cell.
    """
    n = data.train_size
    if settings.samples >= n:
        return data.train_x, data.train_y
    gen = torch.Generator(device="cpu").manual_seed(int(settings.seed))
    index = torch.randperm(n, generator=gen)[: settings.samples].sort().values.to(data.train_x.device)
    return data.train_x[index], data.train_y[index]


def load_trained(cell, seed: int, state_dict: dict, data: Dataset, device: str) -> nn.Module:
    """A model of the cell (a workloads.specs.CellSpec) with the given trained weights, on ``device``, in
    eval mode."""
    model = cell.build_model(seed, data)
    model.load_state_dict(state_dict)
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------------------
# Who may share a cohort


def _inputs_key(cell) -> tuple:
    """What decides the training inputs x: the label noise is not in it (it changes y only)."""
    fraction = cell.train_fraction  # the axis value or the fixed one (CellSpec.knob_value)
    return (cell.dataset, cell.data_root, fraction, int(cell.data_seed) if fraction is not None else None)


def _architecture_key(cell) -> tuple:
    return (cell.model, json.dumps(cell.model_args, sort_keys=True), cell.model_width())


def member_key(spec: ModelSpec) -> str:
    """A model's name in cohort checkpoints: its cell, seed and data recipe (what makes its y and init)."""
    cell = spec.cell
    noise = cell.label_noise
    return json.dumps({**cell.keys(), "seed": int(spec.seed), "label_noise": noise, "data": _inputs_key(cell)},
                      sort_keys=True)


def model_cohort_key(spec: ModelSpec) -> tuple:
    """Models with equal keys may train as one cohort (see the module doc)."""
    cell = spec.cell
    config = cell.train_config(spec.seed, spec.device)
    return (_architecture_key(cell), _inputs_key(cell), config.epochs, config.batch_size, spec.device, cell.hessian)


def pair_cohort_key(spec: PairSpec) -> tuple:
    """Pairs with equal keys may have their curves trained as one cohort (see the module doc)."""
    cell, curve = spec.cell, spec.cell.curve
    return (_architecture_key(cell), _inputs_key(cell), curve.epochs, curve.batch_size, curve.points,
            curve.lr_schedule, curve.bn_batch_size, curve.eval_batch_size, spec.device)


def _plan(specs: list, key, max_size: int | None) -> list[list]:
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1):
        raise ValueError(f"the cohort size cap must be a positive integer or None, got {max_size!r}")
    groups: dict[tuple, list] = {}
    for spec in specs:
        groups.setdefault(key(spec), []).append(spec)
    cap = max_size or max(1, len(specs))
    return [group[i:i + cap] for group in groups.values() for i in range(0, len(group), cap)]


def plan_model_cohorts(specs: list[ModelSpec], max_size: int | None = None) -> list[list[ModelSpec]]:
    """Split ``specs`` into cohorts of equal ``model_cohort_key`` and at most ``max_size`` members (None: no cap),
    keeping the given order inside each cohort and the order of first appearance between cohorts."""
    return _plan(specs, model_cohort_key, max_size)


def plan_pair_cohorts(specs: list[PairSpec], max_size: int | None = None) -> list[list[PairSpec]]:
    """As plan_model_cohorts, for pairs and ``pair_cohort_key``."""
    return _plan(specs, pair_cohort_key, max_size)


def _check_one_cohort(specs: list, key, what: str) -> None:
    if not specs:
        raise ValueError(f"a cohort needs at least one {what}")
    keys = {key(s) for s in specs}
    if len(keys) > 1:
        raise ValueError(f"these {what}s cannot share a cohort (architecture, training inputs, step counts, device "
                         f"or metric settings differ): group them with plan_{what}_cohorts first")


# --------------------------------------------------------------------------------------------------------
# Data


def member_datasets(cells: list) -> list[Dataset]:
    """Each member's dataset (CPU), built once per distinct data recipe; ValueError unless the training inputs
    are identical (the labels may differ)."""
    cache: dict[tuple, Dataset] = {}
    out = []
    for cell in cells:
        noise = cell.label_noise
        recipe = (_inputs_key(cell), noise, int(cell.data_seed))
        if recipe not in cache:
            cache[recipe] = cell.data()
        out.append(cache[recipe])
    first = out[0]
    for ds in out[1:]:
        if ds.train_x is not first.train_x and not torch.equal(ds.train_x, first.train_x):
            raise ValueError("cohort members' training inputs differ; they cannot share a cohort")
    return out


# --------------------------------------------------------------------------------------------------------
# Models


def _use_cohort_hessian(settings, device: str, params: int, samples: int) -> bool:
    """Whether the members' products go together (written out for an MLP cohort, ``uses_fused_products``, else
    through autograd): up to HESSIAN_COHORT_CPU_MAX_PARAMS on a CPU, always on CUDA."""
    supported = settings.backend == "lanczos" and (settings.batch_size is None or settings.batch_size >= samples)
    return supported and (device.startswith("cuda") or params <= HESSIAN_COHORT_CPU_MAX_PARAMS)


def train_and_measure_cohort(specs: list[ModelSpec], *, execution: Execution = Execution(), checkpoint_fn=None,
                             resume_state: dict | None = None, epoch_fn=None) -> list[ModelOutcome]:
    """Train every spec's model of a cell and measure it, as one cohort; outcomes in the order of ``specs``.

    checkpoint_fn / resume_state: one checkpoint for the whole cohort (workloads/cohort_checkpoint.py), naming
    its members (``member_key``); a resume_state of other members is a ValueError starting "resume_state".
    A diverged member gets status "diverged", null metrics and no weights (the reason in ``error``); the others
    are measured. Exceptions (bad settings, out of memory) propagate: the caller decides about retries.
    """
    _check_one_cohort(specs, model_cohort_key, "model")
    seen = [(tuple(sorted(s.cell.keys().items())), int(s.seed)) for s in specs]
    if len(set(seen)) != len(seen):
        raise ValueError("a cohort lists the same model (cell and seed) twice")
    started = time.perf_counter()
    cells = [s.cell for s in specs]
    device = specs[0].device
    datasets = member_datasets(cells)
    models = [cell.build_model(s.seed, ds) for cell, s, ds in zip(cells, specs, datasets)]
    backend = resolve_backend(execution.backend, models[0], len(models), datasets[0].train_x)
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend, device)
    configs = [cell.train_config(s.seed, device) for cell, s in zip(cells, specs)]
    base = datasets[0].to(device)
    train_y = torch.stack([ds.train_y for ds in datasets]).to(device)
    test_y = torch.stack([ds.test_y for ds in datasets]).to(device)
    result = train_cohort(net, base.train_x, train_y, configs, execution=execution, checkpoint_fn=checkpoint_fn,
                          resume_state=resume_state, members=[member_key(s) for s in specs],
                          test_set=(base.test_x, test_y) if base.test_y.shape[0] else None, epoch_fn=epoch_fn)
    trained = time.perf_counter()

    ok = [i for i, status in enumerate(result.statuses) if status == "ok"]
    metrics = {}
    hessian_mode = "none"
    if ok:
        train_loss, train_acc = evaluate_cohort(net, base.train_x, train_y, batch_size=EVAL_BATCH_SIZE)
        test_loss, test_acc = evaluate_cohort(net, base.test_x, test_y, batch_size=EVAL_BATCH_SIZE)
        estimates, hessian_mode = _hessians(net, models, base, train_y, datasets, specs, ok, device)
        metrics = {i: (train_loss[i], train_acc[i], test_loss[i], test_acc[i], estimates[i]) for i in ok}
    finished = time.perf_counter()

    m = len(specs)
    stacked = net.stacked_state()
    path = execution_path(device, engine="cohort", backend=backend, precision=execution.precision,
                          compile_mode=execution.compile)
    outcomes = []
    for i, (spec, cell, ds, model) in enumerate(zip(specs, cells, datasets, models)):
        info = CohortInfo(size=m, index=i, backend=backend, hessian=hessian_mode, train_seconds=trained - started,
                          metrics_seconds=finished - trained, wall_seconds=finished - started)
        row, state = _model_row(spec, cell, ds, model, result, i, metrics.get(i), stacked, path)
        row.update(train_seconds=info.train_seconds / m, metrics_seconds=info.metrics_seconds / m,
                   wall_seconds=info.wall_seconds / m, finished_at=utc_now())
        outcomes.append(ModelOutcome(row=row, state_dict=state, history=result.histories[i], cohort=info))
    return outcomes


def _hessians(net, models, base: Dataset, train_y: torch.Tensor, datasets, specs, ok: list[int], device: str):
    """Per ok member its HessianEstimate: products taken together where it pays, else one model at a time.

    base: the shared data on the device; train_y (M, n): the members' labels there (the points are one
    seeded subset of x for all, each member with its own labels)."""
    settings = specs[0].cell.hessian
    points = [hessian_points(dataclasses.replace(base, train_y=y), settings) for y in train_y]
    hx = points[0][0]
    hy = torch.stack([p[1] for p in points])
    if _use_cohort_hessian(settings, device, count_parameters(models[0]), len(hx)):
        estimates = estimate_hessian_cohort(
            net, hx, hy, members=ok, eigen_tol=settings.eigen_tol, eigen_max_iter=settings.eigen_max_iter,
            trace_tol=settings.trace_tol, trace_max_probes=settings.trace_max_probes, seed=settings.seed)
        return estimates, "fused" if uses_fused_products(net, hy) else "cohort"
    stacked = net.stacked_state()
    estimates = [None] * net.members
    for i in ok:
        model = load_trained(specs[i].cell, specs[i].seed, member_state(stacked, i), datasets[i], device)
        estimates[i] = estimate_hessian(
            model, hx, hy[i], backend=settings.backend, eigen_tol=settings.eigen_tol,
            eigen_max_iter=settings.eigen_max_iter, trace_tol=settings.trace_tol,
            trace_max_probes=settings.trace_max_probes, seed=settings.seed, batch_size=settings.batch_size)
    return estimates, "per-member"


def _model_row(spec, cell, ds, model, result, i: int, measured, stacked, path: str) -> tuple[dict, dict | None]:
    """The ``models`` row of member i (times filled in by the caller)."""
    row = model_row(cell, spec.seed, ds, model, status=result.statuses[i], error=result.errors[i],
                    history=result.histories[i], epochs_completed=result.epochs_completed[i], device=spec.device,
                    execution=path)
    if measured is None:
        return row, None
    train_loss, train_acc, test_loss, test_acc, est = measured
    if not add_measurements(row, (train_loss, train_acc), (test_loss, test_acc), est):
        return row, None
    state = member_state(stacked, i)
    if cell.added_metrics:  # the run's added metrics, on the member's trained weights
        model.load_state_dict(state)
        row.update(measure_added(model.to(spec.device).eval(), ds.to(spec.device), cell.added_metrics))
    return row, state


# --------------------------------------------------------------------------------------------------------
# Pairs


def measure_pairs_cohort(specs: list[PairSpec], states: list[tuple[dict, dict]], *,
                         execution: Execution = Execution()) -> list[PairOutcome]:
    """Connect and compare every spec's two trained models, the curves trained as one cohort; outcomes in the
    order of ``specs``.

    states: per spec (state_a, state_b), the state dicts of its seed_a and seed_b. CKA and L2 are computed
    pair by pair; a diverged curve gives status "diverged" (mode connectivity null, CKA and L2 still
    measured).
    """
    _check_one_cohort(specs, pair_cohort_key, "pair")
    if len(states) != len(specs):
        raise ValueError(f"{len(specs)} pairs but {len(states)} (state_a, state_b) tuples")
    started_at, started = utc_now(), time.perf_counter()
    device = specs[0].device
    cells = [s.cell for s in specs]
    datasets = member_datasets(cells)
    base = datasets[0].to(device)
    seeds, ends = [], []
    cka, l2 = [], []
    probe_sets: dict[tuple, torch.Tensor] = {}
    for spec, cell, ds, (state_a, state_b) in zip(specs, cells, datasets, states):
        seed_a, seed_b = sorted((int(spec.seed_a), int(spec.seed_b)))
        if (seed_a, seed_b) != (int(spec.seed_a), int(spec.seed_b)):
            state_a, state_b = state_b, state_a
        seeds.append((seed_a, seed_b))
        model_a = load_trained(cell, seed_a, state_a, ds, device)
        model_b = load_trained(cell, seed_b, state_b, ds, device)
        probe_key = (cell.cka.probe_maker, cell.cka.probe_pool, int(cell.cka.probes), int(cell.cka.probe_seed))
        if probe_key not in probe_sets:  # drawn from the shared inputs, once per setting
            probe_sets[probe_key] = make_probes(probe_key[0], probe_pool(base, probe_key[1]), *probe_key[2:])
        probes = probe_sets[probe_key]
        cka.append(cka_or_reason(softmax_outputs(model_a, probes), softmax_outputs(model_b, probes)))
        l2.append(l2_distance(model_a, model_b))
        ends.append((model_a, model_b))
    backend = resolve_backend(execution.backend, ends[0][0], len(ends), base.train_x)
    net, end_a, end_b = curve_cohort(ends, device, backend)
    train_y = torch.stack([ds.train_y for ds in datasets]).to(device)
    test_y = torch.stack([ds.test_y for ds in datasets]).to(device)
    configs = [dataclasses.replace(cell.curve, device=device) for cell in cells]
    curves = connect_cohort(net, end_a, end_b, base.train_x, train_y, base.test_x, test_y, configs)
    seconds = time.perf_counter() - started
    p = len(specs)
    outcomes = []
    for i, (spec, cell, curve, (seed_a, seed_b)) in enumerate(zip(specs, cells, curves, seeds)):
        outcomes.append(_pair_outcome(spec, cell, curve, seed_a, seed_b, cka[i], l2[i], configs[i], started_at,
                                      seconds / p, CohortInfo(size=p, index=i, backend=backend, hessian="none",
                                                              train_seconds=seconds, metrics_seconds=0.0,
                                                              wall_seconds=seconds)))
    return outcomes


def _pair_outcome(spec, cell, curve, seed_a, seed_b, cka_result, l2, config, started_at, share,
                  info) -> PairOutcome:
    """The rows of one pair of a pair cohort."""
    row, curve_rows = pair_rows(cell, seed_a, seed_b, curve, cka_result, l2, config, spec.device, started_at)
    row["wall_seconds"] = share
    row["finished_at"] = utc_now()
    return PairOutcome(row=row, curve_rows=curve_rows, cohort=info,
                             history_rows=curve_history_rows(cell.keys(), seed_a, seed_b, curve.history))
