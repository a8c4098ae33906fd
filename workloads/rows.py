"""The table rows of one model and one pair, as the engine (workloads/cohort_experiment.py) fills them: the
``models`` row before and after its measurements, the ``pairs`` and ``curves`` rows of a connected pair, and the
``history`` / ``curve_history`` rows of their training. Plain dicts with the columns of analysis/tables.py,
without the provenance columns the caller adds. No training and no measuring here: what a row holds.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from torch import nn

from workloads.data import Dataset
from workloads.fingerprint import dataset_sha256
from workloads.metric_specs import BUILTINS
from workloads.models import count_parameters
from workloads.settings import MC_ON
from workloads.specs import CellSpec


def utc_now() -> datetime:
    """Now, timezone-aware in UTC: the started_at / finished_at of every result row."""
    return datetime.now(timezone.utc)


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


# What add_measurements fills: the per-model metrics the engine measures itself (workloads/metric_specs.py;
# train_loss_drop comes from the history, added metrics from their own compute functions), and the Hessian's
# bookkeeping.
MEASURED_MODEL_COLUMNS = (
    *(s.name for s in BUILTINS.per("model") if s.name != "train_loss_drop"),
    "hessian_samples", "hessian_eigen_iterations", "hessian_trace_probes",
)


def model_row(cell: "CellSpec", seed: int, data: Dataset, model: nn.Module, *, status: str, error: str | None,
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


def measured_on(cell: "CellSpec") -> dict:
    """The pairs columns saying what a pair's numbers are measured on: mc_unit (the unit of mode_connectivity:
    "percentage points" of train error, or "nats" of train loss with metrics.curve.mc_on: loss) and
    cka_probe_maker and cka_probe_pool (the hook that made the CKA probes, and from which inputs)."""
    return {"mc_unit": MC_ON[cell.curve.mc_on], "cka_probe_maker": cell.cka.probe_maker,
            "cka_probe_pool": cell.cka.probe_pool}


def pair_rows(cell: "CellSpec", seed_a: int, seed_b: int, curve, cka: tuple, l2: float | None, curve_config,
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
