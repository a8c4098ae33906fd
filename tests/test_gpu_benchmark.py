"""benchmarks/gpu.py: says so and exits 0 at once without CUDA; its whole logic runs in a CPU dry run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import hygienic_env

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the benchmark would run")
def test_without_cuda_it_says_so_and_exits_0_quickly(ray_tmpdir):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, env=hygienic_env(ray_tmpdir), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30


@pytest.mark.ray
@pytest.mark.slow
def test_cpu_dry_run_exercises_every_step(ray_tmpdir):
    proc = subprocess.run([sys.executable, SCRIPT, "--cpu-dry-run"], capture_output=True, text=True,
                          env=hygienic_env(ray_tmpdir), timeout=300)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = proc.stdout
    assert "BAD" not in out and out.count("  ok  ") == 5, out
    assert "TFLOP/s sustained" in out and "ms/step" in out
    assert "trials at once: 4 at width 8, 16 (1 CPU + 0.25 GPU each)" in out, out
    assert "4/4 models and 2/2 pairs ok" in out and "models/hour" in out, out
    assert "devices: cpu (Ray GPU 0 has no CUDA)" in out  # the fake GPU: no CUDA, recorded as such
    assert "GPU utilisation:" in out and "Summary (for the README)" in out
    # Step 4: every (k, batch) one at a time and as a cohort, the variants at the variant batch; no peak on a CPU.
    assert "4. Cohorts vs one at a time" in out and "no known peak for this device" in out
    assert "host synchronisations in 64 cohort steps: n/a (no CUDA)" in out
    for batch in (16, 32):
        assert f"ResNet18 k=2   batch {batch:<5} one at a time" in out, out
        assert out.count(f"k=2   batch {batch:<5} cohort of 2") == 1, out
    assert "cohort, torch.func" in out and "cohort, bf16" in out and "does not fit" not in out
    assert len(re.findall(r"cohort of 2 +: [\d,]+ images/s, x\d+\.\d\d one at a time", out)) == 2, out
