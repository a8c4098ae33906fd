"""`search: adaptive` through the command line (issue #22): the config block, validate, a real adaptive sweep of
smoke on a 4 x 4 grid (fewer models than the grid, one wave file per wave), status, analyze, and resume (nothing
to do when finished; the same last wave, trained again and only it, after its models' parts are deleted)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pandas as pd
import pytest

from analysis.tables import RunTables
from tests.helpers import (assert_clean_error, hygienic_env, landscape_cmd, landscape_in_process, landscape_run,
                           private_ray_tmpdir, write_block_faults)

# smoke on a 4 x 4 grid at one epoch: coarse cells every 3rd value (with the edges: indices 0 and 3), so the
# first wave has 4 cells x 2 seeds; the boundary waves fill in what lies between phases.
ADAPTIVE = ["--set", "search=adaptive", "--set", "load.values=[8, 16, 32, 64]",
            "--set", "temperature.values=[32, 64, 128, 256]", "--set", "training.epochs=1",
            "--set", "metrics.curve.epochs=1", "--set", "adaptive.coarse_step=3"]
GRID_MODELS = 4 * 4 * 2


# ---------------------------------------------------------------------------------------------------------
# The config block (no Ray)


@pytest.mark.parametrize("sets, fragments", [
    (["search=adaptve"], ["search", "did you mean 'adaptive'"]),
    (["search=adaptive", "adaptive.coarse_step=0"], ["adaptive", "coarse_step=0", "integer >= 1"]),
    (["search=adaptive", "adaptive.coarse_stp=2"], ["adaptive", "Did you mean 'coarse_step'"]),
    (["search=adaptive", "adaptive.start_seeds=3"], ["adaptive.start_seeds", "lists 2"]),
    (["search=adaptive", "adaptive=5"], ["adaptive must be a mapping"]),
    (["adaptive.coarse_step=2"], ["search is 'grid'", "search: adaptive"]),
    (["search=adaptive", "seeds=[0, 1, 2]", "metrics.pairs=[[0, 2]]"], ["metrics.pairs", "seed pair among the 2"]),
])
def test_bad_adaptive_settings_are_one_clear_error(sets, fragments):
    proc = landscape_in_process("validate", "smoke", *[a for s in sets for a in ("--set", s)])
    assert_clean_error(proc, *fragments)


def test_validate_names_the_first_wave_and_that_the_total_depends_on_results():
    proc = landscape_in_process("validate", "smoke", *ADAPTIVE)
    assert proc.returncode == 0, proc.stderr
    assert "search: adaptive: the first wave trains 8 models (4 coarse cells at 2 seeds)" in proc.stdout
    assert "depend on its results" in proc.stdout and "grid's 32 models" in proc.stdout


def test_search_mode_is_not_in_the_config_hash():
    """Which rows exist, not what a row's values are: a grid run's rows and an adaptive run's compare."""
    from orchestrator.config import load_config

    grid = load_config("smoke", check_data=False)
    adaptive = load_config("smoke", ["search=adaptive", "adaptive.coarse_step=2"], check_data=False)
    assert grid.config_hash() == adaptive.config_hash()
    assert adaptive.to_dict()["search"] == "adaptive" and adaptive.to_dict()["adaptive"] == {"coarse_step": 2}


# ---------------------------------------------------------------------------------------------------------
# A real adaptive sweep


@pytest.fixture(scope="module")
def adaptive_run():
    """An adaptive smoke sweep run to its end through `landscape run` (with its analysis)."""
    tmp = tempfile.mkdtemp(prefix="ls-adaptive-", dir="/tmp")
    ray_tmp = private_ray_tmpdir()
    env = hygienic_env(ray_tmp)
    run_dir = os.path.join(tmp, "run")
    try:
        proc = landscape_run("run", "smoke", "--out", run_dir, *ADAPTIVE, env=env, timeout=420)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        yield run_dir, env, proc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def wave_files(run_dir: str) -> dict[str, dict]:
    folder = os.path.join(run_dir, "adaptive")
    return {name: json.load(open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))}


@pytest.mark.ray
@pytest.mark.slow
def test_adaptive_run_trains_the_waves_and_fewer_models_than_the_grid(adaptive_run):
    run_dir, env, proc = adaptive_run
    waves = wave_files(run_dir)
    numbered = [w for name, w in waves.items() if name.startswith("wave-")]
    assert len(numbered) >= 2 and "done.json" in waves, list(waves)
    assert [w["wave"] for w in numbered] == list(range(len(numbered)))
    assert numbered[0]["counts"]["coarse"] == 4 and numbered[0]["models"] == 8
    assert all(c["reason"] in ("boundary", "top-up") for w in numbered[1:] for c in w["cells"])
    # The tables hold exactly the waves' keys, each once: no key outside them, none twice.
    tables = RunTables(run_dir)
    chosen = [k for w in numbered for k in w["model_keys"]]
    assert len(chosen) == len(set(chosen)) < GRID_MODELS
    assert sorted(tables.part_keys("models")) == sorted(chosen)
    assert sorted(tables.part_keys("pairs")) == sorted(k for w in numbered for k in w["pair_keys"])
    assert (tables.read("models").status == "ok").all()
    assert waves["done.json"]["models"] == len(chosen)
    assert f"{len(chosen)} of the grid's {GRID_MODELS} models" in proc.stdout
    # The analysis shows every grid cell: the trained ones as trained (no seed missing where the policy asked for
    # the starting seeds only), the cells the policy skipped interpolated and marked, not absent or failed.
    cells = pd.read_parquet(os.path.join(run_dir, "analysis", "cells.parquet"))
    models = tables.read("models")
    trained = {(float(w), float(b)) for w, b in zip(models["load_value"], models["temperature_value"])}
    assert len(cells) == 16 and cells["phase"].notna().all()
    shown_trained = cells[~cells["interpolated"]]
    assert set(zip(shown_trained["load_value"].astype(float), shown_trained["temperature_value"].astype(float))) \
        == trained
    assert ((cells["sampling"] == "interpolated") == cells["interpolated"]).all()
    assert set(shown_trained["sampling"]) == {"full"}  # smoke has 2 seeds: the starting seeds are all of them
    assert shown_trained["complete"].all() and shown_trained["members_missing"].isna().all()
    assert f"{len(trained)} of 16 cells trained" in proc.stdout and "interpolated (not trained)" in proc.stdout

    status = landscape_run("status", run_dir, env=env, timeout=180)
    assert status.returncode == 0, (status.stdout, status.stderr)
    assert f"search: adaptive: {len(numbered)} wave(s) derived from the tables" in status.stdout
    assert "untrained on purpose" in status.stdout and "finished:" in status.stdout
    assert f"stage 1 models: {len(chosen)} expected · {len(chosen)} ok · 0 diverged · 0 failed · 0 missing" \
        in status.stdout

    # Finished: a resume trains nothing, and it keeps the search (another mode is refused, clearly).
    again = landscape_run("resume", run_dir, "--no-analysis", env=env, timeout=240)
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "nothing to do" in again.stdout
    refused = landscape_run("resume", run_dir, "--set", "search=grid", "--set", "adaptive=null", env=env, timeout=240)
    assert_clean_error(refused, "was run with search: adaptive", "a run keeps its search")


@pytest.mark.ray
@pytest.mark.slow
def test_resume_after_losing_the_last_wave_derives_it_again(adaptive_run):
    """The last wave's model parts deleted (as if the run had been killed in it): resume derives the same wave
    from the earlier waves' rows and trains exactly its models again (and their pairs, stale now)."""
    run_dir, env, _ = adaptive_run
    before = wave_files(run_dir)
    last = max(name for name in before if name.startswith("wave-"))
    lost = before[last]["model_keys"]
    tables = RunTables(run_dir)
    for key in lost:
        os.remove(tables.part_uri("models", key))
    resumed = landscape_run("resume", run_dir, "--no-analysis", env=env, timeout=300)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert f"to do: {len(lost)} models, {len(before[last]['pair_keys'])} pairs" in resumed.stdout
    assert f"wave {before[last]['wave']}: {len(lost)} models" in resumed.stdout
    after = wave_files(run_dir)
    assert after == before  # the same waves, the same reasons, the same end
    assert sorted(tables.part_keys("models")) == sorted(k for w in after.values() for k in w.get("model_keys", []))


@pytest.mark.ray
@pytest.mark.slow
def test_killed_between_waves_resumes_with_the_same_waves_and_no_key_trained_twice(adaptive_run, tmp_path):
    """Every model outside the coarse grid is held by the fault hook ("block"), so the run is certainly inside
    wave 1 when SIGTERM comes; resume (no block) finishes with the waves of the uninterrupted run and trains
    only the keys that were not done."""
    from analysis.tables import model_key

    reference_run, _, _ = adaptive_run
    short = tempfile.mkdtemp(prefix="ls-kill-", dir="/tmp")
    ray_tmp = private_ray_tmpdir()
    run_dir, started = os.path.join(short, "run"), os.path.join(short, "started")
    held = [model_key("width", w, "batch_size", b, s) for w in (8, 16, 32, 64) for b in (32, 64, 128, 256)
            for s in (0, 1) if w in (16, 32) or b in (64, 128)]  # all but the coarse cells (edges of a 4 x 4 grid)
    first_log, resume_log = os.path.join(short, "first.jsonl"), os.path.join(short, "resume.jsonl")
    faults = write_block_faults(short, held, started=started, log=first_log)
    try:
        proc = subprocess.Popen(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis", *ADAPTIVE],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=hygienic_env(ray_tmp, LANDSCAPE_FAULT_INJECT=faults))
        try:
            deadline = time.monotonic() + 300
            while not os.path.exists(started):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no job of wave 1 started in time"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "wave 1:" in out and "wave 2:" not in out, (out, err)
        tables = RunTables(run_dir)
        done_before = set(tables.part_keys("models"))
        assert len(done_before) == 8  # wave 0, the coarse grid

        with open(faults, "w") as f:
            json.dump({"log": resume_log}, f)
        resumed = landscape_run("resume", run_dir, "--no-analysis",
                                env=hygienic_env(ray_tmp, LANDSCAPE_FAULT_INJECT=faults), timeout=300)
        assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
        assert wave_files(run_dir) == wave_files(reference_run)
        trained_now = [json.loads(line)["key"] for line in open(resume_log)]
        models_now = [k for k in trained_now if "__seed=" in k]
        assert len(models_now) == len(set(models_now)) and not set(models_now) & done_before
        assert set(tables.part_keys("models")) == done_before | set(models_now) == set(
            RunTables(reference_run).part_keys("models"))
    finally:
        shutil.rmtree(short, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_status_json_names_the_waves(adaptive_run):
    """`status --json` carries what the status text says of the search: each wave's counts, and that it finished."""
    run_dir, env, _ = adaptive_run
    numbered = [w for name, w in wave_files(run_dir).items() if name.startswith("wave-")]
    proc = landscape_run("status", run_dir, "--json", env=env, timeout=180)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    search = json.loads(proc.stdout)["search"]
    assert search["search"] == "adaptive" and search["finished"] and search["current_wave"] is None
    assert [(w["number"], w["models"], w["pairs"]) for w in search["waves"]] == \
        [(w["wave"], w["models"], len(w["pair_keys"])) for w in numbered]
    assert search["chosen_models"] == sum(w["models"] for w in numbered) and search["grid_models"] == GRID_MODELS
