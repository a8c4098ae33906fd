"""What `pip install landscape` (not `-e`) and a cluster image built from the wheel get: every package and every
data file of the tool, found by setuptools' package discovery rather than a hand-kept list (which once left out
workloads/extra_metrics/: the spectral-norm metric and metric discovery vanished from every wheel).

The wheel is built offline from a copy of the source tree (no stale build/ folder can leak files into it); the
slow test installs it into a fresh virtual environment that does not see this repository at all and runs a
sweep there (tests/test_api.py: the same environment, through the Python API).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Top-level folders of the repository that are not part of the tool: they must stay out of the wheel.
NOT_SHIPPED = {"tests", "benchmarks", "scripts", "examples", "docs", "build", "dist", "runs"}
SKIPPED_NAMES = {"__pycache__", ".git", ".venv", "venv", ".pytest_cache"}


def _skipped(name: str) -> bool:
    return name in SKIPPED_NAMES or name.startswith(".") or name.endswith((".egg-info", ".pyc"))


def shipped_files() -> set[str]:
    """Every file of the tool's package folders (relative, '/'-separated): the top-level folders of the
    repository holding an __init__.py, but the ones in NOT_SHIPPED."""
    out = set()
    for top in sorted(os.listdir(ROOT)):
        if top in NOT_SHIPPED or _skipped(top) or not os.path.isfile(os.path.join(ROOT, top, "__init__.py")):
            continue
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if not _skipped(d)]
            out |= {os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/") for f in files
                    if not _skipped(f)}
    return out


def build_wheel(dest: str) -> str:
    """Build the wheel of a clean copy of the source tree into ``dest``, offline; returns its path."""
    source = os.path.join(dest, "source")
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [n for n in names if _skipped(n) or
                                                                  (folder == ROOT and n in {"build", "dist", "runs"})])
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--wheel-dir", dest, source], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = [n for n in os.listdir(dest) if n.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(dest, wheels[0])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(str(tmp_path_factory.mktemp("wheel")))


def test_the_wheel_holds_every_file_of_every_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    expected = shipped_files()
    # The folders this test must see, or it would pass on an empty list: the ones a hand-kept list forgot.
    assert {"workloads/extra_metrics/weight_spectral_norm.py", "orchestrator/configs/smoke.yaml",
            "analysis/report.css", "analysis/report.js"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing[:10]}: check [tool.setuptools] in pyproject.toml"
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {p.split("/")[0] for p in expected}, f"the wheel ships other top-level names: {sorted(tops)}"
    extra = sorted(n for n in names if not n.split("/")[0].endswith(".dist-info") and n not in expected)
    assert not extra, f"the wheel holds files that are not in the source tree: {extra[:10]}"
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "landscape = orchestrator.cli:main" in entry_points
