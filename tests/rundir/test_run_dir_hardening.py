"""Issue #18 (hardening), without starting Ray: what a shared or badly named run directory can no longer do.

* A run directory URI with a ".", ".." or empty segment, or an odd character, is refused with one `error:`
  line before any work (it used to do the whole sweep, then end in Tune's traceback); on the local S3
  stand-in (moto) nothing at all is written.
* A flipped bit in finished weights: `status` reports it and exits 1 (`--quick` does not hash), and the plan
  that `resume` makes moves the file aside and schedules that model and the pairs that use it, and nothing
  else.
* `analyze` while a sweep holds the run's lock says so, analyses what is there, and never advises `resume`
  (which that lock refuses).
* A failed save of Tune's experiment state on a full disk stops the sweep (SweepState.fatal) instead of
  printing Tune's traceback.
"""

from __future__ import annotations

import errno
import logging
import os

import pytest

from orchestrator.rundir import storage
from tests.helpers import BUCKET, assert_clean_error, keys, landscape_in_process, write_finished_run

BAD_URIS = {
    "s3://bucket/a/../b/run": "a '..' path segment",
    "s3://bucket/./run": "a '.' path segment",
    "s3://bucket/a//run": "an empty path segment",
    "s3://bucket/run?region=x": "the character '?'",
    "s3://bucket/my run": "the character ' '",
}


def test_run_dir_names_that_cannot_mean_one_place_are_refused():
    for uri, why in BAD_URIS.items():
        with pytest.raises(storage.RunDirError, match=why.replace("?", r"\?")):
            storage.normalise_run_dir(uri)
    with pytest.raises(storage.RunDirError, match="control character"):
        storage.normalise_run_dir("runs/a\nb")
    for fine in ("s3://bucket/runs/smoke-1", "gs://b/x_y/z.v2", "file:///tmp/run", "s3://bucket/run/"):
        assert storage.normalise_run_dir(fine) == fine.rstrip("/")
    assert storage.normalise_run_dir("runs/../x") == os.path.abspath("x")  # a local path is resolved, not refused


def test_a_bad_run_dir_uri_is_refused_before_anything_is_written(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))  # where a Ray started by mistake would show
    for command in (["run", "smoke", "--no-analysis", "--out"], ["resume"], ["status"]):
        for uri, why in BAD_URIS.items():
            uri = uri.replace("bucket", BUCKET)
            assert_clean_error(landscape_in_process(*command, uri), uri, why)
    assert keys(s3, "") == [] and not (tmp_path / "ray").exists()


def flip_a_byte(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(bytes(data))


def test_a_flipped_bit_in_finished_weights_is_found_and_only_its_model_and_pairs_are_redone(tmp_path):
    from orchestrator.planning.jobs import mkey, pkey
    from orchestrator.planning.plan import assess, repair
    from orchestrator.planning.run_facts import measure

    run_dir = str(tmp_path / "run")
    cfg = write_finished_run(run_dir)
    assert landscape_in_process("status", run_dir).returncode == 0
    lv, tv, seed = cfg.model_keys()[0]
    damaged = mkey(cfg, lv, tv, seed)
    weights = storage.model_uri(run_dir, damaged)
    flip_a_byte(weights)
    flipped = open(weights, "rb").read()

    status = landscape_in_process("status", run_dir)
    assert status.returncode == 1, (status.stdout, status.stderr)
    assert f"model {damaged}: weights file damaged (its sha256 differs" in status.stdout, status.stdout
    assert status.stderr.startswith("problem: 1 finished model(s) without usable weights") and \
        f"landscape resume {run_dir}" in status.stderr, status.stderr
    quick = landscape_in_process("status", run_dir, "--quick")  # no hashing: the flip is not seen
    assert quick.returncode == 0 and "damaged" not in quick.stdout, (quick.stdout, quick.stderr)
    assert open(weights, "rb").read() == flipped  # status changes nothing

    plan = repair(run_dir, assess(cfg, run_dir, facts=measure(cfg)))  # what `resume` does first
    users = {pkey(cfg, *k) for k in cfg.pair_keys() if k[:2] == (lv, tv) and seed in k[2:]}
    assert users, "the smoke grid has a pair using that model"
    assert [mkey(cfg, *k) for k in plan.models_todo] == [damaged]
    assert {pkey(cfg, *k) for k in plan.pairs_todo} == users
    assert len(plan.models_done) == len(cfg.model_keys()) - 1
    assert len(plan.pairs_done) == len(cfg.pair_keys()) - len(users)
    assert not os.path.exists(weights)
    assert open(os.path.join(run_dir, "quarantine", "models", f"{damaged}.pt"), "rb").read() == flipped
    assert any(f"model {damaged}: weights file damaged" in note for note in plan.repaired), plan.repaired



def _every_file(run_dir: str) -> dict:
    """Every folder (as None) and every file (its bytes) under ``run_dir``, by relative path."""
    found = {}
    for folder, dirs, files in os.walk(run_dir):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), run_dir)] = None
        for name in files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, run_dir)] = open(path, "rb").read()
    return found


def test_assessing_a_damaged_run_changes_nothing_and_repair_then_makes_exactly_what_it_found(tmp_path):
    """`status` and `assess` only read: a misplaced part, a truncated weights file, an unreadable part and the
    temporary file of a cut write stay as they are, byte for byte. `repair` of that assessment then moves the
    parts aside, deletes the truncated weights, the stale pair rows and the temporary file, and nothing else."""
    import shutil

    from analysis.tables import RunTables
    from orchestrator.planning.jobs import mkey, pkey
    from orchestrator.planning.plan import Repair, assess, repair
    from orchestrator.planning.run_facts import for_reading, measure

    run_dir = str(tmp_path / "run")
    cfg = write_finished_run(run_dir)
    tables = RunTables(run_dir)
    (lv, tv, a), (_, _, b), (lv2, tv2, c) = cfg.model_keys()[0], cfg.model_keys()[1], cfg.model_keys()[2]
    misplaced, truncated, unreadable = mkey(cfg, lv, tv, b), mkey(cfg, lv2, tv2, c), pkey(cfg, *cfg.pair_keys()[-1])
    shutil.copy(tables.part_uri("models", mkey(cfg, lv, tv, a)), tables.part_uri("models", misplaced))
    weights = storage.model_uri(run_dir, truncated)
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with open(tables.part_uri("pairs", unreadable), "wb") as f:
        f.write(b"not a parquet file")
    temporary = os.path.join(tables.tables_dir, "models", f".{misplaced}.{'0' * 32}.tmp")
    with open(temporary, "wb") as f:
        f.write(b"half a part")
    before = _every_file(run_dir)

    status = landscape_in_process("status", run_dir)
    assert status.returncode == 1, (status.stdout, status.stderr)
    assert f"model {truncated}: weights file truncated" in status.stdout, status.stdout
    assert f"1 unreadable part(s), moved aside and recomputed by resume: {unreadable}" in status.stdout
    assert f"{misplaced}.parquet: its rows are {mkey(cfg, lv, tv, a)}" in status.stdout, status.stdout
    plan = assess(cfg, run_dir, facts=for_reading(run_dir, cfg))
    assert _every_file(run_dir) == before  # the folders and every file's bytes: status and assess changed nothing
    assert [r.action for r in plan.repairs if r.found] == ["move aside", "move aside", "delete"]  # as found

    retrained = {misplaced, truncated}
    users = {pkey(cfg, *k) for k in cfg.pair_keys() if {mkey(cfg, *k[:2], k[2]), mkey(cfg, *k[:2], k[3])} & retrained}
    notes = repair(run_dir, assess(cfg, run_dir, facts=measure(cfg))).repaired
    assert notes[0].startswith("removed 1 temporary file(s) of writes cut short") and not os.path.exists(temporary)
    assert notes[1:] == (  # in the order of the tables, then the models of the grid
        f"models part {misplaced}.parquet does not hold {misplaced} (its rows are {mkey(cfg, lv, tv, a)}): moved "
        f"to {os.path.join(run_dir, 'quarantine', 'tables', 'models', misplaced + '.parquet')}, recomputed",
        f"unreadable pairs part {unreadable} (ArrowInvalid): moved to "
        f"{os.path.join(run_dir, 'quarantine', 'tables', 'pairs', unreadable + '.parquet')}, recomputed",
        f"model {truncated}: weights file truncated, retrained"), notes
    after = _every_file(run_dir)
    gone = {path for path in before if path not in after}
    assert gone == {os.path.relpath(p, run_dir) for p in (
        temporary, weights, tables.part_uri("models", misplaced), tables.part_uri("pairs", unreadable),
        *(tables.part_uri("pairs", key) for key in users))}
    assert {path for path in after if path not in before} == {
        "quarantine", "quarantine/tables", "quarantine/tables/models", "quarantine/tables/pairs",
        f"quarantine/tables/models/{misplaced}.parquet", f"quarantine/tables/pairs/{unreadable}.parquet"}
    assert all(after[path] == before[path] for path in after if path in before)  # nothing else rewritten
    again = assess(cfg, run_dir, facts=measure(cfg))
    # Nothing left to change: only the weights, now missing, to train again.
    assert again.repairs == (Repair(f"model {truncated}: weights file missing", "", weights, "retrained"),)
    assert {mkey(cfg, *k) for k in again.models_todo} == retrained
    assert {pkey(cfg, *k) for k in again.pairs_todo} == users | {unreadable}

def test_analyze_during_a_live_sweep_says_so_and_never_advises_resume(tmp_path):
    import shutil

    from analysis.tables import RunTables
    from orchestrator.rundir.runlock import RunLock

    run_dir = str(tmp_path / "run")
    write_finished_run(run_dir)
    shutil.rmtree(RunTables(run_dir).tables_dir + "/pairs")  # the pairs are not done yet
    shutil.rmtree(RunTables(run_dir).tables_dir + "/curves")
    assert "landscape resume" in landscape_in_process("analyze", run_dir).stderr  # idle: resume is the advice
    lock = RunLock(run_dir)
    lock.acquire()  # the sweep's lock, as `landscape run` holds it
    try:
        proc = landscape_in_process("analyze", run_dir)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert f"a sweep is running in {run_dir}" in proc.stdout and "report:" in proc.stdout, proc.stdout
        assert "landscape resume" not in proc.stdout + proc.stderr, proc.stderr
        assert "the running sweep may still compute them" in proc.stderr, proc.stderr
        shutil.rmtree(RunTables(run_dir).tables_dir)  # nothing written yet
        empty = landscape_in_process("analyze", run_dir)
        assert_clean_error(empty, f"a sweep is running in {run_dir}", "nothing to analyse yet")
        assert "landscape resume" not in empty.stderr
    finally:
        lock.release()


def test_a_failed_save_of_tunes_state_on_a_full_disk_stops_the_sweep_without_a_traceback():
    import ray.tune.execution.experiment_state as experiment_state

    from orchestrator.driver.state import SweepState
    from orchestrator.driver.tune_adapters import TUNE_STATE_LOGGER, tune_state_write_failures

    assert experiment_state.logger.name == TUNE_STATE_LOGGER  # where Tune logs the failure (Ray 2.x)
    shown = []

    class Shown(logging.Handler):
        def emit(self, record):
            shown.append(record)

    handler = Shown()
    experiment_state.logger.addHandler(handler)
    state = SweepState()
    try:
        with tune_state_write_failures(state, "/runs/r"):
            for error in (OSError(errno.ENOSPC, "No space left on device"), RuntimeError("something else")):
                try:
                    raise error
                except Exception:
                    experiment_state.logger.error("Saving experiment state failed with exception: ", exc_info=True)
    finally:
        experiment_state.logger.removeHandler(handler)
    assert state.fatal == "cannot write /runs/r/tune: No space left on device"
    assert [r.exc_info[1].args for r in shown] == [("something else",)]  # other failures are shown as before
