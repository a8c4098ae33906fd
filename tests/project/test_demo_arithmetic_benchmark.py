"""benchmarks/demo_arithmetic.py: its FLOP model against hand counts and torch's FLOP counter on the project's own
training and Hessian code, its count of a run's tables, its reading of a run's records, and a whole run of it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "demo_arithmetic.py")
LAYOUT = [(8, 40), (8, 8), (10, 8)]  # MLP 40-8-8-10: 320 + 64 + 80 = 464 multiply-adds per example


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("demo_arithmetic_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flop_model_on_hand_counted_shapes(bench):
    assert bench.mlp_layout(40, 8, 2, 10) == LAYOUT
    assert bench.forward_flops(LAYOUT) == 2 * 464
    assert bench.train_flops(LAYOUT) == 6 * 464 - 2 * 320  # the first layer computes no input gradient
    assert bench.hvp_flops(LAYOUT) == 12 * 464 - 8 * 320
    assert bench.hessian_products(25, 3, 20) == 28 and bench.hessian_products(7, 3, 20) == 23


def test_the_flop_model_is_what_torch_counts_in_the_projects_training_and_hessian_code(bench):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from workloads import objective
    from workloads.metrics.hessian import HessianOperator
    from workloads.models import build_mlp

    model = build_mlp(width=8, num_classes=10, input_shape=(40,), depth=2)
    params = list(model.parameters())
    x, y = torch.randn(50, 40), torch.randint(0, 10, (50,))
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    assert counter.get_total_flops() == 50 * bench.forward_flops(LAYOUT)
    with counter:
        torch.autograd.grad(objective.mean_loss(model(x), y), params)
    assert counter.get_total_flops() == 50 * bench.train_flops(LAYOUT)
    op = HessianOperator(model, params, x, y)  # the gradient graph, built once
    with counter:
        op(torch.randn(op.dim))
    assert counter.get_total_flops() == 50 * bench.hvp_flops(LAYOUT)


def test_hessian_products_are_the_products_the_estimator_counts(bench):
    import torch

    from workloads.metrics.hessian import DEFLATION_STEPS, estimate_hessian
    from workloads.models import build_mlp

    torch.manual_seed(0)
    model = build_mlp(width=8, num_classes=10, input_shape=(40,), depth=2)
    x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))
    # λ_max converged before the deflation's minimum of Lanczos steps (10 < 20), and never (tol 0: the cap, 30)
    iterations = []
    for tol, max_iter in ((1e-3, 100), (0.0, 30)):
        est = estimate_hessian(model, x, y, eigen_tol=tol, eigen_max_iter=max_iter, trace_max_probes=10)
        assert bench.hessian_products(est.eigen_iterations, est.trace_probes, DEFLATION_STEPS) == est.hvps
        iterations.append(est.eigen_iterations)
    assert iterations[0] < DEFLATION_STEPS < iterations[1] == 30


def test_stage_flops_of_hand_made_tables(bench):
    cell = dict(load_value=8.0, temperature_value=0.001)
    models = pd.DataFrame([
        dict(cell, seed=0, status="ok", train_size=100, epochs_completed=2, hessian_samples=50,
             hessian_eigen_iterations=25, hessian_trace_probes=3),
        dict(cell, seed=1, status="diverged", train_size=100, epochs_completed=1, hessian_samples=None,
             hessian_eigen_iterations=None, hessian_trace_probes=None),
    ])
    history = pd.DataFrame([dict(cell, seed=0, epoch=0, test_loss=None), dict(cell, seed=0, epoch=1, test_loss=1.0),
                            dict(cell, seed=1, epoch=0, test_loss=2.0)])
    pairs = pd.DataFrame([dict(cell, seed_a=0, seed_b=1, status="ok", curve_epochs=2, curve_points=3,
                               cka_probe_size=10),
                          dict(cell, seed_a=0, seed_b=2, status="failed", curve_epochs=None, curve_points=None,
                               cka_probe_size=None)])
    got = bench.stage_flops(models, history, pairs, {(8.0, 0.001): (LAYOUT, 32)}, curve_batch=64, test_size=20,
                            deflation_steps=20)
    train, forward, hvp = 2144, 928, 3008  # 6*464 - 640, 2*464, 12*464 - 2560
    assert got == {
        "training": (2 + 1) * 3 * 32 * train,  # floor(100 / 32) = 3 steps of 32 per epoch; the diverged one's too
        "test evaluations": 2 * 20 * forward,  # the history rows with a test loss
        "final evaluation": (100 + 20) * forward,  # the ok model only
        "Hessian": 50 * (train + (25 + 3) * hvp),
        "curve training": 2 * 1 * 64 * train,
        "curve evaluation": 3 * (100 + 20) * forward,
        "CKA probes": 2 * 10 * forward,
    }


def test_recorded_times_of_a_run_dir(bench, tmp_path):
    run = tmp_path / "run"
    (run / "tune" / "exp").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": "x", "created_at": "2026-12-08T00:00:00+00:00"}))
    created = 1796688000.0  # 2026-12-08T00:00:00Z
    (run / "tune" / "exp" / "experiment_state-1.json").write_text(json.dumps({"stats": {"start_time": created + 6}}))
    (run / "report.html").write_text("")
    for path in (run / "run.json", run / "tune" / "exp" / "experiment_state-1.json"):
        os.utime(path, (created + 50, created + 50))
    os.utime(run / "report.html", (created + 300, created + 300))
    wall, start_up, experiments = bench.recorded_times(str(run))
    assert (wall, start_up, experiments) == (pytest.approx(300), pytest.approx(6), 1)


@pytest.mark.slow
@pytest.mark.ray
def test_a_whole_run_of_the_smoke_config_prints_the_ratio(short_tmp):
    """Default mode: `landscape run smoke` timed in a subprocess (a private local Ray), then counted and compared."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TMPDIR=short_tmp)
    proc = subprocess.run([sys.executable, SCRIPT, "--config", "smoke", "--keep", os.path.join(short_tmp, "run")],
                          env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "(smoke: 8 models, 4 pairs)" in out and "fp32 peak, torch.mm 2048^2:" in out, out
    assert re.search(r"models: train_seconds +\S+ +\S+ +\d+\.\d +\d", out), out
    found = re.search(r"= (\S+) / \((\S+) \+ (\S+)\) = (\S+): (PASS|FAIL)", out)
    assert found, out
    wall, arithmetic, fixed, ratio = map(float, found.groups()[:4])
    assert wall > fixed > 0 and arithmetic > 0
    assert ratio == pytest.approx(wall / (arithmetic + fixed), rel=0.02)  # the figures are printed rounded
    assert (found[5] == "PASS") == (ratio <= 2.0)
    assert "wall of `landscape run smoke` timed here" in out and "load average at the end" in out, out
