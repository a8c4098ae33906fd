"""`landscape status` on a run with failed and missing jobs: counts, exit status and --json (no Ray: the run
directory is written here as a sweep leaves it)."""

from __future__ import annotations

import json

from orchestrator.rundir import storage
from orchestrator.config import load_config
from orchestrator.planning.jobs import mkey
from orchestrator.worker.records import write_failed_model
from tests.helpers import landscape_in_process

SEEDS = list(range(10))  # smoke's 2 x 2 cells x 10 seeds = 40 models


def _run_with_failures(run_dir: str, failed: int):
    cfg = load_config("smoke", [f"seeds={SEEDS}"], check_data=False)
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    keys = list(cfg.model_keys())
    for lv, tv, seed in keys[:failed]:
        write_failed_model(cfg, run_dir, "run-1", (lv, tv, seed),
                           "RuntimeError: out of luck")
    return cfg, keys


def test_status_counts_what_it_does_not_list_and_exits_1_when_jobs_failed(tmp_path):
    run_dir = str(tmp_path / "run")
    _run_with_failures(run_dir, failed=3)
    status = landscape_in_process("status", run_dir)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "stage 1 models: 40 expected · 0 ok · 0 diverged · 3 failed · 37 missing" in status.stdout
    # 3 failed and 8 of the 37 missing listed: 29 more (the formula once said 24).
    assert status.stdout.count("  failed  ") == 3 and "... (29 more)" in status.stdout, status.stdout
    assert "3 model job(s) failed; `landscape resume" in status.stderr, status.stderr


def test_status_json_lists_every_key(tmp_path):
    run_dir = str(tmp_path / "run")
    cfg, keys = _run_with_failures(run_dir, failed=3)
    status = landscape_in_process("status", run_dir, "--json", "--quick")
    assert status.returncode == 1
    data = json.loads(status.stdout)
    models = data["stages"]["models"]
    assert models["expected"] == 40 and models["ok"] == 0 and len(models["missing"]) == 37
    assert [f["key"] for f in models["failed"]] == [mkey(cfg, *k) for k in keys[:3]]
    assert all(f["error"] == "RuntimeError: out of luck" for f in models["failed"])
    assert data["config_hash"] == cfg.config_hash() and data["config"] == "smoke"
    assert data["problem"].startswith("3 model job(s) failed") and data["search"] == {"search": "grid"}


def test_a_run_without_failures_exits_0(tmp_path):
    run_dir = str(tmp_path / "run")
    _run_with_failures(run_dir, failed=0)
    status = landscape_in_process("status", run_dir)
    assert status.returncode == 0, status.stderr
    assert "0 failed · 40 missing" in status.stdout and "... (32 more)" in status.stdout
