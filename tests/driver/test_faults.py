"""Worker faults injected into the real job code (orchestrator.driver.sweep's LANDSCAPE_FAULT_INJECT testing hook),
with marker files as in Ray Tune's own restore tests: a crash while the marker is absent creates it, so
the job crashes exactly once; without a marker it crashes on every attempt.

On the session's local 2-CPU Ray (tests/conftest.py), in process:
  * a model job whose worker process dies once, and a pair job that raises once, are retried and succeed;
  * a model job whose worker dies on every attempt ends as `failed` with its error after 1 + max_failures
    attempts, its pair says why it was not measured, and everything else finishes;
  * diverged trainings are recorded as `diverged` and never retried (one attempt each, although
    max_failures allows more);
  * once the fault is gone, a resume trains exactly the failed model and measures its pair;
  * a training killed after its epoch-2 checkpoint continues from that checkpoint (not from epoch 0) and
    ends with the same numbers as an uninterrupted training;
  * a crafted checkpoint (a pickle that would run a shell command) and a truncated one are refused without
    running anything, deleted and named, and their models train from epoch 0.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from analysis.tables import RunTables
from orchestrator.rundir import storage
from orchestrator.config import parse_config
from orchestrator.rundir.fault_hook import FAULT_INJECT_ENV
from orchestrator.planning.jobs import cohort_id, mkey, pkey
from orchestrator.driver.sweep import run_sweep
from tests.helpers import TouchesWhenUnpickled, sweep, tiny_sweep_config

pytestmark = pytest.mark.ray


def raw_config(**changes) -> dict:
    """digits, MLP width 8, 1 epoch, learning rates 0.05 / 0.1 / 1e6 (diverges), seeds 0 and 1, one retry,
    execution.cohort off: cohorts of one, one model per trial, for these are the faults of single models
    (tests/driver/test_cohort_sweep.py: of larger cohorts)."""
    return tiny_sweep_config("faults", [0.05, 0.1, 1.0e6], epochs=1, max_failures=1, cohort="off", **changes)


def attempts(log_path) -> Counter:
    with open(log_path) as f:
        return Counter(json.loads(line)["key"] for line in f)


@pytest.mark.slow
def test_crash_once_is_retried_crash_always_fails_diverged_is_not_retried(ray_local, tmp_path, monkeypatch):
    cfg = parse_config(raw_config())
    run_dir = str(tmp_path / "run")
    log = tmp_path / "attempts.jsonl"
    once_model, always_model = mkey(cfg, 8, 0.05, 0), mkey(cfg, 8, 0.1, 1)
    once_pair = pkey(cfg, 8, 0.05, 0, 1)
    faults = {"log": str(log), "crash": [
        {"key": once_model, "mode": "exit", "marker": str(tmp_path / "once-model")},
        {"key": once_pair, "mode": "raise", "marker": str(tmp_path / "once-pair")},
        {"key": always_model, "mode": "exit"},
    ]}
    summary = sweep(cfg, run_dir, faults, tmp_path, monkeypatch)

    tables = RunTables(run_dir)
    models = tables.read("models").set_index(["temperature_value", "seed"])
    pairs = tables.read("pairs").set_index("temperature_value")
    assert len(models) == 6 and len(pairs) == 3
    # Crashed once, then ok: both markers exist (the faults really fired).
    assert os.path.exists(tmp_path / "once-model") and os.path.exists(tmp_path / "once-pair")
    assert models.loc[(0.05, 0), "status"] == "ok" and pairs.loc[0.05, "status"] == "ok"
    assert models.loc[(0.1, 0), "status"] == "ok"
    # Always crashing: failed, with the error, after 1 + max_failures attempts; its pair says why.
    failed = models.loc[(0.1, 1)]
    assert failed.status == "failed" and failed.error, failed.to_dict()
    assert "died" in failed.error.lower() or "exit" in failed.error.lower(), failed.error
    assert pairs.loc[0.1, "status"] == "failed" and "not measured" in pairs.loc[0.1, "error"]
    # Diverged: recorded as such, never retried.
    assert set(models.loc[1e6, "status"]) == {"diverged"} and pairs.loc[1e6, "status"] == "diverged"

    tries = attempts(log)
    assert tries[once_model] == 2 and tries[once_pair] == 2
    assert tries[always_model] == 1 + cfg.run.max_failures
    assert tries[mkey(cfg, 8, 1e6, 0)] == 1 and tries[mkey(cfg, 8, 1e6, 1)] == 1
    assert tries[mkey(cfg, 8, 0.1, 0)] == 1 and tries[mkey(cfg, 8, 0.05, 1)] == 1
    assert set(tries) == {mkey(cfg, 8, tv, s) for tv in (0.05, 0.1, 1e6) for s in (0, 1)} | {once_pair}
    assert summary.state.models.failed == 1 and summary.state.models.diverged == 2

    # The fault is gone: a resume trains exactly the failed model and measures its pair, nothing else.
    before = {k: v for k, v in models["finished_at"].items() if k != (0.1, 1)}
    log.unlink()
    sweep(cfg, run_dir, {"log": str(log)}, tmp_path, monkeypatch)
    assert attempts(log) == Counter({always_model: 1, pkey(cfg, 8, 0.1, 0, 1): 1})
    models = tables.read("models").set_index(["temperature_value", "seed"])
    assert models.loc[(0.1, 1), "status"] == "ok" and tables.read("pairs").set_index(
        "temperature_value").loc[0.1, "status"] == "ok"
    assert {k: v for k, v in models["finished_at"].items() if k != (0.1, 1)} == before


def test_a_training_killed_after_a_checkpoint_continues_from_it(ray_local, tmp_path, monkeypatch):
    changes = {"temperature.values": "[0.05]", "seeds": "[0]", "training.epochs": 3, "training.checkpoint_every": 1}
    cfg = parse_config(raw_config(**changes))
    key = mkey(cfg, 8, 0.05, 0)
    log = tmp_path / "attempts.jsonl"
    crashed = str(tmp_path / "crashed")
    faults = {"log": str(log), "crash": [{"key": key, "mode": "exit", "at_epoch": 2, "marker": crashed}]}
    sweep(cfg, str(tmp_path / "killed"), faults, tmp_path, monkeypatch)
    sweep(cfg, str(tmp_path / "clean"), None, tmp_path, monkeypatch)

    assert os.path.exists(crashed)
    with open(log) as f:
        lines = [json.loads(line) for line in f]
    # First attempt from scratch, second from the epoch-2 checkpoint (a different worker process).
    assert [entry["resumed_from"] for entry in lines] == [None, 2], lines
    assert lines[0]["pid"] != lines[1]["pid"]
    killed = RunTables(str(tmp_path / "killed")).read("models").iloc[0]
    clean = RunTables(str(tmp_path / "clean")).read("models").iloc[0]
    assert killed.status == "ok" and killed.epochs_completed == 3
    # Resuming is exact: the same numbers as a training that was never interrupted.
    for col in ("train_loss", "train_acc", "test_loss", "test_acc", "hessian_top_eigenvalue", "hessian_trace"):
        assert killed[col] == clean[col], col
    # The history has every epoch once, those before the checkpoint included, with the uninterrupted numbers.
    columns = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
    killed_history = RunTables(str(tmp_path / "killed")).read("history").sort_values("epoch")[columns]
    clean_history = RunTables(str(tmp_path / "clean")).read("history").sort_values("epoch")[columns]
    assert killed_history.epoch.tolist() == [0, 1, 2]
    assert killed_history.reset_index(drop=True).equals(clean_history.reset_index(drop=True))
    # The checkpoint (its cohort of one's) is removed once the model is done.
    assert not os.path.exists(storage.checkpoint_uri(str(tmp_path / "killed"), killed.cohort))
    assert killed.cohort == cohort_id("models", [key])


def test_a_crafted_or_truncated_checkpoint_runs_nothing_is_deleted_and_named(ray_local, tmp_path, monkeypatch):
    """Run directories are shared, so a checkpoint can be anyone's file. One that asks to run code (a pickle
    of os.system) is refused without running it, one cut short is refused too; each is deleted, its model
    trains from epoch 0 and ends ok, and the job's line names the file (it used to fail on every resume
    without naming it, running the code each time)."""
    import io

    import torch

    from orchestrator.driver.progress import make_progress

    changes = {"temperature.values": "[0.05]", "training.epochs": 2, "training.checkpoint_every": 1}
    cfg = parse_config(raw_config(**changes))
    run_dir = str(tmp_path / "run")
    marker = tmp_path / "pwned"
    crafted, cut = mkey(cfg, 8, 0.05, 0), mkey(cfg, 8, 0.05, 1)
    # Each model trains as a cohort of one: its checkpoint is its cohort's.
    checkpoint = {key: storage.checkpoint_uri(run_dir, cohort_id("models", [key])) for key in (crafted, cut)}
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "model": TouchesWhenUnpickled(marker)}, buffer)
    storage.write_bytes(checkpoint[crafted], buffer.getvalue())
    storage.write_bytes(checkpoint[cut], buffer.getvalue()[:200])

    log = tmp_path / "attempts.jsonl"
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"log": str(log)}))
    monkeypatch.setenv(FAULT_INJECT_ENV, str(path))
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    from orchestrator.cluster.resources import check_resources

    lines = io.StringIO()
    run_sweep(cfg, run_dir, run_id="faults", resources=check_resources(cfg),
              progress=make_progress(lines, tty=False))
    assert not marker.exists()  # nothing in the file was executed
    models = RunTables(run_dir).read("models")
    assert (models.status == "ok").all() and (models.epochs_completed == 2).all()
    with open(log) as f:  # one attempt each, from epoch 0
        assert sorted((e["key"], e["resumed_from"]) for e in map(json.loads, f) if e["key"] in (crafted, cut)) == [
            (crafted, None), (cut, None)]
    text = lines.getvalue()
    for key in (crafted, cut):
        assert f"checkpoint {checkpoint[key]} could not be loaded safely" in text, text
        assert not os.path.exists(checkpoint[key])
    assert "deleted it, trained from epoch 0" in text
    assert "it asks to call posix.system, which no checkpoint does; nothing was run" in text  # says why


def test_the_hook_does_nothing_unless_armed_and_an_injected_write_fault_stops_the_sweep(tmp_path):
    """Production code calls the hook unconditionally: disarmed (no LANDSCAPE_FAULT_INJECT), every call is a
    no-op; armed, a write fault inside storage.writing becomes the StorageFullError that stops a sweep."""
    from orchestrator.rundir import fault_hook

    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"log": str(tmp_path / "log"), "crash": [
        {"key": "m1", "mode": "raise"}, {"key": "m1", "mode": "enospc"}]}))
    try:
        fault_hook.arm(None)
        fault_hook.attempt("m1")
        fault_hook.point("m1", 2)
        with storage.writing("RUN/tables/models/m1.parquet"):
            fault_hook.write_point("m1")
        assert not (tmp_path / "log").exists()

        fault_hook.arm(str(faults))
        with pytest.raises(RuntimeError, match="injected fault in m1"):
            fault_hook.attempt("m1")
        assert json.loads((tmp_path / "log").read_text())["key"] == "m1"
        fault_hook.point("m1", 2)  # no fault at epoch 2
        fault_hook.write_point("m2")  # another key
        with pytest.raises(storage.StorageFullError, match="cannot write RUN/tables/models/m1.parquet: No space left"):
            with storage.writing("RUN/tables/models/m1.parquet"):
                fault_hook.write_point("m1")
    finally:
        fault_hook.arm(None)
