"""Which code a sweep config names besides the tool's own, and where it would be imported from, WITHOUT importing it.

`landscape resume RUN_DIR` continues a run whose config.yaml anybody who can write that folder may have written.
Before it imports anything, it prints what this module finds: every ``module:function`` reference (workload
model and dataset, the CKA probe maker, metrics.extra) with the file it would be imported from (found the way
the import will look: plugins.code_from's path, never the working or the run directory on its own), and every
name that is an installed package's entry point. Built-ins (``mlp``, ``mnist1d``, ...) are the tool's own code
and are not listed.

    named_code(cfg) -> [(field, name, kind)]     the config's code that is not built in
    resume_notice(cfg, config_path) -> [line]    what resume prints (empty when the config names none)
"""

from __future__ import annotations

import importlib.metadata
import sys

from orchestrator.cluster.shipping import OWN_PACKAGES
from workloads.plugins import ENTRY_POINT_GROUPS, is_reference, module_origin, split_reference


def named_code(cfg) -> list[tuple[str, str, str]]:
    """(config field, name, plug-in kind) of each reference or entry-point name in ``cfg`` that is not built in."""
    from workloads.data import DATASETS
    from workloads.metrics.probes import PROBE_MAKERS
    from workloads.models import MODELS

    out = []
    for field, name, kind, registry in (("workload.model", cfg.workload.model, "model", MODELS),
                                        ("workload.dataset", cfg.workload.dataset, "dataset", DATASETS),
                                        ("metrics.cka_probe_maker", cfg.metrics.cka.probe_maker, "probes",
                                         PROBE_MAKERS)):
        if is_reference(name) or name not in registry:
            out.append((field, name, kind))
    out.extend(("metrics.extra", name, "metric") for name in cfg.metrics.extra)  # never built-in names
    return out


def where_from(name: str, kind: str) -> str:
    """Where ``name`` would be imported from, found without importing it."""
    if is_reference(name):
        module = split_reference(name)[0]
        top = module.split(".")[0]
        if top in OWN_PACKAGES:
            return f"module {module} of landscape itself"
        if top in sys.stdlib_module_names:
            return f"module {module} of Python's standard library: refused (no sweep code lives there)"
        origin = module_origin(top)
        if origin is None:
            return (f"module {module}: not found on PYTHONPATH or among the installed packages (resume does not "
                    f"look in the working directory or the run directory: --code-dir DIR names a folder)")
        return f"module {module} from {origin}"
    group = ENTRY_POINT_GROUPS[kind]
    matches = [ep for ep in importlib.metadata.entry_points(group=group) if ep.name == name]
    if not matches:
        return "not a built-in and no installed package declares it (resume stops with an error)"
    ep = matches[0]
    package = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
    return f"entry point {ep.value} of group {group}, installed by {package}"


def resume_notice(cfg, config_path: str) -> list[str]:
    """The lines `landscape resume` prints before it imports anything: the code ``cfg`` (read from
    ``config_path``) names, and where each comes from; no lines when it names only built-ins."""
    named = named_code(cfg)
    if not named:
        return []
    lines = [f"note: resume imports and runs the code that {config_path} names (a run directory's config is "
             f"whatever its last writer put there: resume only runs directories whose writers you trust):"]
    lines.extend(f"  {field} {name!r}: {where_from(name, kind)}" for field, name, kind in named)
    return lines
