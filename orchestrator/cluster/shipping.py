"""The user's own code goes with the sweep: the modules a config names travel to the Ray workers.

    user_module_paths(cfg) -> [path, ...]     the files / top-level package folders of the config's
                                              ``module:function`` references (workloads/plugins.py)
    runtime_env(cfg) -> dict | None           Ray's runtime environment shipping them (``py_modules``)

``landscape run`` (and ``resume``) starts or joins Ray with this runtime environment, so the workers import the
user's ``mynets.py`` whether they run on this machine or on the nodes of a cluster, without installing it
there. What is shipped is what the driver would import (plugins.module_origin: for `run` the working directory of
the command, then PYTHONPATH; for `resume` PYTHONPATH and its --code-dir folders): a single file as itself, a
module inside a package as the whole top-level package.
Not shipped: the landscape package's own modules, and code installed in site-packages (an installed package,
e.g. one declaring an entry point of ``landscape.models``, must be installed on every node: Ray's ``pip``
runtime environment or the cluster's image).
"""

from __future__ import annotations

import os
import sysconfig

from workloads.plugins import is_reference, module_origin, split_reference, worker_environment

OWN_PACKAGES = ("workloads", "orchestrator", "analysis")  # installed with landscape on every node


def _installed(path: str) -> bool:
    """Whether ``path`` lies in an installed location (site-packages, the standard library)."""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(r) + os.sep) for r in roots) or "site-packages" in real.split(os.sep)


def referenced_modules(cfg) -> list[str]:
    """Top-level module names of the config's ``module:function`` references (model, dataset, probe maker)."""
    names = [cfg.workload.model, cfg.workload.dataset, *probe_references(cfg)]
    out = []
    for name in names:
        if is_reference(name):
            top = split_reference(name)[0].split(".")[0]
            if top not in out and top not in OWN_PACKAGES:
                out.append(top)
    return out


def probe_references(cfg) -> list[str]:
    """The CKA probe maker when it is the user's code (an empty list before probe makers existed)."""
    maker = getattr(cfg.metrics.cka, "probe_maker", None)
    return [maker] if isinstance(maker, str) else []


def user_module_paths(cfg) -> list[str]:
    """The file or package folder of each referenced module that is not installed (see the module doc)."""
    paths = []
    for module in referenced_modules(cfg):
        origin = module_origin(module)
        if origin and not _installed(origin) and origin not in paths:
            paths.append(os.path.abspath(origin))
    return paths


def runtime_env(cfg) -> dict | None:
    """Ray's runtime environment that ships the user's modules to every worker, or None when there are none;
    under `resume`, it also tells the workers not to import users' code from the driver's working directory
    (which Ray puts on their sys.path: workloads/plugins.py worker_environment)."""
    out = {}
    paths = user_module_paths(cfg)
    if paths:
        out["py_modules"] = paths
    env = worker_environment()
    if env:
        out["env_vars"] = env
    return out or None
