"""The `landscape` command line, run as a user runs it (subprocesses of the installed console script).

The integration test runs the built-in `smoke` config through `landscape run` on a private 2-CPU local
Ray and checks every table, every status, that no metric is silently null, the provenance of every row,
that pair jobs started before the last training finished, `landscape status`, the lock against a second
concurrent run on the same directory, and that `resume` of a finished run does nothing.

Stops: Ctrl-C then resume, SIGTERM, Ctrl-C twice, and a raylet killed under the sweep, each on a sweep one
of whose jobs is blocked by the fault hook (so it cannot finish before the test acts, however fast the
machine). Without Ray (in process): `run --out` into a folder that is not a run of the config, each part read
once by `status` and by a resume, the phase rules of an earlier `analyze --rule` kept by a resume, and a
one-seed run told that it has no phases.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import time

import pytest
import yaml

from analysis.schemas import CURVES_SCHEMA, MODELS_SCHEMA, PAIRS_SCHEMA
from analysis.tables import RunTables
from tests.helpers import (
    assert_clean_error,
    hygienic_env,
    landscape_cmd,
    landscape_in_process,
    landscape_run,
    ray_processes_of,
    snapshot,
    write_block_faults,
    write_finished_run,
)


# ---------------------------------------------------------------------------------------------------------
# Fast commands (no Ray)


def test_configs_lists_builtins_with_counts():
    proc = landscape_run("configs")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "8 models, 4 pairs" in lines["smoke"]
    assert "140 models, 140 pairs" in lines["demo"]


def test_validate_ok_and_errors(tmp_path):
    proc = landscape_run("validate", "smoke", "--set", "training.epochs=2")
    assert proc.returncode == 0 and proc.stdout.startswith("ok: smoke"), proc.stderr
    assert_clean_error(landscape_run("validate", "smoke", "--set", "training.epoch=2"),
                       "did you mean 'training.epochs'")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "b", "load": {"name": "width", "values": []},
                                   "temperature": {"name": "batch_size", "values": [32]}}))
    assert_clean_error(landscape_run("validate", str(bad)), "load.values", "empty")
    assert_clean_error(landscape_run("validate", "no-such-config"), "neither a built-in")


def test_status_and_resume_of_a_non_run_dir_are_clean_errors(tmp_path):
    assert_clean_error(landscape_run("status", str(tmp_path)), "not a run directory")
    assert_clean_error(landscape_run("resume", str(tmp_path)), "not a run directory")


# ---------------------------------------------------------------------------------------------------------
# Ray-backed commands


@pytest.mark.ray
def test_gpu_request_on_a_cpu_only_cluster_fails_fast(short_tmp):
    started = time.monotonic()
    proc = landscape_run("run", "smoke", "--out", os.path.join(short_tmp, "run"), "--set", "resources.gpu=0.5",
                         timeout=120)
    assert_clean_error(proc, "resources.gpu", "no GPU")
    assert time.monotonic() - started < 90


def _wait_for_lock(run_dir: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    from orchestrator.rundir.runlock import lock_holder

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
    # One model per trial: with smoke's four cohorts all trainings start before any pair can be ready, so the
    # timing of pairs against trainings below is checked without cohorts (tests/driver/test_cohort_sweep.py checks
    # the same release rule for pair cohorts in the searcher, and the cohort run of smoke end to end).
    proc = subprocess.Popen(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis",
                                               "--set", "execution.cohort=off"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for_lock(run_dir, proc)
        # A second process on the same run directory refuses, clearly and at once.
        second = landscape_run("run", "smoke", "--out", run_dir, "--no-analysis", timeout=60)
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
        nulls = [c for c in schema.names if c not in ("error", "cohort") and df[c].isna().any()]
        assert not nulls, f"{name}: null values in {nulls}"
    # The package's added metrics (workloads/extra_metrics/) are measured by the model jobs too.
    from workloads.metric_discovery import package_metrics

    assert [s.name for s in RunTables(run_dir).scan("models").metrics.added] == [s.name for s in package_metrics()]
    assert models[[s.name for s in package_metrics()]].notna().all().all()

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

    # The history table: every epoch of every model, the test set at the epochs of eval_every (auto: every
    # epoch of 3), the last of which is the models row's own full-set evaluation of the same weights.
    history = tables.read("history")
    epochs = saved["training"]["epochs"]
    assert len(history) == 8 * epochs
    for model in models.itertuples():
        mine = history[(history.load_value == model.load_value) & (history.temperature_value == model.temperature_value)
                       & (history.seed == model.seed)].sort_values("epoch")
        assert mine.epoch.tolist() == list(range(epochs)), model
        assert mine.test_acc.notna().all() and mine.train_loss.gt(0).all() and mine.seconds.gt(0).all()
        assert mine.test_acc.iloc[-1] == pytest.approx(model.test_acc, abs=1e-12)
        assert mine.test_loss.iloc[-1] == pytest.approx(model.test_loss, rel=1e-9)
    assert history.run_id.nunique() == 1 and (history.config_hash == config_hash).all()
    assert not glob.glob(os.path.join(run_dir, "tune", "**", "events.out.tfevents*"), recursive=True)  # not asked
    # The curve's training, per epoch: curve_history (epochs 0-based, the pair's curve_epochs of them).
    curve_history = tables.read("curve_history")
    assert len(curve_history) == 4 * saved["metrics"]["curve"]["epochs"]
    assert curve_history.groupby(["load_value", "temperature_value", "seed_a", "seed_b"]).epoch.apply(list).map(
        lambda e: e == list(range(saved["metrics"]["curve"]["epochs"]))).all()
    assert curve_history.train_error.between(0, 100).all() and (curve_history.objective >= curve_history.train_loss).all()

    # Pair jobs started while trainings were still running.
    assert pairs.started_at.min() < models.finished_at.max()
    assert wall < 180, f"smoke took {wall:.0f} s"

    status = landscape_run("status", run_dir)
    assert status.returncode == 0, status.stderr
    assert "stage 1 models: 8 expected · 8 ok · 0 diverged · 0 failed · 0 missing" in status.stdout
    assert "stage 2 pairs : 4 expected · 4 ok" in status.stdout and "not running" in status.stdout
    assert "history: 8 model(s) and 4 curve(s) with a per-epoch training history" in status.stdout

    # Resuming a finished run has nothing to do and does not start Ray.
    before = sorted(models.finished_at.tolist())
    again = landscape_run("resume", run_dir, "--no-analysis", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    after = sorted(RunTables(run_dir).read("models").finished_at.tolist())
    assert before == after

    # Changing a training setting of an existing run is refused, naming the setting.
    changed = landscape_run("resume", run_dir, "--set", "training.epochs=5", timeout=120)
    assert_clean_error(changed, "training.epochs")


BLOCKED = "width=8__batch_size=256__seed=0"  # a model job of smoke that the tests below keep from finishing


def start_blocked_run(short_tmp: str, ray_tmpdir: str, *extra: str) -> tuple[subprocess.Popen, str, str]:
    """`landscape run smoke` whose job BLOCKED waits (the fault hook's "block" mode) until a file that never
    appears: the sweep cannot finish before the test has acted, however fast the machine. Returns (process,
    run dir, the file the blocked job creates when it starts waiting)."""
    run_dir, started = os.path.join(short_tmp, "run"), os.path.join(short_tmp, "started")
    faults = write_block_faults(short_tmp, [BLOCKED], started=started)
    env = hygienic_env(ray_tmpdir, LANDSCAPE_FAULT_INJECT=faults)
    proc = subprocess.Popen(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, run_dir, started


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{what} did not happen in time"
        time.sleep(0.2)


def assert_ray_gone(ray_tmpdir: str, grace: float = 30) -> None:
    deadline = time.monotonic() + grace
    while ray_processes_of(ray_tmpdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes_of(ray_tmpdir), ray_processes_of(ray_tmpdir)


@pytest.mark.ray
@pytest.mark.slow
def test_interrupt_then_resume(short_tmp, ray_tmpdir):
    """Ctrl-C stops the sweep cleanly (Ray shut down, lock released, exit 130, a resume hint); `resume`
    then computes only what is missing, and rows finished before the interrupt are kept as they were.
    One job is blocked by the fault hook, so the sweep is still running when the signal comes."""
    from orchestrator.rundir.runlock import lock_holder

    proc, run_dir, started = start_blocked_run(short_tmp, ray_tmpdir)
    tables = RunTables(run_dir)
    try:
        wait_for(proc, lambda: os.path.exists(started) and len(tables.part_keys("models")) >= 2,
                 "two models finishing")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert f"landscape resume {run_dir}" in err and "Traceback" not in err
    assert lock_holder(run_dir) is None
    assert_ray_gone(ray_tmpdir)

    done_before = {(r.load_value, r.temperature_value, r.seed): r.finished_at for r in tables.read("models").itertuples()}
    assert len(done_before) >= 2 and BLOCKED not in tables.part_keys("models")
    resumed = landscape_run("resume", run_dir, "--no-analysis", env=hygienic_env(ray_tmpdir), timeout=240)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    models, pairs = tables.read("models"), tables.read("pairs")
    assert len(models) == 8 and len(pairs) == 4
    assert models.groupby(["load_value", "temperature_value", "seed"]).size().max() == 1
    assert (models.status == "ok").all() and (pairs.status == "ok").all()
    for r in models.itertuples():
        key = (r.load_value, r.temperature_value, r.seed)
        if key in done_before:
            assert r.finished_at == done_before[key], f"{key} was recomputed"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["SIGTERM", "Ctrl-C twice"])
def test_sigterm_and_a_second_ctrl_c_stop_like_one_ctrl_c(short_tmp, ray_tmpdir, signals):
    """SIGTERM (a scheduler's timeout) ends like Ctrl-C: exit 143, the resume hint, Ray stopped, no "***
    SIGTERM received ***" abort (Ray installs its own handler after ray.init; the command puts its own
    back). A second Ctrl-C while the first one stops Ray is ignored: no atexit traceback."""
    from orchestrator.rundir.runlock import lock_holder

    proc, run_dir, started = start_blocked_run(short_tmp, ray_tmpdir)
    try:
        wait_for(proc, lambda: os.path.exists(started), "the blocked job starting")
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.3)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signals[0], (proc.returncode, out, err)
    assert f"landscape resume {run_dir}" in err, err
    for junk in ("Traceback", "Exception ignored", "SIGTERM received", "Aborted"):
        assert junk not in out + err, (out, err)
    if signals[0] == signal.SIGTERM:
        assert "interrupted (SIGTERM)" in err
    assert lock_holder(run_dir) is None
    assert_ray_gone(ray_tmpdir)


@pytest.mark.ray
@pytest.mark.slow
def test_a_dead_raylet_ends_the_run_with_one_error_line(short_tmp, ray_tmpdir):
    """The local Ray's raylet killed under a running sweep (the OOM killer, a stray kill): one `error:` line
    naming it, exit 1, the resume hint, the lock released, nothing of that Ray left, no temporary parts."""
    from orchestrator.cluster.ray_leftovers import read_record
    from orchestrator.rundir.runlock import lock_holder

    proc, run_dir, started = start_blocked_run(short_tmp, ray_tmpdir)
    try:
        # The run's private record of its local Ray (same user, same environment as this test) names its raylet.
        wait_for(proc, lambda: os.path.exists(started) and (read_record(run_dir) or {}).get("raylet_pid"),
                 "the blocked job starting")
        raylet = read_record(run_dir)["raylet_pid"]
        os.kill(raylet, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out + err, err
    assert f"raylet (pid {raylet}) died" in lines[0] and f"landscape resume {run_dir}" in lines[0]
    assert lock_holder(run_dir) is None and read_record(run_dir) is None
    assert not [n for _, _, names in os.walk(run_dir) for n in names if n.endswith(".tmp")]
    assert_ray_gone(ray_tmpdir)


# ---------------------------------------------------------------------------------------------------------
# Without Ray: a run directory that is finished, or not a run at all


def test_run_into_a_folder_that_is_not_this_run_is_refused_and_nothing_changes(tmp_path):
    """`landscape run smoke --out DIR` once overwrote a user's config.yaml, run.json and report.html and
    deleted their tables/models/mydata.parquet. A non-empty folder that is not a run of the same config is
    refused before anything is written."""
    import pandas as pd

    from orchestrator.config import load_config

    mine = tmp_path / "mine"
    (mine / "analysis").mkdir(parents=True)
    (mine / "tables" / "models").mkdir(parents=True)
    (mine / "config.yaml").write_text("my: own notes\n")
    (mine / "run.json").write_text('{"mine": true}')
    (mine / "analysis" / "report.html").write_text("<html>my report</html>")
    pd.DataFrame({"x": [1, 2]}).to_parquet(mine / "tables" / "models" / "mydata.parquet")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    demo = tmp_path / "demo-run"
    demo.mkdir()
    (demo / "config.yaml").write_text(load_config("demo").to_yaml())
    cases = {mine: "holds a config.yaml that is not a readable sweep config", other: "is not a landscape run",
             demo: "is a run of another config ('demo')"}
    for folder, why in cases.items():
        before = snapshot(str(folder))
        proc = landscape_in_process("run", "smoke", "--out", str(folder), "--no-analysis")
        # `resume` is offered only where there is a config.yaml to resume from (in `other` it would fail).
        advice = ("another --out",) if folder == other else (f"landscape resume {folder}", "another --out")
        assert_clean_error(proc, str(folder), why, *advice)
        assert (f"landscape resume {folder}" in proc.stderr) == (folder != other), proc.stderr
        assert snapshot(str(folder)) == before, folder


def test_status_and_the_end_of_a_run_read_each_part_once(tmp_path, monkeypatch):
    """On an object store each part read is a request: `status` and a `resume` (plan, summary, failed rows,
    the GPU warning and the analysis) read every part of every table exactly once."""
    from collections import Counter

    from analysis.tables import RunTables as Tables

    run_dir = str(tmp_path / "run")
    write_finished_run(run_dir)
    parts = sum(len(Tables(run_dir).part_keys(t)) for t in ("models", "pairs", "curves"))
    reads: Counter = Counter()
    real = Tables._read_part

    def counted(self, table, key):
        reads[(table, key)] += 1
        return real(self, table, key)

    monkeypatch.setattr(Tables, "_read_part", counted)
    for args in (["status", run_dir], ["resume", run_dir]):
        reads.clear()
        proc = landscape_in_process(*args)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert len(reads) == parts and set(reads.values()) == {1}, (args, reads)
    assert "nothing to do" in proc.stdout and "report:" in proc.stdout
    # It ends with the cells per phase, every applicable claim's verdict, and where claims.json is.
    claims_json = os.path.join(run_dir, "analysis", "claims.json")
    assert re.search(r"  phases: (I|II|III|IV-A|IV-B|none) \d+", proc.stdout), proc.stdout
    assert f"(claims.json: {claims_json})" in proc.stdout and "    holds " in proc.stdout, proc.stdout
    with open(claims_json) as f:
        applied = [c for c in json.load(f) if c["applies"]]
    assert all(f" {c['id']} ({c['figure']})" in proc.stdout for c in applied)


def test_a_resume_keeps_the_phase_rules_of_the_earlier_analysis(tmp_path):
    """`landscape analyze RUN --rule mc_threshold=2`, then a resume of the finished run: the resume's
    analysis uses mc_threshold=2 again, and says so, instead of silently drawing the defaults."""
    run_dir = str(tmp_path / "run")
    write_finished_run(run_dir)
    rules_file = os.path.join(run_dir, "analysis", "phase_rules.json")
    analysed = landscape_in_process("analyze", run_dir, "--rule", "mc_threshold=2")
    assert analysed.returncode == 0, analysed.stderr
    assert json.load(open(rules_file))["rules"]["mc_threshold"] == 2
    resumed = landscape_in_process("resume", run_dir)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert "phase rules of the earlier analysis (mc_threshold=2" in resumed.stdout
    assert json.load(open(rules_file))["rules"]["mc_threshold"] == 2
    # Without --rule, `analyze` goes back to the defaults (and the next resume keeps those).
    assert landscape_in_process("analyze", run_dir).returncode == 0
    assert json.load(open(rules_file))["rules"]["mc_threshold"] == 1


def test_a_one_seed_run_is_told_there_are_no_phases_not_to_resume_for_pairs(tmp_path):
    run_dir = str(tmp_path / "run")
    write_finished_run(run_dir, ["seeds=[0]"])
    for args in (["resume", run_dir], ["analyze", run_dir]):
        proc = landscape_in_process(*args)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
        assert warnings and all("no seed pairs" in w or "connects no seed pairs" in w for w in warnings), warnings
        assert "to compute the pairs" not in proc.stdout + proc.stderr


def test_the_analysis_at_the_end_of_a_run_is_made_under_the_run_lock(tmp_path, monkeypatch):
    """Another `run`/`resume` of the directory must not start while the analysis still reads the tables."""
    from analysis import api
    from orchestrator.rundir.runlock import lock_holder

    run_dir = str(tmp_path / "run")
    write_finished_run(run_dir)
    held = []
    real = api.analyze_run

    def analyze_run(*args, **kwargs):
        held.append(lock_holder(run_dir))
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "analyze_run", analyze_run)
    proc = landscape_in_process("resume", run_dir)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert len(held) == 1 and held[0] and held[0].startswith(f"pid {os.getpid()}"), held
    assert lock_holder(run_dir) is None
