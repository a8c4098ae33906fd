"""benchmarks/cohort.py runs (grid mode, the smoke config for one epoch) and reports MLP weights equal to rounding."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the script sets 1 thread; the fixture restores

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "cohort.py")


def test_grid_mode_times_both_ways_and_reports_the_differences(capsys):
    spec = importlib.util.spec_from_file_location("cohort_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["smoke", "--set", "training.epochs=1", "--singles"]) == 0
    out = capsys.readouterr().out
    assert "smoke: 8 models in 4 cohorts" in out and out.count("M=2 ") == 4, out
    assert "training: one at a time" in out and "speed-up x" in out and "cohort of one" in out, out
    # Batched and plain matrix products may sum in another order on another CPU (CI's gave 1.65e-07 after one
    # epoch, this machine 0): float rounding, not a different computation.
    found = re.search(r"weights (\S+) relative, test accuracy (\d+) test example", out)
    assert found and float(found[1]) <= 1e-5 and int(found[2]) <= 1, out


def test_fused_mode_times_the_engines_side_by_side(capsys, monkeypatch):
    """--fused at one small width (compiled with aot_eager: the same graph capture without ~20 s of C++)."""
    import torch

    from workloads import cohort_fused

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, dynamic=None: real_compile(
        fn, backend="aot_eager", dynamic=dynamic))
    monkeypatch.setattr(cohort_fused, "_COMPILED", {})
    spec = importlib.util.spec_from_file_location("cohort_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--fused", "--widths", "8", "--members", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch.mm 2048^2 fp32:" in out and "load average" in out, out
    found = re.search(r"w=8 .*grouped +\S+ ms/step .*fused +\S+ .*x\S+\) \| compiled .* (\S+) relative", out)
    assert found and float(found[1]) <= 1e-5, out  # the fused weights end where the grouped ones do, to rounding
    assert module.mlp_step_flops([(8, 40), (8, 8), (10, 8)], 64, 2) == 2 * 64 * (4 * 320 + 6 * 64 + 6 * 80)
