"""One model, or one pair of models, from settings to table rows: the framework-free glue of a sweep.
(About 400 lines: the specs, both jobs and the row builders they share with the cohort engine.)

The orchestrator calls these two functions inside Ray workers; benchmarks and tests call them directly in
one process. Nothing here knows about Ray, storage or provenance: the functions take plain dataclasses,
return plain dict rows (the columns of analysis/tables.py's ``models``, ``pairs`` and ``curves`` tables,
without the provenance columns the caller adds) plus the trained weights.

    train_and_measure(ModelSpec) -> ModelOutcome   build the cell's data (the load transform), build the
                                                   model under its seed, train, evaluate, Hessian
    measure_pair(PairSpec, state_a, state_b) -> PairOutcome
                                                   rebuild both models, Bezier curve (mode connectivity),
                                                   CKA on the cell's shared mixup probes, L2 distance

A *cell* is one (load, temperature) point of the grid; its seeds share the data (subset and label noise are
drawn with the cell's ``data_seed``, not the model seed), the Hessian points and the CKA probes, so the
seeds differ only in initialisation and batch order.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
from torch import nn

from workloads import knobs
from workloads.data import Dataset, load_dataset
from workloads.fingerprint import dataset_sha256, execution_path
from workloads.metric_discovery import measure_added
from workloads.metric_specs import BUILTINS, MetricSpec
from workloads.metrics.cka import cka_or_reason, softmax_outputs
from workloads.metrics.connectivity import CurveConfig, connect_models
from workloads.metrics.distance import l2_distance
from workloads.metrics.hessian import estimate_hessian
from workloads.metrics.probes import make_probes, probe_pool
from workloads.models import count_parameters, seeded_model
from workloads.settings import MC_ON, CkaSettings, HessianSettings, TrainConfig, Workload
from workloads.train import evaluate, train

EVAL_BATCH_SIZE = 1000  # examples per forward pass in evaluation (memory only; no effect on values)


@dataclass(frozen=True)
class CellSpec:
    """Everything shared by the models and pairs of one (load, temperature) cell.

    load_name / temperature_name: knobs of workloads/knobs.py (width | train_fraction | label_noise;
    batch_size | learning_rate | weight_decay). ``workload``: the dataset, the model and the fixed values of the
    knobs that are not an axis; ``training``: the settings the temperature does not set (its seed and device
    are replaced per model); the Hessian, CKA and curve settings as the sweep config declares them.
    """

    load_name: str
    load_value: float
    temperature_name: str
    temperature_value: float
    workload: Workload = field(default_factory=Workload)
    training: TrainConfig = field(default_factory=TrainConfig)
    hessian: HessianSettings = field(default_factory=HessianSettings)
    curve: CurveConfig = field(default_factory=CurveConfig)
    cka: CkaSettings = field(default_factory=CkaSettings)
    # Metrics beyond the built-ins that the run computes (workloads/extra_metrics.py: the package's own and the
    # config's metrics.extra), each with its compute function.
    added_metrics: tuple[MetricSpec, ...] = ()

    def keys(self) -> dict:
        return {
            "load_name": self.load_name,
            "load_value": float(self.load_value),
            "temperature_name": self.temperature_name,
            "temperature_value": float(self.temperature_value),
        }

    # The workload's fields, as the cohort engine and the metrics read them.
    dataset = property(lambda self: self.workload.dataset)
    data_root = property(lambda self: self.workload.data_root)
    model = property(lambda self: self.workload.model)
    model_args = property(lambda self: self.workload.model_args)
    data_seed = property(lambda self: self.workload.data_seed)

    def knob_values(self) -> dict:
        """{knob: value}: the two axes' values and the workload's fixed values of the other load knobs."""
        return knobs.cell_values(self.load_name, self.load_value, self.temperature_name, self.temperature_value,
                                 self.workload)

    def knob_value(self, name: str):
        """The value of one knob in this cell, as the setting it sets takes it (None where a fixed transform
        is not set)."""
        value = self.knob_values().get(name)
        return None if value is None else knobs.knob(name).convert(value)

    # Fixed or axis value of the data knobs (None = not applied), as the cohort engine reads them.
    train_fraction = property(lambda self: self.knob_value("train_fraction"))
    label_noise = property(lambda self: self.knob_value("label_noise"))

    def model_width(self) -> int:
        return int(knobs.applied(self.knob_values())["model.width"])

    def train_config(self, seed: int, device: str) -> TrainConfig:
        """The training settings of one model: the cell's, with the temperature (a training knob) applied."""
        changes = {name: value for (kind, name), value in _targets(self.knob_values()) if kind == "training"}
        return dataclasses.replace(self.training, **changes, seed=int(seed), device=device)

    def data(self) -> Dataset:
        """The cell's dataset (CPU) with the data knobs applied in their declaration order (a training subset is
        drawn first, then its labels corrupted), each with the cell's ``data_seed``."""
        ds = load_dataset(self.dataset, self.data_root, seed=self.data_seed, args=self.workload.dataset_args)
        for knob_name, value in self.knob_values().items():
            spec = knobs.knob(knob_name)
            if value is not None and spec.target[0] == "data":
                ds = spec.transform_function()(ds, float(value), self.data_seed)
        return ds

    def build_model(self, seed: int, data: Dataset) -> nn.Module:
        """The untrained model of ``seed`` (CPU), initialised under that seed."""
        return seeded_model(
            self.model, seed, width=self.model_width(), num_classes=data.num_classes,
            input_shape=data.input_shape, **self.model_args,
        )


def _targets(values: dict) -> list[tuple[tuple[str, str], float]]:
    """((kind, name), value) of what the knob values set, e.g. (("training", "batch_size"), 32)."""
    return [(tuple(sets.split(".", 1)), value) for sets, value in knobs.applied(values).items()]


@dataclass(frozen=True)
class ModelSpec:
    cell: CellSpec
    seed: int
    device: str = "cpu"


@dataclass(frozen=True)
class PairSpec:
    cell: CellSpec
    seed_a: int
    seed_b: int
    device: str = "cpu"


@dataclass
class ModelOutcome:
    """row: the ``models`` columns this module knows (no provenance, node_id, model_uri).
    state_dict: the trained weights on the CPU (None when training diverged). history: per-epoch log."""

    row: dict
    state_dict: dict | None
    history: list[dict]

    @property
    def status(self) -> str:
        return self.row["status"]


@dataclass
class PairOutcome:
    """row: the ``pairs`` columns this module knows; curve_rows: one ``curves`` row per t; history_rows: one
    ``curve_history`` row per epoch of the curve's training."""

    row: dict
    curve_rows: list[dict]
    history_rows: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.row["status"]


def utc_now() -> datetime:
    """Now, timezone-aware in UTC: the started_at / finished_at of every result row."""
    return datetime.now(timezone.utc)


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


# train_loss_drop compares the mean per-epoch train loss of the last tenth of the epochs with the tenth before.
LOSS_DROP_WINDOW = 0.1  # fraction of the epochs in each window (at least one epoch)


def train_loss_drop(history: list[dict], window: float = LOSS_DROP_WINDOW) -> float | None:
    """Relative drop of the training loss at the end of training: 1 - mean(last window) / mean(window before).

    history: TrainResult.history (per-epoch ``train_loss``, the mean batch loss in train mode). Each window is
    ``window`` of the epochs (>= 1 epoch). Near 0 (or negative): the loss had stopped falling, a plateau (at the
    floor, or held up by SGD noise); clearly positive: still falling when training stopped, i.e. under-trained.
    None with fewer than two epochs or a non-finite or non-positive loss.
    """
    losses = [float(h["train_loss"]) for h in history]
    if len(losses) < 2:
        return None
    k = min(max(1, int(len(losses) * window)), len(losses) // 2)
    before, last = sum(losses[-2 * k : -k]) / k, sum(losses[-k:]) / k
    if not (math.isfinite(before) and math.isfinite(last)) or before <= 0:
        return None
    return 1.0 - last / before


def _finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# What add_measurements fills: the per-model metrics the experiment measures itself (workloads/metric_specs.py;
# train_loss_drop comes from the history, added metrics from their own compute functions), and the Hessian's
# bookkeeping.
MEASURED_MODEL_COLUMNS = (
    *(s.name for s in BUILTINS.per("model") if s.name != "train_loss_drop"),
    "hessian_samples", "hessian_eigen_iterations", "hessian_trace_probes",
)


def model_row(cell: CellSpec, seed: int, data: Dataset, model: nn.Module, *, status: str, error: str | None,
              history: list[dict], epochs_completed: int, device: str, execution: str) -> dict:
    """The ``models`` row of a trained (or diverged) model before its measurements: keys, status, sizes,
    the drop of its training loss, the content hash of its data and the path it was trained on (``execution``:
    workloads.fingerprint.execution_path); the measured columns null until ``add_measurements`` fills them."""
    return {
        **cell.keys(),
        "seed": int(seed),
        "status": status,
        "error": error,
        "num_params": count_parameters(model),
        "train_size": int(data.train_size),
        "label_noise_realised": float(data.info.get("label_noise_realised", 0.0)),
        "epochs_completed": int(epochs_completed),
        "train_loss_drop": train_loss_drop(history) if status == "ok" else None,
        "hessian_backend": cell.hessian.backend,
        "device": device,
        "dataset_sha256": dataset_sha256(data),
        "execution_path": execution,
        **dict.fromkeys(MEASURED_MODEL_COLUMNS),
        **{s.name: None for s in cell.added_metrics if s.per == "model"},
    }


def add_measurements(row: dict, train: tuple[float, float], test: tuple[float, float], est) -> bool:
    """Fill ``row`` with the (loss, accuracy) of the training and test sets and the Hessian estimate; a model
    whose loss or curvature is not finite is marked diverged (the same regime as a diverged run). Returns
    whether the model is ok (its weights are kept)."""
    row.update(
        train_loss=_finite_or_none(train[0]), train_acc=float(train[1]),
        test_loss=_finite_or_none(test[0]), test_acc=float(test[1]),
        hessian_top_eigenvalue=_finite_or_none(est.top_eigenvalue), hessian_trace=_finite_or_none(est.trace),
        hessian_samples=int(est.samples), hessian_eigen_iterations=int(est.eigen_iterations),
        hessian_trace_probes=int(est.trace_probes),
    )
    missing = [k for k in ("train_loss", "test_loss", "hessian_top_eigenvalue", "hessian_trace") if row[k] is None]
    if missing:
        row["status"] = "diverged"
        row["error"] = f"non-finite {', '.join(missing)} after training"
        return False
    return True


def train_and_measure(spec: ModelSpec, *, checkpoint_fn=None, resume_state: dict | None = None,
                      epoch_fn=None) -> ModelOutcome:
    """Train one model of a cell and measure it.

    checkpoint_fn / resume_state / epoch_fn: passed to workloads.train.train (periodic checkpoints, exact
    resume, a call per epoch with its history entry).
    A diverged training gives status "diverged" with metrics left null and the reason in ``error``.
    Exceptions (bad settings, out of memory) propagate: the caller decides about retries.
    """
    started = time.perf_counter()
    cell = spec.cell
    device = spec.device
    data = cell.data()
    model = cell.build_model(spec.seed, data)
    config = cell.train_config(spec.seed, device)
    data_dev = data.to(device)
    result = train(model, data_dev, config, checkpoint_fn=checkpoint_fn, resume_state=resume_state, epoch_fn=epoch_fn)
    train_seconds = time.perf_counter() - started
    model = result.model
    # Measured below for a model that trained; null (with the reason in ``error``) otherwise.
    row = model_row(cell, spec.seed, data, model, status=result.status, error=result.error, history=result.history,
                    epochs_completed=result.epochs_completed, device=device,
                    execution=execution_path(device, engine="single", backend="module"))
    row["train_seconds"] = train_seconds
    metrics_started = time.perf_counter()
    state = None
    if result.status == "ok":
        train_loss, train_acc = evaluate(model, data_dev.train_x, data_dev.train_y, batch_size=EVAL_BATCH_SIZE)
        test_loss, test_acc = evaluate(model, data_dev.test_x, data_dev.test_y, batch_size=EVAL_BATCH_SIZE)
        hx, hy = hessian_points(data_dev, cell.hessian)
        h = cell.hessian
        est = estimate_hessian(
            model, hx, hy, backend=h.backend, eigen_tol=h.eigen_tol, eigen_max_iter=h.eigen_max_iter,
            trace_tol=h.trace_tol, trace_max_probes=h.trace_max_probes, seed=h.seed, batch_size=h.batch_size,
        )
        if add_measurements(row, (train_loss, train_acc), (test_loss, test_acc), est):
            row.update(measure_added(model, data_dev, cell.added_metrics))
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    row["metrics_seconds"] = time.perf_counter() - metrics_started
    row["wall_seconds"] = time.perf_counter() - started
    row["finished_at"] = utc_now()
    return ModelOutcome(row=row, state_dict=state, history=result.history)


HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")


def history_rows(keys: dict, seed: int, history: list[dict]) -> list[dict]:
    """The ``history`` rows of one model (no provenance): its cell keys (CellSpec.keys()) and seed, then per
    epoch of ``history`` (TrainResult.history, or a cohort member's) the columns of HISTORY_COLUMNS; a
    column an entry lacks (test_* between evaluations, a cohort's history without them) is null."""
    return [{**keys, "seed": int(seed), **{c: entry.get(c) for c in HISTORY_COLUMNS}} for entry in history]


CURVE_HISTORY_COLUMNS = ("lr", "train_loss", "train_error", "objective")


def curve_history_rows(keys: dict, seed_a: int, seed_b: int, history: list[dict]) -> list[dict]:
    """The ``curve_history`` rows of one pair (no provenance) from CurveResult.history (epochs counted from 1,
    cumulative seconds): epoch 0-based and seconds per epoch, as in the models' history table."""
    rows, before = [], 0.0
    for entry in history:
        seconds = float(entry["seconds"])
        rows.append({**keys, "seed_a": int(seed_a), "seed_b": int(seed_b), "epoch": int(entry["epoch"]) - 1,
                     **{c: entry.get(c) for c in CURVE_HISTORY_COLUMNS}, "seconds": seconds - before})
        before = seconds
    return rows


def load_trained(cell: CellSpec, seed: int, state_dict: dict, data: Dataset, device: str) -> nn.Module:
    """A model of the cell with the given trained weights, on ``device``, in eval mode."""
    model = cell.build_model(seed, data)
    model.load_state_dict(state_dict)
    return model.to(device).eval()


def measured_on(cell: CellSpec) -> dict:
    """The pairs columns saying what a pair's numbers are measured on: mc_unit (the unit of mode_connectivity:
    "percentage points" of train error, or "nats" of train loss with metrics.curve.mc_on: loss) and
    cka_probe_maker and cka_probe_pool (the hook that made the CKA probes, and from which inputs)."""
    return {"mc_unit": MC_ON[cell.curve.mc_on], "cka_probe_maker": cell.cka.probe_maker,
            "cka_probe_pool": cell.cka.probe_pool}


def pair_rows(cell: CellSpec, seed_a: int, seed_b: int, curve, cka: tuple, l2: float | None, curve_config,
              device: str, started_at: datetime) -> tuple[dict, list[dict]]:
    """The ``pairs`` row (without times) and the ``curves`` rows of one connected pair: curve a CurveResult,
    cka (value or None, status). A curve whose error is not finite marks the pair diverged."""
    keys = cell.keys()
    measured = {"mode_connectivity": curve.mode_connectivity, "cka": cka[0], "l2_distance": l2}
    row = {
        **keys, "seed_a": seed_a, "seed_b": seed_b, "status": curve.status, "error": curve.error,
        **{s.name: _finite_or_none(measured[s.name]) for s in BUILTINS.per("pair")},
        "t_star": _finite_or_none(curve.t_star), "cka_status": cka[1],
        "curve_epochs": int(curve_config.epochs), "curve_lr": float(curve_config.lr),
        "curve_points": int(curve_config.points), "cka_probe_size": int(cell.cka.probes),
        "cka_probe_seed": int(cell.cka.probe_seed), "device": device, "started_at": started_at,
        **measured_on(cell),
    }
    curve_rows = [
        {**keys, "seed_a": seed_a, "seed_b": seed_b, "t": float(t), "train_error": float(e),
         "train_loss": float(tl), "test_error": float(te), "test_loss": float(tel)}
        for t, e, tl, te, tel in zip(curve.ts, curve.train_error, curve.train_loss, curve.test_error, curve.test_loss)
    ]
    if row["status"] == "ok" and row["mode_connectivity"] is None:
        row["status"], row["error"] = "diverged", "non-finite error along the curve"
    return row, curve_rows


def measure_pair(spec: PairSpec, state_a: dict, state_b: dict) -> PairOutcome:
    """Connect two trained models of a cell and compare them.

    state_a, state_b: the state dicts of seeds ``spec.seed_a`` and ``spec.seed_b``. A curve whose training
    diverges gives status "diverged" (mode connectivity null, CKA and L2 still measured).
    """
    started_at = utc_now()
    started = time.perf_counter()
    cell = spec.cell
    seed_a, seed_b = sorted((int(spec.seed_a), int(spec.seed_b)))
    if (seed_a, seed_b) != (int(spec.seed_a), int(spec.seed_b)):
        state_a, state_b = state_b, state_a
    data = cell.data()
    data_dev = data.to(spec.device)
    model_a = load_trained(cell, seed_a, state_a, data, spec.device)
    model_b = load_trained(cell, seed_b, state_b, data, spec.device)

    probes = make_probes(cell.cka.probe_maker, probe_pool(data_dev, cell.cka.probe_pool), cell.cka.probes,
                         cell.cka.probe_seed)
    cka, cka_status = cka_or_reason(softmax_outputs(model_a, probes), softmax_outputs(model_b, probes))
    l2 = l2_distance(model_a, model_b)

    curve_config = dataclasses.replace(cell.curve, device=spec.device)
    curve = connect_models(model_a, model_b, data_dev, curve_config)
    row, curve_rows = pair_rows(cell, seed_a, seed_b, curve, (cka, cka_status), l2, curve_config, spec.device,
                                started_at)
    row["wall_seconds"] = time.perf_counter() - started
    row["finished_at"] = utc_now()
    return PairOutcome(row=row, curve_rows=curve_rows,
                       history_rows=curve_history_rows(cell.keys(), seed_a, seed_b, curve.history))
