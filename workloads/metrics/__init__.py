"""Landscape metrics, one small module each (pure PyTorch).

Per model:   hessian_top_eigenvalue, hessian_trace, estimate_hessian (both at once, with iterations used)
Per pair:    linear_cka (on mixup_probes shared by a cell), mode_connectivity along a trained Bezier
             curve (connect_models; P pairs at once: connectivity.connect_cohort), l2_distance
"""

from workloads.metrics.cka import CKAUndefined, linear_cka, mixup_probes
from workloads.metrics.connectivity import CurveConfig, CurveResult, connect_models, mode_connectivity
from workloads.metrics.distance import l2_distance
from workloads.metrics.hessian import HessianEstimate, estimate_hessian, hessian_top_eigenvalue, hessian_trace

__all__ = [
    "CKAUndefined",
    "CurveConfig",
    "CurveResult",
    "HessianEstimate",
    "connect_models",
    "estimate_hessian",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "l2_distance",
    "linear_cka",
    "mixup_probes",
    "mode_connectivity",
]
