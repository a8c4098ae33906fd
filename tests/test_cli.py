"""The `landscape` command line, run as a user runs it (subprocesses of the installed console script).

The integration test runs the built-in `smoke` config through `landscape run` on a private 2-CPU local
Ray and checks every table, every status, that no metric is silently null, the provenance of every row,
that pair jobs started before the last training finished, `landscape status`, the lock against a second
concurrent run on the same directory, and that `resume` of a finished run does nothing.
"""

from __future__ import annotations

import os
import subprocess
import time

import pandas as pd
import pytest
import yaml

from analysis.tables import CURVES_SCHEMA, MODELS_SCHEMA, PAIRS_SCHEMA, RunTables
from tests.conftest import assert_clean_error, hygienic_env, landscape_cmd, ray_processes_of


def landscape(*args, env=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(landscape_cmd() + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env or hygienic_env(), cwd=cwd)


# ---------------------------------------------------------------------------------------------------------
# Fast commands (no Ray)


def test_configs_lists_builtins_with_counts():
    proc = landscape("configs")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "8 models, 4 pairs" in lines["smoke"]
    assert "84 models, 84 pairs" in lines["demo"]


def test_validate_ok_and_errors(tmp_path):
    proc = landscape("validate", "smoke", "--set", "training.epochs=2")
    assert proc.returncode == 0 and proc.stdout.startswith("ok: smoke"), proc.stderr
    assert_clean_error(landscape("validate", "smoke", "--set", "training.epoch=2"), "did you mean 'training.epochs'")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "b", "load": {"name": "width", "values": []},
                                   "temperature": {"name": "batch_size", "values": [32]}}))
    assert_clean_error(landscape("validate", str(bad)), "load.values", "empty")
    assert_clean_error(landscape("validate", "no-such-config"), "neither a built-in")


def test_status_and_resume_of_a_non_run_dir_are_clean_errors(tmp_path):
    assert_clean_error(landscape("status", str(tmp_path)), "not a run directory")
    assert_clean_error(landscape("resume", str(tmp_path)), "not a run directory")


# ---------------------------------------------------------------------------------------------------------
# Ray-backed commands


@pytest.mark.ray
def test_gpu_request_on_a_cpu_only_cluster_fails_fast(short_tmp):
    started = time.monotonic()
    proc = landscape("run", "smoke", "--out", os.path.join(short_tmp, "run"), "--set", "resources.gpu=0.5",
                     timeout=120)
    assert_clean_error(proc, "resources.gpu", "no GPU")
    assert time.monotonic() - started < 90


def _wait_for_lock(run_dir: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    from orchestrator.storage import lock_holder

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock_holder(run_dir):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the run never took its lock")


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_through_the_cli(short_tmp):
    run_dir = os.path.join(short_tmp, "smoke")
    env = hygienic_env()
    started = time.monotonic()
    proc = subprocess.Popen(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_lock(run_dir, proc)
        # A second process on the same run directory refuses, clearly and at once.
        second = landscape("run", "smoke", "--out", run_dir, "--no-analysis", timeout=60)
        assert_clean_error(second, "in use by another landscape process")
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.monotonic() - started
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in out + err
    assert "sweep finished" in out and "8/8 models, 4/4 pairs" in out
    # smoke says gpu: auto; this Ray has no GPU, so every job ran on the CPU, and the command said why.
    assert "GPUs: auto -> CPU-only cluster: every job runs on CPUs" in out, out
    assert out.count("[") >= 12  # one quiet log line per finished job when not on a terminal

    tables = RunTables(run_dir)
    models, pairs, curves = tables.read("models"), tables.read("pairs"), tables.read("curves")
    assert len(models) == 8 and len(pairs) == 4 and len(curves) == 4 * 5
    assert (models.status == "ok").all() and (pairs.status == "ok").all()
    assert models.groupby(["load_value", "temperature_value", "seed"]).size().max() == 1

    # No metric is silently null: only `error` may be (and is, for ok rows).
    for name, df, schema in (("models", models, MODELS_SCHEMA), ("pairs", pairs, PAIRS_SCHEMA),
                             ("curves", curves, CURVES_SCHEMA)):
        nulls = [c for c in schema.names if c != "error" and df[c].isna().any()]
        assert not nulls, f"{name}: null values in {nulls}"

    # Provenance on every row: one run id, the config hash of the saved config, versions.
    saved = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    assert saved["name"] == "smoke" and saved["run"]["storage"] == run_dir
    from orchestrator.config import parse_config

    config_hash = parse_config(saved).config_hash()
    for df in (models, pairs, curves):
        assert df.run_id.nunique() == 1 and (df.config_hash == config_hash).all()
        assert df.package_version.notna().all() and df.library_versions.str.contains('"ray"').all()

    assert (models.device == "cpu").all() and (pairs.device == "cpu").all()

    # Units: accuracies are fractions, curve errors percent, mc percentage points. The endpoints of a curve
    # are the two trained models, so e(0) and e(1) are their training errors in percent; mc recomputed from
    # the stored curve is the stored mc.
    from workloads.metrics.connectivity import mode_connectivity

    assert models.test_acc.between(0, 1).all() and curves.train_error.between(0, 100).all()
    for pair in pairs.itertuples():
        curve = curves[(curves.load_value == pair.load_value) & (curves.temperature_value == pair.temperature_value)
                       & (curves.seed_a == pair.seed_a) & (curves.seed_b == pair.seed_b)].sort_values("t")
        mc, t_star = mode_connectivity(curve.t.to_numpy(), curve.train_error.to_numpy())
        assert (mc, t_star) == pytest.approx((pair.mode_connectivity, pair.t_star), abs=1e-9)
        cell = models[(models.load_value == pair.load_value) & (models.temperature_value == pair.temperature_value)]
        for seed, t in ((pair.seed_a, 0.0), (pair.seed_b, 1.0)):
            end = curve[curve.t == t].iloc[0]
            train_acc = cell[cell.seed == seed].train_acc.iloc[0]
            assert end.train_error == pytest.approx(100 * (1 - train_acc), abs=0.5), (pair, seed)

    # Pair jobs started while trainings were still running.
    assert pairs.started_at.min() < models.finished_at.max()
    assert wall < 180, f"smoke took {wall:.0f} s"

    status = landscape("status", run_dir)
    assert status.returncode == 0, status.stderr
    assert "stage 1 models: 8 expected · 8 ok · 0 diverged · 0 failed · 0 missing" in status.stdout
    assert "stage 2 pairs : 4 expected · 4 ok" in status.stdout and "not running" in status.stdout

    # Resuming a finished run has nothing to do and does not start Ray.
    before = sorted(models.finished_at.tolist())
    again = landscape("resume", run_dir, "--no-analysis", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    after = sorted(RunTables(run_dir).read("models").finished_at.tolist())
    assert before == after

    # Changing a training setting of an existing run is refused, naming the setting.
    changed = landscape("resume", run_dir, "--set", "training.epochs=5", timeout=120)
    assert_clean_error(changed, "training.epochs")


def _ray_processes_of(ray_tmpdir: str) -> list[str]:
    """Live processes of this test's private Ray: daemons name its temp dir on their command line; workers
    (whose command line Ray rewrites to "ray::...") carry it as RAY_TMPDIR in their environment."""
    return ray_processes_of(ray_tmpdir)


@pytest.mark.ray
@pytest.mark.slow
def test_interrupt_then_resume(short_tmp, ray_tmpdir):
    """Ctrl-C stops the sweep cleanly (Ray shut down, lock released, exit 130, a resume hint); `resume`
    then computes only what is missing, and rows finished before the interrupt are kept as they were."""
    import signal

    from orchestrator.storage import lock_holder

    run_dir = os.path.join(short_tmp, "run")
    env = hygienic_env(ray_tmpdir)
    proc = subprocess.Popen(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    tables = RunTables(run_dir)
    try:
        deadline = time.monotonic() + 150
        while len(tables.part_keys("models")) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no model finished in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert f"landscape resume {run_dir}" in err and "Traceback" not in err
    assert lock_holder(run_dir) is None
    deadline = time.monotonic() + 30
    while _ray_processes_of(ray_tmpdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes_of(ray_tmpdir), _ray_processes_of(ray_tmpdir)

    done_before = {(r.load_value, r.temperature_value, r.seed): r.finished_at for r in tables.read("models").itertuples()}
    assert len(done_before) >= 2
    resumed = landscape("resume", run_dir, "--no-analysis", env=hygienic_env(ray_tmpdir), timeout=240)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    models, pairs = tables.read("models"), tables.read("pairs")
    assert len(models) == 8 and len(pairs) == 4
    assert models.groupby(["load_value", "temperature_value", "seed"]).size().max() == 1
    assert (models.status == "ok").all() and (pairs.status == "ok").all()
    for r in models.itertuples():
        key = (r.load_value, r.temperature_value, r.seed)
        if key in done_before:
            assert r.finished_at == done_before[key], f"{key} was recomputed"
