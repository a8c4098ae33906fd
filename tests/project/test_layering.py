"""The layering rule: workloads/ is pure PyTorch, analysis/ reads tables only, orchestrator/ alone uses Ray.

Checked two ways: statically (no import statement names the forbidden package) and dynamically
(importing every module of the package in a fresh interpreter leaves the forbidden package unloaded).
"""

import ast
import pathlib
import subprocess
import sys

import pytest
from tests.helpers import REPO_ROOT

ROOT = pathlib.Path(REPO_ROOT)

FORBIDDEN = {
    "workloads": {"ray"},
    "analysis": {"ray", "torch", "torchvision"},
}


def _imported_top_level_names(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_import_statements(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_top_level_names(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "layering violated:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_package_does_not_load_forbidden(package):
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / package).rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"loaded = sorted(n for n in {sorted(FORBIDDEN[package])!r} if n in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {package} loaded {out.stdout.strip()}"


def test_orchestrator_is_the_only_ray_importer():
    users = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {"tests", "benchmarks", ".venv", "venv", "build"}:
            continue
        if "ray" in _imported_top_level_names(path):
            users.add(rel.parts[0])
    assert users <= {"orchestrator"}, f"ray imported outside orchestrator/: {sorted(users)}"
