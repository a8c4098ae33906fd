"""A practitioner's own trained models, measured as a sweep measures the models and pairs of one cell.

`landscape diagnose` (orchestrator/cli/diagnose.py) builds the models from the user's checkpoints and passes them
here; the numbers go on to analysis/placement.py, which places them on the taxonomy. The measurements are the
sweep's (workloads/experiment.py), with the same functions and settings:

    measure_model(model, data, hessian) -> dict          train/test loss and accuracy (full sets, eval mode),
                                                         Hessian lambda_max and trace on ``hessian_points``
    measure_pair(model_a, model_b, data, probes, curve)  CKA of softmax outputs on the shared mixup probes,
                         -> dict                         L2 distance, mode connectivity of a trained Bezier curve

Rows carry the columns of the ``models`` / ``pairs`` tables (analysis/tables.py) plus ``status``/``error``, so
the analysis reads them like a run's. Building a model or a data set from a name (built-in, ``module:function``
or an installed entry point; workloads/plugins.py's conventions) is here too:

    build_named_model(name, width=, num_classes=, input_shape=, model_args=) -> nn.Module
    load_named_dataset(name, root=, seed=, dataset_args=) -> Dataset

Pure PyTorch: no Ray, no storage; usable from a notebook.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from workloads.data import Dataset, load_dataset
from workloads.cohort_experiment import EVAL_BATCH_SIZE, hessian_points
from workloads.metrics.cka import cka_or_reason, softmax_outputs
from workloads.metrics.connectivity import CurveConfig, connect_models
from workloads.metrics.distance import l2_distance
from workloads.metrics.hessian import estimate_hessian
from workloads.models import count_parameters, seeded_model
from workloads.settings import HessianSettings
from workloads.train import evaluate

MODEL_INIT_SEED = 0  # the weights are replaced by a checkpoint's; the seed only keeps building reproducible


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def measure_model(model: nn.Module, data: Dataset, hessian: HessianSettings) -> dict:
    """One ``models`` row (metrics, num_params, status, error, metrics_seconds) of a trained model.

    data: on the model's device. A model whose weights or metrics are not finite gets status "diverged" (as
    in a sweep) with the reason in ``error`` and its metrics null.
    """
    started = time.perf_counter()
    row = {"num_params": count_parameters(model), "status": "ok", "error": None,
           **dict.fromkeys(("train_loss", "train_acc", "test_loss", "test_acc", "hessian_top_eigenvalue",
                            "hessian_trace", "hessian_samples", "hessian_eigen_iterations", "hessian_trace_probes"))}
    bad = [name for name, p in model.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad:
        row.update(status="diverged", error=f"the weights are not finite ({', '.join(bad[:3])})")
    else:
        train_loss, train_acc = evaluate_split(model, data.train_x, data.train_y)
        test_loss, test_acc = evaluate_split(model, data.test_x, data.test_y)
        hx, hy = hessian_points(data, hessian)
        est = estimate_hessian(
            model, hx, hy, backend=hessian.backend, eigen_tol=hessian.eigen_tol, eigen_max_iter=hessian.eigen_max_iter,
            trace_tol=hessian.trace_tol, trace_max_probes=hessian.trace_max_probes, seed=hessian.seed,
            batch_size=hessian.batch_size,
        )
        row.update(
            train_loss=_finite(train_loss), train_acc=float(train_acc), test_loss=_finite(test_loss),
            test_acc=float(test_acc), hessian_top_eigenvalue=_finite(est.top_eigenvalue),
            hessian_trace=_finite(est.trace), hessian_samples=int(est.samples),
            hessian_eigen_iterations=int(est.eigen_iterations), hessian_trace_probes=int(est.trace_probes),
        )
        missing = [k for k in ("train_loss", "test_loss", "hessian_top_eigenvalue", "hessian_trace") if row[k] is None]
        if missing:
            row.update(status="diverged", error=f"non-finite {', '.join(missing)}")
    row["metrics_seconds"] = time.perf_counter() - started
    return row


def evaluate_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy in nats, accuracy fraction): workloads.train.evaluate with the sweep's batch size."""
    return evaluate(model, x, y, batch_size=EVAL_BATCH_SIZE)


def measure_pair(model_a: nn.Module, model_b: nn.Module, data: Dataset, probes: torch.Tensor,
                 curve: CurveConfig) -> dict:
    """One ``pairs`` row (mode_connectivity, t_star, cka, cka_status, l2_distance, status, error, curve_epochs,
    curve_points, seconds) plus the curve itself (``curve_t``, ``curve_train_error`` in percent).

    probes: (m, *input_shape) mixup inputs shared by every pair (``mixup_probes``). curve.device must be the
    models' device. A curve whose training diverges gives status "diverged" and mc null; CKA and L2 are still
    measured. The models are not modified.
    """
    started = time.perf_counter()
    cka, cka_status = cka_or_reason(softmax_outputs(model_a, probes), softmax_outputs(model_b, probes))
    l2 = l2_distance(model_a, model_b)
    result = connect_models(model_a, model_b, data, curve)
    row = {
        "mode_connectivity": _finite(result.mode_connectivity) if result.mode_connectivity is not None else None,
        "t_star": _finite(result.t_star) if result.t_star is not None else None,
        "cka": _finite(cka) if cka is not None else None, "cka_status": cka_status,
        "l2_distance": _finite(l2), "status": result.status, "error": result.error,
        "curve_epochs": int(curve.epochs), "curve_points": int(curve.points),
        "curve_t": [float(t) for t in result.ts], "curve_train_error": [float(e) for e in result.train_error],
    }
    if row["status"] == "ok" and row["mode_connectivity"] is None:
        row.update(status="diverged", error="non-finite error along the curve")
    row["seconds"] = time.perf_counter() - started
    return row


# --------------------------------------------------------------------------------------------------------
# Models and data sets named by the user


def build_named_model(name: str, *, width: int, num_classes: int, input_shape: tuple,
                      model_args: dict | None = None) -> nn.Module:
    """The model ``name`` (built-in, ``module:function`` or entry point) under a fixed seed, on the CPU: the
    sweep's own workloads.models.build_model (a user's function is called as fn(width=, num_classes=,
    input_shape=, **model_args) and must return a torch.nn.Module; PluginError otherwise)."""
    return seeded_model(name, MODEL_INIT_SEED, width=int(width), num_classes=int(num_classes),
                        input_shape=tuple(input_shape), **dict(model_args or {}))


def load_named_dataset(name: str, *, root: str | None = None, seed: int = 0,
                       dataset_args: dict | None = None) -> Dataset:
    """The data set ``name`` (built-in, ``module:function`` or entry point) as CPU tensors: the sweep's own
    workloads.data.load_dataset (a user's function is called as fn(root=, seed=, **dataset_args) and returns a
    Dataset or (train_x, train_y, test_x, test_y); see workloads.data.user_dataset)."""
    return load_dataset(name, root, seed=int(seed), args=dataset_args)


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is usable, else "cpu"; anything else is checked (ValueError naming it)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    return device
