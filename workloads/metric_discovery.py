"""Which added metrics a run computes, and computing them: the package's own, plug-ins, entry points.

A run computes, besides the built-ins (workloads/metric_specs.py):
- every metric of the package's own ``workloads/extra_metrics/`` (one module each, found by pkgutil: adding a
  metric is adding its module);
- every metric its config names in ``metrics.extra``: ``"module:NAME"`` (NAME a MetricSpec in the user's
  module, found like a plug-in model: the working directory or PYTHONPATH) or the name of an entry point of
  the group ``landscape.metrics`` that an installed package declares (its object a MetricSpec). An installed
  entry point is computed only when a config names it, so installing a package never changes what a run does.

A metric does not change the other values of a row, so adding one keeps the config hash; ``landscape resume``
measures a metric that a finished model lacks from its saved weights (orchestrator/worker/trainable.py), never by
retraining. Only per-model metrics with a ``compute`` function can be added so far.

Torch-free at import: the compute functions are imported when a model is measured.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import math
import pkgutil

from workloads.metric_specs import MetricSet, MetricSpec
from workloads.plugins import (
    PluginError,
    entry_point,
    entry_point_names,
    import_user_module,
    is_reference,
    load_reference,
    split_reference,
)

PACKAGE = "workloads.extra_metrics"


@functools.lru_cache(maxsize=1)
def package_metrics() -> tuple[MetricSpec, ...]:
    """The ``METRIC`` of every module of workloads/extra_metrics/, in module-name order."""
    package = importlib.import_module(PACKAGE)
    specs = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        spec = getattr(module, "METRIC", None)
        if not isinstance(spec, MetricSpec):
            raise PluginError(f"metric module {module.__name__} must declare METRIC = MetricSpec(...)")
        specs.append(_checked(spec, module.__name__))
    return tuple(specs)


def resolve_metric(name: str) -> MetricSpec:
    """The MetricSpec a ``metrics.extra`` entry names; PluginError naming the problem and the fix."""
    if is_reference(name):
        module_name, attribute = split_reference(name)
        module = import_user_module(name, "metric")  # where and whether this command imports users' code
        obj = module
        for part in attribute.split("."):
            if not hasattr(obj, part):
                specs = sorted(n for n in dir(module) if isinstance(getattr(module, n), MetricSpec))
                close = difflib.get_close_matches(part, specs, n=1)
                hint = f"; did you mean '{module_name}:{close[0]}'?" if close else ""
                raise PluginError(f"metric {name!r}: {module_name} has no attribute {part!r}{hint} MetricSpecs "
                                  f"there: {', '.join(specs) or 'none'}")
            obj = getattr(obj, part)
        where = name
    else:
        obj = entry_point("metric", name)
        if obj is None:
            known = [s.name for s in package_metrics()] + entry_point_names("metric")
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(f"metrics.extra: {name!r} is neither 'module:NAME' nor an installed entry point of "
                              f"group landscape.metrics{hint}; installed: {', '.join(entry_point_names('metric')) or 'none'}")
        where = f"entry point {name!r}"
    if not isinstance(obj, MetricSpec):
        raise PluginError(f"metric {where} is a {type(obj).__name__}, not a workloads.metric_specs.MetricSpec")
    return _checked(obj, where)


def _checked(spec: MetricSpec, where: str) -> MetricSpec:
    if spec.per != "model" or not spec.compute:
        raise PluginError(f"metric {spec.name!r} ({where}): an added metric must be per model with a compute "
                          f"function ('module:function' called as fn(model, data)); per-pair metrics cannot be added yet")
    return spec


def run_metrics(extra: tuple[str, ...] | list[str] = ()) -> MetricSet:
    """The added metrics of a run whose config lists ``extra``: the package's own, then the named ones (a name
    given twice, or naming a package metric, counts once). PluginError / ValueError with the fix."""
    specs = {s.name: s for s in package_metrics()}
    for name in extra:
        spec = resolve_metric(name)
        if spec.name in specs and specs[spec.name] != spec:
            raise PluginError(f"metrics.extra: {name!r} declares metric {spec.name!r}, which another metric of "
                              f"this run already declares differently; give it another name")
        specs.setdefault(spec.name, spec)
    try:
        return MetricSet(tuple(specs.values()))
    except ValueError as exc:
        raise PluginError(f"metrics.extra: {exc}") from None


def missing_metrics(row: dict, specs) -> list[MetricSpec]:
    """The specs whose value ``row`` (a models row as a dict) lacks (absent or null)."""
    return [s for s in specs if row.get(s.name) is None or (isinstance(row[s.name], float) and math.isnan(row[s.name]))]


def measure_added(model, data, specs) -> dict:
    """{name: value} of each added metric of ``model`` (trained, eval mode, on its device) with ``data`` (the
    cell's Dataset on that device); a non-finite value is recorded as null."""
    out = {}
    for spec in specs:
        fn = load_reference(spec.compute, "metric")
        value = fn(model, data)
        value = None if value is None else float(value)
        out[spec.name] = value if value is not None and math.isfinite(value) else None
    return out
