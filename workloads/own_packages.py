"""The tool's own top-level packages always come from where the tool is installed, never from the user's folder.

Their names are common words (``analysis``, ``workloads``), and a researcher's ``analysis.py`` sits in the
folder they run `landscape` from. That folder gets ahead of the installed packages in three ways: Python puts
it first for ``python -c`` and ``python script.py``; plug-in lookups append it to sys.path (workloads/plugins.py),
which is searched before an editable install's finder; and Ray inserts the driver's working directory at the
front of every worker's sys.path. Each of these made ``import analysis.tables`` find the user's module.

:func:`pin` puts a finder first on ``sys.meta_path`` that looks the tool's names up in the folder holding the
tool (and nowhere else); every other name is imported as Python always does. orchestrator/__init__.py calls it,
so the driver and every Ray worker (whose first import of the tool is an orchestrator module) are pinned before
``analysis`` or ``workloads`` is imported.

Plain Python: the lowest layer may use it, and it must import nothing of the tool's.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

OWN_PACKAGES = ("analysis", "landscape", "orchestrator", "workloads")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder holding workloads/: the tool's


class OwnPackagesFinder:
    """A meta path finder for the tool's top-level packages only, looked up in ROOT."""

    root = ROOT

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in OWN_PACKAGES:
            return None  # sub-modules follow their package's __path__; other names are not ours
        return importlib.machinery.PathFinder.find_spec(fullname, [cls.root])

    @classmethod
    def invalidate_caches(cls):
        pass


def pin() -> None:
    """Install OwnPackagesFinder first on sys.meta_path (once per process)."""
    if OwnPackagesFinder not in sys.meta_path:
        sys.meta_path.insert(0, OwnPackagesFinder)


def clash(module_name: str, folder: str | None = None) -> str | None:
    """Why a ``module:function`` reference to ``module_name`` cannot mean the user's module, or None.

    A reference into the tool's own packages (``workloads.models:build_mlp``) is fine; but when the user's
    folder (default: the working directory, where plug-ins are looked up) holds a module of one of the tool's
    names, the reference would silently reach the tool's package instead of theirs."""
    top = module_name.split(".")[0]
    folder = os.path.realpath(folder or os.getcwd())
    if top not in OWN_PACKAGES or folder == os.path.realpath(ROOT):
        return None
    for candidate in (f"{top}.py", os.path.join(top, "__init__.py")):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return (f"your {path} has the name of landscape's own package {top!r} ({', '.join(OWN_PACKAGES)} are "
                    f"landscape's), which is always imported in its place; rename your module (e.g. my_{top}.py) "
                    f"and the reference")
    return None
