"""The package's own added metrics: one module per metric, each declaring ``METRIC`` (a
workloads.metric_specs.MetricSpec whose ``compute`` names its function). workloads/metric_discovery.py finds
every module here with pkgutil, so adding a metric is adding its module (and its test); nothing else changes.

A module here must stay importable without torch at import time (import it inside the compute function): the
specs are read where torch is not loaded.
"""
