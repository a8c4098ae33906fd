"""Where workloads/cohort_experiment.py imports connect_cohort from; the curves of P >= 1 pairs, connect_cohort
included, are workloads/metrics/connectivity.py. (This module goes when that import names connectivity.py.)"""

from workloads.metrics.connectivity import connect_cohort

__all__ = ["connect_cohort"]
