"""Landscape metrics, one small module each (pure PyTorch).

Per model:   hessian_top_eigenvalue, hessian_trace, estimate_hessian (both at once, with iterations used)
Per pair:    linear_cka (on mixup_probes shared by a cell), mode_connectivity along a trained Bezier
             curve (connect_models), l2_distance
"""

from workloads.metrics.cka import CKAUndefined, cka_or_reason, gram_linear_cka, linear_cka, mixup_probes, softmax_outputs
from workloads.metrics.connectivity import (
    BezierCurve,
    CurveConfig,
    CurveDiverged,
    CurveResult,
    connect_models,
    evaluate_curve,
    mode_connectivity,
    recompute_bn,
    train_curve,
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
    "BezierCurve",
    "CKAUndefined",
    "CurveConfig",
    "CurveDiverged",
    "CurveResult",
    "HessianEstimate",
    "cka_or_reason",
    "connect_models",
    "estimate_hessian",
    "evaluate_curve",
    "gram_linear_cka",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "l2_distance",
    "linear_cka",
    "mixup_probes",
    "mode_connectivity",
    "recompute_batchnorm",
    "recompute_bn",
    "softmax_outputs",
    "train_curve",
]
