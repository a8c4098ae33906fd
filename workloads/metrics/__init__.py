"""Landscape metrics, one small module each (pure PyTorch).

Per model:   hessian_top_eigenvalue, hessian_trace, estimate_hessian (both at once, with iterations used)
Per pair:    linear_cka (on mixup_probes shared by a cell), mode_connectivity along a trained Bezier
             curve (connect_models; P pairs at once: connect_cohort), l2_distance
"""

from workloads.metrics.cka import CKAUndefined, cka_or_reason, linear_cka, mixup_probes, softmax_outputs
from workloads.metrics.connectivity import (
    CurveConfig,
    CurveDiverged,
    CurveResult,
    connect_cohort,
    connect_models,
    curve_cohort,
    evaluate_curves,
    mode_connectivity,
    train_curves,
)
from workloads.metrics.distance import l2_distance
from workloads.metrics.hessian import (
    HessianEstimate,
    estimate_hessian,
    hessian_top_eigenvalue,
    hessian_trace,
    recompute_batchnorm,
)

__all__ = [
    "CKAUndefined",
    "CurveConfig",
    "CurveDiverged",
    "CurveResult",
    "HessianEstimate",
    "cka_or_reason",
    "connect_cohort",
    "connect_models",
    "curve_cohort",
    "estimate_hessian",
    "evaluate_curves",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "l2_distance",
    "linear_cka",
    "mixup_probes",
    "mode_connectivity",
    "recompute_batchnorm",
    "softmax_outputs",
    "train_curves",
]
