"""benchmarks/gpu.py: says so and exits 0 at once without CUDA; its whole logic runs in a CPU dry run on an
interpreter where Ray, yaml, click, pyhessian, mnist1d, sklearn and torchvision cannot be imported (the GPU
machine's bare image); its grid of the paper equals the built-in config and its projection estimate.py's."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import hygienic_env
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.py")
ABSENT = ("ray", "yaml", "click", "pyhessian", "mnist1d", "sklearn", "torchvision", "scipy")
# Run the script as on the bare GPU machine: a None in sys.modules is what an uninstalled package looks like to
# both `import` (ModuleNotFoundError) and importlib.util.find_spec (None); afterwards, say whether any got in.
BARE = (
    "import runpy, sys\n"
    f"for name in {ABSENT!r}: sys.modules[name] = None\n"
    "sys.argv = [{script!r}] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_path({script!r}, run_name='__main__')\n"
    "finally:\n"
    f"    print('IMPORTED:', sorted(n for n in {ABSENT!r} if sys.modules.get(n) is not None))\n"
)


def run_bare(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-c", BARE.format(script=SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def load_script():
    """benchmarks/gpu.py as a module (benchmarks/ is not a package), loaded once."""
    if "gpu_benchmark" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_benchmark"] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules["gpu_benchmark"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the benchmark would run")
def test_without_cuda_it_says_so_and_exits_0_quickly(ray_tmpdir):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, env=hygienic_env(ray_tmpdir),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


def test_cpu_dry_run_reaches_its_summary_without_ray_yaml_click_pyhessian_mnist1d(tmp_path):
    rates = tmp_path / "rates.json"
    proc = run_bare("--cpu-dry-run", "--rates-out", str(rates), "--with-sweep")
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    assert "IMPORTED: []" in out and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "FAILED" not in out and "skipped (budget)" not in out, out
    # Step 1: every (k, batch) of the dry grid, one at a time and as a cohort of 2, training steps only.
    for width in (1, 2):
        for batch in (4, 8):
            assert re.search(rf"k={width} +batch {batch} +one at a time +plain +: +[\d.]+ ms/step", out), out
            assert re.search(rf"k={width} +batch {batch} +cohort of 2 +plain +: +[\d.]+ ms/step.*"
                             r"x\d+\.\d\d images/s vs one at a time", out), out
    # Step 4: evaluation timed apart; step 5: each variant against the plain step, both sides.
    assert len(re.findall(r"evaluating 32 images: [\d.]+ s per model one at a time, [\d.]+ s per model in a "
                          r"cohort of 2", out)) == 2, out
    for variant in ("bf16", "channels_last", "cudnn.benchmark"):
        for side in ("one at a time", "cohort of 2"):
            assert re.search(rf"k=1 +batch 4 +{side} +{re.escape(variant)} *: .* x\d+\.\d\d vs plain", out), out
    assert "CUDA graphs" not in out  # no compilation in the dry run
    # Step 5: the memory of a request, as the cohort a sweep forms there (no peak to read on a CPU).
    assert "k=2   batch 8 (a cohort of 2, GPU share 0.5 each): peak n/a (no CUDA); A10G share 1 = 24 GiB" in out, out
    # Steps 2 and 3: the rates file that estimate.py reads, with the cohort's rates, and the projection.
    assert f"rates written to {rates}" in out
    data = json.loads(rates.read_text())
    assert data["format"] == "landscape-gpu-rates" and data["cohort"]["members"] == 2
    from orchestrator.planning.estimate import measured_basis

    basis = measured_basis(str(rates))
    assert basis.cohort is not None and basis.cohort.sustained_flops > 0 and basis.step_overhead_s > 0
    assert re.search(r"with its cohorts \(execution.cohort auto\), measured rates: ~[\d,]+ GPU-hours", out), out
    assert re.search(r"assumed A10G rates .*: ~37\d GPU-hours", out), out
    # --with-sweep without Ray: a note, not a crash; then the summary.
    assert "with-sweep: skipped: needs ray, yaml, click, not installed here" in out
    assert "Summary (for docs/benchmarks.md)" in out and "host synchronisations in 64 steps: n/a (no CUDA)" in out


def test_a_short_budget_skips_measurements_with_a_note_and_still_reaches_the_summary(tmp_path):
    rates = tmp_path / "rates.json"
    proc = run_bare("--cpu-dry-run", "--budget-s", "1", "--rates-out", str(rates))
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    assert "skipped (budget): k=1 batch 4 one at a time" in out and "skipped for the budget (" in out, out
    assert "rates NOT written (too few measurements)" in out and not rates.exists()
    assert "Summary (for docs/benchmarks.md)" in out and "assumed A10G rates" in out


def test_the_paper_grid_table_is_the_built_in_config():
    from orchestrator.config import load_config
    from workloads.dataset_facts import DATASET_FACTS

    grid = load_script().PAPER_GRID
    cfg = load_config(grid["config"], check_data=False).with_gpus_available(True)
    facts = DATASET_FACTS[cfg.workload.dataset]
    assert (cfg.workload.model, facts.train_size, facts.test_size) == (grid["model"], grid["train_size"],
                                                                        grid["test_size"])
    assert tuple(cfg.load.values) == grid["widths"] and tuple(cfg.temperature.values) == grid["batches"]
    assert (cfg.load.name, cfg.temperature.name) == ("width", "batch_size")
    assert len(cfg.seeds) == grid["seeds"] and len(cfg.seed_pairs()) == grid["seed_pairs"]
    assert cfg.training.epochs == grid["epochs"]
    h, c = cfg.metrics.hessian, cfg.metrics.curve
    assert (h.samples, h.eigen_max_iter, h.trace_max_probes) == (
        grid["hessian_samples"], grid["hessian_eigen_max_iter"], grid["hessian_trace_max_probes"])
    assert (c.epochs, c.batch_size, c.points) == (grid["curve_epochs"], grid["curve_batch"], grid["curve_points"])
    for width in grid["widths"]:
        share = grid["gpu_share_by_width"].get(width, grid["gpu_share"])
        assert cfg.trial_gpu(width) == share and cfg.pair_resources(width)["gpu"] == share, width


def test_the_projection_is_estimate_py_s_estimate_of_the_built_in_config():
    from orchestrator.config import load_config
    from orchestrator.planning.estimate import DEFAULT_GPU, estimate_gpu_hours
    from orchestrator.planning.gpu_rates import CohortRates

    gpu = load_script()
    cfg = load_config("paper-width-batch", check_data=False)
    off = load_config("paper-width-batch", ["execution.cohort=off"], check_data=False)
    measured = dataclasses.replace(DEFAULT_GPU, name="t", sustained_flops=1e14, step_overhead_s=6e-3,
                                   cohort=CohortRates(5, 8e13, 7e-3))
    for basis in (DEFAULT_GPU, measured):
        model_h, pair_h = gpu.project_paper_grid(basis)
        est = estimate_gpu_hours(cfg, basis)
        assert (model_h, pair_h) == pytest.approx((est.model_gpu_hours, est.pair_gpu_hours), rel=1e-9)
        model_h, pair_h = gpu.project_paper_grid(basis, cohorts=False)
        est = estimate_gpu_hours(off, basis)
        assert (model_h, pair_h) == pytest.approx((est.model_gpu_hours, est.pair_gpu_hours), rel=1e-9)
    # Measured cohort rates are used: a cohort step's fixed cost is shared by its members, its rate is its own.
    with_cohorts, without = sum(gpu.project_paper_grid(measured)), sum(gpu.project_paper_grid(measured, cohorts=False))
    assert with_cohorts != pytest.approx(without)
    cheap = dataclasses.replace(measured, cohort=CohortRates(5, 1e14, 1e-4))
    assert sum(gpu.project_paper_grid(cheap)) < without
    assert estimate_gpu_hours(cfg, cheap).gpu_hours < estimate_gpu_hours(off, cheap).gpu_hours
    # Unmeasured, cohorts are charged exactly what packed trials are: no gain credited.
    assert sum(gpu.project_paper_grid(DEFAULT_GPU)) == pytest.approx(sum(gpu.project_paper_grid(DEFAULT_GPU,
                                                                                                cohorts=False)))
    # Without packing credit every trial pays a whole GPU's fixed cost per step.
    assert sum(gpu.project_paper_grid(measured, cohorts=False, packed=False)) > without


def test_the_rate_fit_recovers_rates_from_exact_step_times_and_falls_back_on_nonsense():
    gpu = load_script()
    rate, fixed = 2e14, 5e-3
    points = [gpu.Timing(w, b, 1, gpu.PLAIN, step_s=fixed + f / rate, flops_per_step=f)
              for w, b, f in ((4, 16, 1e10), (16, 128, 1e12), (64, 1024, 5e13))]
    fitted_rate, fitted_fixed, how = gpu.fit_rates(points)
    assert fitted_rate == pytest.approx(rate, rel=1e-6) and fitted_fixed == pytest.approx(fixed, rel=1e-6)
    assert how.startswith("fitted to 3 points")
    # Longer steps for less work (noise): the fit's fixed cost or rate goes non-positive -> the anchors.
    odd = [gpu.Timing(1, 16, 1, gpu.PLAIN, step_s=0.010, flops_per_step=1e10),
           gpu.Timing(2, 16, 1, gpu.PLAIN, step_s=0.002, flops_per_step=1e12)]
    fitted_rate, fitted_fixed, how = gpu.fit_rates(odd)
    assert how.startswith("anchors") and fitted_rate == pytest.approx(1e12 / 0.002) and fitted_fixed == 0.002
    assert gpu.fit_rates(odd[:1]) is None
    assert gpu.fit_rates([dataclasses.replace(odd[0], step_s=None, error="does not fit"), odd[1]]) is None


def test_the_rates_file_round_trips_its_cohort_section_and_refuses_a_bad_one(tmp_path):
    from orchestrator.planning import estimate, gpu_rates

    path = tmp_path / "rates.json"
    gpu_rates.write_rates(str(path), "NVIDIA H100", 1e14, 6e-3, "2026-12-07", gpu_rates.CohortRates(5, 8e13, 7e-3))
    basis = estimate.measured_basis(str(path))
    assert basis.cohort == gpu_rates.CohortRates(5, 8e13, 7e-3) and "NVIDIA H100, measured 2026-12-07" in basis.name
    from orchestrator.config import load_config

    shown = estimate.estimate_gpu_hours(load_config("paper-width-batch", check_data=False), basis).summary()
    assert "measured 2026-12-07" in shown and "a cohort of 5: 80 TFLOP/s, 7 ms per step" in shown, shown
    data = json.loads(path.read_text())
    for cohort, words in (([1], "cohort must be an object"), ({"members": 1}, "cohort.members must be an integer"),
                          ({"members": 5, "sustained_flops": 0, "step_overhead_s": 1e-3},
                           "cohort: sustained_flops must be a positive number")):
        path.write_text(json.dumps({**data, "cohort": cohort}))
        with pytest.raises(estimate.RatesFileError, match=words) as info:
            estimate.measured_basis(str(path))
        assert "benchmarks/gpu.py" in str(info.value) and str(path) in str(info.value)
    del data["cohort"]  # a file without one (written before cohorts were measured) still reads
    path.write_text(json.dumps(data))
    assert estimate.measured_basis(str(path)).cohort is None


@pytest.mark.ray
@pytest.mark.slow
def test_cpu_dry_run_with_sweep_exercises_the_cuda_path_and_the_packed_sweep(ray_tmpdir):
    proc = subprocess.run([sys.executable, SCRIPT, "--cpu-dry-run", "--with-sweep", "--budget-s", "5"],
                          capture_output=True, text=True, env=hygienic_env(ray_tmpdir), timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = proc.stdout
    assert "BAD" not in out and out.count("  ok  ") == 5, out
    assert "trials at once: 4 at width 8, 16 (1 CPU + 0.25 GPU each)" in out, out
    assert "4/4 models and 2/2 pairs ok" in out and "models/hour" in out, out
    assert "devices: cpu (Ray GPU 0 has no CUDA)" in out  # the fake GPU: no CUDA, recorded as such
    assert "with-sweep: CUDA path ok; packed sweep" in out and "Summary (for docs/benchmarks.md)" in out
