"""What `pip install landscape` (not `-e`) and a cluster image built from the wheel get: every package and every
data file of the tool, found by setuptools' package discovery rather than a hand-kept list (which once left out
workloads/extra_metrics/: the spectral-norm metric and metric discovery vanished from every wheel).

The wheel is built offline from a copy of the source tree (no stale build/ folder can leak files into it); the
slow test installs it into a fresh virtual environment that does not see this repository at all and runs a
sweep there (tests/cli/test_api.py: the same environment, through the Python API).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import hygienic_env
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
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
            "analysis/report.css", "analysis/report.js", "analysis/templates/report.html.j2",
            "landscape/__init__.py"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing[:10]}: check [tool.setuptools] in pyproject.toml"
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {p.split("/")[0] for p in expected}, f"the wheel ships other top-level names: {sorted(tops)}"
    extra = sorted(n for n in names if not n.split("/")[0].endswith(".dist-info") and n not in expected)
    assert not extra, f"the wheel holds files that are not in the source tree: {extra[:10]}"
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "landscape = orchestrator.cli.main:main" in entry_points


def wheel_venv(folder: str, wheel: str) -> str:
    """A fresh virtual environment in ``folder`` holding the wheel, installed by pip as a user would; returns its
    python. It sees the dependencies (torch, ray, ...) of this interpreter's environment through a .pth file of
    plain paths: the .pth files there are not run, so the editable install's finder (which would import this
    repository's code for anything the wheel lacks) is not installed."""
    import site

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True, timeout=300)
    python = os.path.join(folder, "bin", "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    with open(os.path.join(purelib, "dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: never touch the editable install the dependencies' folder also shows.
    proc = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                           "--disable-pip-version-check", wheel], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python


# Run in the wheel's environment: where the tool's code comes from, and the run read back through the API.
WHERE_FROM = """
import json, sys
import landscape  # first: it pins the tool's packages, so the analysis.py in this folder is not imported
import analysis.tables, orchestrator.cli.main, workloads.extra_metrics
from workloads.metric_discovery import package_metrics
from workloads.metric_specs import BUILTINS

run = landscape.load_run(sys.argv[1])
ok = lambda df: df[df.status == "ok"]
print(json.dumps({
    "files": [m.__file__ for m in (analysis.tables, landscape, orchestrator.cli.main, workloads.extra_metrics)],
    "finders": [repr(f) for f in sys.meta_path],
    "metrics": {s.name: (s.per, int(ok(run.models if s.per == "model" else run.pairs)[s.name].notna().sum()))
                for s in BUILTINS.all + package_metrics()},
    "counts": [len(ok(run.models)), len(ok(run.pairs)), len(run.cells), sorted(set(run.cells.width.astype(int)))],
}))
"""


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_landscape_run_smoke_works_from_the_installed_wheel(wheel, tmp_path, ray_tmpdir):
    """`pip install landscape.whl` in a fresh environment, then `landscape run smoke` from a folder outside the
    repository (holding a researcher's own analysis.py): every metric, the package's added ones included, is in
    the run's tables, and the code that ran is the wheel's."""
    python = wheel_venv(str(tmp_path / "venv"), wheel)
    work = tmp_path / "work"
    work.mkdir()
    (work / "analysis.py").write_text("def summarize(df):\n    return df.describe()\n")
    env = hygienic_env(ray_tmpdir)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    proc = subprocess.run([os.path.join(os.path.dirname(python), "landscape"), "run", "smoke", "--out", "run"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=1700)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "sweep finished" in proc.stdout and "8/8 models, 4/4 pairs done" in proc.stdout, proc.stdout[-3000:]

    where = subprocess.run([python, "-c", WHERE_FROM, "run"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=600)
    assert where.returncode == 0, where.stderr[-3000:]
    found = json.loads(where.stdout.strip().splitlines()[-1])
    venv = os.path.realpath(tmp_path / "venv")
    assert all(os.path.realpath(f).startswith(venv + os.sep) for f in found["files"]), found["files"]
    assert not any("editable" in f.lower() for f in found["finders"]), found["finders"]
    assert found["metrics"].get("weight_spectral_norm") == ["model", 8], found["metrics"]
    missing = {name: n for name, (per, n) in found["metrics"].items() if n != (8 if per == "model" else 4)}
    assert not missing, f"metrics missing from rows of the run: {missing}"
    assert found["counts"] == [8, 4, 4, [8, 64]]
