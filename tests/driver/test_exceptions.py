"""Every exception class of the package survives a real process boundary: Ray and multiprocessing pickle
a worker's exception to hand it to the driver, and one that cannot be rebuilt arrives as "TypeError:
__init__() missing 3 required positional arguments" (UnknownNameError did) instead of its own message.

The classes are found by walking the packages, so a new exception class is checked without being listed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from tests.helpers import REPO_ROOT

PACKAGES = ("workloads", "orchestrator", "analysis")


def package_exceptions() -> list[type]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found.append(obj)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


SAMPLES = {"str": "sample text", "int": 7, "float": 2.5, "list": ["alpha", "beta"], "dict": {"a": 1}}


def sample(cls: type) -> BaseException:
    """An instance built from the constructor's signature (the package's own __init__, if it has one)."""
    own = next((k for k in cls.__mro__ if "__init__" in vars(k) and k.__module__.split(".")[0] in PACKAGES), None)
    if own is None:
        return cls(f"sample {cls.__name__} message")
    args = []
    for p in list(inspect.signature(own.__init__).parameters.values())[1:]:
        if p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = str(p.annotation)
        args.append(next((v for k, v in SAMPLES.items() if k in hint), f"sample {p.name}"))
    return cls(*args)


# The child: unpickles each exception it is sent (as a driver receives a worker's), and pickles it back.
CHILD = """
import base64, pickle, sys
for line in sys.stdin:
    try:
        exc = pickle.loads(base64.b64decode(line))
        print("ok", base64.b64encode(pickle.dumps(exc)).decode(), flush=True)
    except BaseException as err:
        print("error", base64.b64encode(repr(err).encode()).decode(), flush=True)
"""


def test_the_package_defines_the_exceptions_this_test_is_about():
    names = {c.__name__ for c in package_exceptions()}
    assert {"UnknownNameError", "ConfigError", "TableError", "RunDirError", "PlanError", "TrainingOOMError",
            "CurveDiverged", "DatasetNotFoundError", "StorageFullError", "ResumeStateError"} <= names, names


def test_every_exception_of_the_package_crosses_a_process_boundary():
    """Each exception goes to a fresh interpreter and back, pickled both ways; it must arrive as itself."""
    import base64
    import os
    import pickle
    import subprocess
    import sys

    exceptions = [sample(cls) for cls in package_exceptions()]
    lines = "".join(base64.b64encode(pickle.dumps(e)).decode() + "\n" for e in exceptions)
    root = REPO_ROOT
    child = subprocess.run([sys.executable, "-c", CHILD], input=lines, capture_output=True, text=True, timeout=120,
                           cwd=root, env={**os.environ, "PYTHONPATH": root})
    answers = child.stdout.splitlines()
    assert len(answers) == len(exceptions), child.stderr
    broken = []
    for exc, answer in zip(exceptions, answers):
        kind, data = answer.split(" ", 1)
        if kind == "error":
            broken.append(f"{type(exc).__name__}: the child could not rebuild it: {base64.b64decode(data).decode()}")
            continue
        try:
            back = pickle.loads(base64.b64decode(data))
        except Exception as err:  # noqa: BLE001 - whatever breaks is the finding
            broken.append(f"{type(exc).__name__}: could not be rebuilt here: {err!r}")
            continue
        if type(back) is not type(exc) or str(back) != str(exc):
            broken.append(f"{type(exc).__name__}: sent {str(exc)!r}, got {type(back).__name__}: {back}")
    assert not broken, broken


@pytest.mark.parametrize("cls_name", ["UnknownNameError", "CurveDiverged"])
def test_attributes_survive_too(cls_name):
    import pickle

    cls = next(c for c in package_exceptions() if c.__name__ == cls_name)
    exc = sample(cls)
    back = pickle.loads(pickle.dumps(exc))
    assert vars(back) == vars(exc)
