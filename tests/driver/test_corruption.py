"""Damaged run directories and bad input through the `landscape` CLI: each is repaired or refused clearly.

* Repair (on the session's local Ray, the CLI in process): a truncated models part, a deleted weights file,
  a truncated weights file, a weights file with a damaged head, a truncated curves part, a weights file with
  flipped bytes inside a tensor (it still loads: only its content hash tells, which every plan checks), a
  part stored under another key's name, a copy `K (copy).parquet`, a user's own Parquet file among the parts,
  a temporary file of a write cut short, and a part written before the weights hash existed; `status` lists
  them without touching anything (and exits 1 for the finished models without usable weights; `status
  --quick` does not hash, and sees only the missing and truncated ones), `landscape resume` moves the foreign
  and broken parts and damaged weights aside (never
  deletes them), recomputes exactly those models and the pairs that depend on them, to the same numbers,
  and leaves every other file byte-identical.
* A full or read-only disk mid-sweep (a worker's write, the driver's write in a Tune callback): one
  `error:` line, exit 1, the resume hint, no temporary file; a resume then finishes. A sweep that ends
  incomplete exits 1 and says what is missing.
* Refused with one `error: ...` line and no traceback, before Ray starts: a run directory written with
  another schema version (also when its parts lack today's columns: they must not be "repaired" away), a
  damaged saved config.yaml, a missing dataset folder (`run` and `resume`).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from analysis.tables import SCHEMA_VERSION, RunTables
from orchestrator.rundir import runlock, storage
from orchestrator.config import load_config, parse_config
from orchestrator.planning.jobs import mkey, pkey
from tests.helpers import assert_clean_error, hygienic_env, landscape_run, snapshot
from tests.helpers import landscape_in_process as in_process

LRS = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]  # one cell per kind of damage, and one left alone


def tiny_yaml(path) -> str:
    raw = {
        "name": "corrupt",
        "workload": {"dataset": "digits", "model": "mlp"},
        "load": {"name": "width", "values": [8]},
        "temperature": {"name": "learning_rate", "values": LRS},
        "seeds": [0, 1],
        "training": {"epochs": 1, "batch_size": 64},
        "metrics": {"hessian_samples": 100, "hessian_eigen_max_iter": 10, "hessian_trace_max_probes": 5,
                    "cka_probes": 64, "curve": {"epochs": 1, "batch_size": 64, "points": 3}},
        "run": {"max_failures": 1},
    }
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture
def cli(ray_local, monkeypatch):
    """`landscape ...` in this process on the session's Ray (which the command must not shut down)."""
    import io

    import orchestrator.cli.main as cli_module
    import orchestrator.driver.execute as execute_module
    import orchestrator.driver.progress as progress

    monkeypatch.setattr(execute_module, "shutdown_ray", lambda: None)
    # Tune pickles its callbacks; click's captured stdout cannot be pickled (the real sys.stdout can).
    real = progress.make_progress
    monkeypatch.setattr(progress, "make_progress", lambda *a, **k: real(io.StringIO(), tty=False))
    sigterm = signal.getsignal(signal.SIGTERM)
    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(cli_module.main, list(args), catch_exceptions=False)
        return result

    yield invoke
    signal.signal(signal.SIGTERM, sigterm)


def run_snapshot(run_dir: str) -> dict:
    """Each table's parts and the weights: key -> (bytes, inode, mtime), so that a file written again with the
    same bytes differs too."""
    t = os.path.join(run_dir, "tables")
    return {"models": snapshot(f"{t}/models", ".parquet", identity=True),
            "pairs": snapshot(f"{t}/pairs", ".parquet", identity=True),
            "curves": snapshot(f"{t}/curves", ".parquet", identity=True),
            "weights": snapshot(f"{run_dir}/models", ".pt", identity=True)}


def truncate(path: str, size: int = 100) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def flip_tensor_byte(path: str) -> None:
    """Flip one byte inside the data of the largest tensor of a weights file: torch.load still reads it."""
    import torch

    data = bytearray(open(path, "rb").read())
    state = torch.load(io.BytesIO(bytes(data)), weights_only=True)
    biggest = max(state.values(), key=lambda t: t.numel())
    at = bytes(data).find(biggest.numpy().tobytes()[:64])
    assert at > 0
    data[at + 10] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))
    torch.load(io.BytesIO(bytes(data)), weights_only=True)  # the damage a loader alone does not see


@pytest.mark.ray
@pytest.mark.slow
def test_resume_repairs_exactly_what_was_damaged(cli, tmp_path):
    config = tiny_yaml(tmp_path / "corrupt.yaml")
    run_dir = str(tmp_path / "run")
    first = cli("run", config, "--out", run_dir, "--no-analysis")
    assert first.exit_code == 0, first.output
    cfg = parse_config(yaml.safe_load(open(config)))
    tables = RunTables(run_dir)
    m = lambda lr, seed: mkey(cfg, 8, lr, seed)  # noqa: E731
    p = lambda lr: pkey(cfg, 8, lr, 0, 1)  # noqa: E731
    models_dir = os.path.join(run_dir, "tables", "models")
    # 0. A part written before the weights hash existed (no such column): read as null, never recomputed.
    old_part = tables.part_uri("models", m(0.06, 1))
    pq.write_table(pq.read_table(old_part).drop_columns(["weights_sha256"]), old_part)
    before_rows = {t: tables.read(t) for t in ("models", "pairs", "curves")}
    before = run_snapshot(run_dir)
    weights = {k: storage.read_bytes(storage.model_uri(run_dir, k)) for k in before["weights"]}
    assert len(before["models"]) == 16 and len(before["pairs"]) == 8 and len(before["weights"]) == 16
    truncate(tables.part_uri("models", m(0.01, 0)))  # 1. a models part cut short
    os.remove(storage.model_uri(run_dir, m(0.02, 1)))  # 2. a weights file deleted
    truncate(storage.model_uri(run_dir, m(0.03, 0)), 5000)  # 3. a weights file cut short
    with open(storage.model_uri(run_dir, m(0.04, 1)), "r+b") as f:  # 4. its head damaged, its end intact:
        f.write(b"\0" * 64)  # its content hash tells
    truncate(tables.part_uri("curves", p(0.05)))  # 5. a curves part cut short
    # 6. a weights file with flipped bytes inside a tensor: it still loads; only its content hash tells. Its
    # pair stays done in the tables: the plan must find the damage and measure the pair again.
    flip_tensor_byte(storage.model_uri(run_dir, m(0.07, 0)))
    flipped = storage.read_bytes(storage.model_uri(run_dir, m(0.07, 0)))
    # 7. a part stored under another key's name: seed 0's row in seed 1's file (seed 1 must not look done)
    shutil.copy(tables.part_uri("models", m(0.08, 0)), tables.part_uri("models", m(0.08, 1)))
    # 8. cell 0.06 is left alone, but a copy of one of its parts appears (never a third seed), a file of
    # the user's sits among the parts (moved aside, never deleted), and a write was cut short (.tmp)
    shutil.copy(tables.part_uri("models", m(0.06, 0)), os.path.join(models_dir, f"{m(0.06, 0)} (copy).parquet"))
    pd.DataFrame({"x": [1, 2]}).to_parquet(os.path.join(models_dir, "mydata.parquet"))
    users = open(os.path.join(models_dir, "mydata.parquet"), "rb").read()
    with open(os.path.join(models_dir, f".{m(0.06, 0)}.{'0' * 32}.tmp"), "wb") as f:
        f.write(b"half a part")
    run_id = storage.read_run_info(run_dir)["run_id"]
    with open(os.path.join(run_dir, "run.json"), "w") as f:  # 6. run.json valid JSON, but not the run's record
        f.write("[1, 2]")

    # `status` sees every damage without repairing anything.
    damaged = run_snapshot(run_dir)
    quick = cli("status", run_dir, "--quick")  # no hashing: sees the missing and the truncated weights only
    assert quick.exit_code == 1 and "2 ok model(s) without usable weights" in quick.output, quick.output
    status = cli("status", run_dir)
    assert status.exit_code == 1, status.output  # finished work that is not usable: a problem
    assert "problem: 4 finished model(s) without usable weights" in status.output, status.output
    assert "2 unreadable part(s)" in status.output and "4 ok model(s) without usable weights" in status.output
    for line in (f"model {m(0.02, 1)}: weights file missing", f"model {m(0.03, 0)}: weights file truncated",
                 f"model {m(0.04, 1)}: weights file damaged (its sha256 differs",
                 f"model {m(0.07, 0)}: weights file damaged (its sha256 differs",
                 "2 models part(s) not holding their own key (2 duplicate(s))", f"{m(0.08, 1)}.parquet: its rows are "
                 f"{m(0.08, 0)}", f"{m(0.06, 0)} (copy).parquet", "1 unreadable part(s), moved aside and recomputed "
                 f"by resume: {p(0.05)}", f"1 ok pair(s) without a readable curve part, recomputed by resume: {p(0.05)}"):
        assert line in status.output, status.output
    assert f"missing {m(0.08, 1)}" in status.output  # its file holds another key: not done
    assert run_snapshot(run_dir) == damaged

    resumed = cli("resume", run_dir, "--no-analysis")
    assert resumed.exit_code == 0, resumed.output
    out = resumed.output
    assert "Traceback" not in out
    for note in (f"unreadable models part {m(0.01, 0)}", f"model {m(0.02, 1)}: weights file missing",
                 f"model {m(0.03, 0)}: weights file truncated", f"unreadable curves part {p(0.05)}",
                 f"model {m(0.07, 0)}: weights file damaged (its sha256 differs from the one its models row "
                 f"records): moved to",
                 f"run.json was damaged: rewritten with the run id of the tables ({run_id})",
                 f"models part {m(0.08, 1)}.parquet does not hold {m(0.08, 1)}", "unreadable models part mydata",
                 f"models part {m(0.06, 0)} (copy).parquet does not hold", "removed 1 temporary file(s)"):
        assert note in out, out
    assert storage.read_run_info(run_dir)["run_id"] == run_id
    assert (tables.read("models").run_id == run_id).all()  # old and new rows still name one run
    assert "16/16 models, 8/8 pairs done" in out, out
    # Nothing of the user's was deleted: moved aside, with the same bytes, and said where.
    quarantine = os.path.join(run_dir, "quarantine", "tables", "models")
    assert open(os.path.join(quarantine, "mydata.parquet"), "rb").read() == users
    assert sorted(os.listdir(quarantine)) == sorted(["mydata.parquet", f"{m(0.06, 0)} (copy).parquet",
                                                     f"{m(0.08, 1)}.parquet", f"{m(0.01, 0)}.parquet"])
    assert not [n for n in os.listdir(models_dir) if n.endswith(".tmp")]
    assert open(os.path.join(run_dir, "quarantine", "models", f"{m(0.07, 0)}.pt"), "rb").read() == flipped

    # Every key exactly once, everything ok.
    models, pairs, curves = (tables.read(t) for t in ("models", "pairs", "curves"))
    assert len(models) == 16 and not models.duplicated(["temperature_value", "seed"]).any()
    assert len(pairs) == 8 and not pairs.duplicated(["temperature_value"]).any()
    assert len(curves) == 8 * 3 and not curves.duplicated(["temperature_value", "t"]).any()
    assert (models.status == "ok").all() and (pairs.status == "ok").all(), pairs[["temperature_value", "error"]]
    assert models.set_index(["temperature_value", "seed"]).weights_sha256.drop((0.06, 1)).notna().all()

    # Exactly the damaged models and the pairs that depend on them were recomputed; every other file
    # has the same bytes as before (the part without a hash column included).
    after = run_snapshot(run_dir)
    damaged_models = {m(0.01, 0), m(0.02, 1), m(0.03, 0), m(0.04, 1), m(0.07, 0), m(0.08, 1)}
    changed = {t: {k for k in after[t] if after[t][k] != before[t].get(k)} for t in after}
    assert changed["models"] == damaged_models
    assert changed["weights"] == damaged_models  # m(0.08, 1) retrained: its file written again, same tensors
    assert changed["pairs"] == {p(lr) for lr in (0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.08)}
    assert changed["curves"] == {p(lr) for lr in (0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.08)}
    assert set(after["models"]) == set(before["models"]) and set(after["pairs"]) == set(before["pairs"])
    for key in damaged_models:  # the retrained weights hold the same tensors as the lost ones
        import torch

        old, new = (torch.load(io.BytesIO(blob), weights_only=True) for blob in (weights[key], storage.read_bytes(
            storage.model_uri(run_dir, key))))
        assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old), key

    # ... to the same numbers (seeded, one thread per job): a repair never changes a result.
    numbers = {"models": ["train_loss", "train_acc", "test_loss", "test_acc", "hessian_top_eigenvalue",
                          "hessian_trace"],
               "pairs": ["mode_connectivity", "t_star", "cka", "l2_distance"],
               "curves": ["train_error", "train_loss", "test_error", "test_loss"]}
    keys = {"models": ["temperature_value", "seed"], "pairs": ["temperature_value"],
            "curves": ["temperature_value", "t"]}
    for table, cols in numbers.items():
        old = before_rows[table].set_index(keys[table]).sort_index()[cols]
        new = tables.read(table).set_index(keys[table]).sort_index()[cols]
        # The Hessian estimates of a cohort's members are batched over the cohort: the 6 models the resume
        # retrains form cohorts of other sizes than the run's, which sum in another order and move the last
        # bits (measured: up to 5e-8 relative, only in those cohorts). Everything else is bit-identical.
        hessian = [c for c in cols if c.startswith("hessian_")]
        pd.testing.assert_frame_equal(old.drop(columns=hessian), new.drop(columns=hessian), check_exact=True)
        pd.testing.assert_frame_equal(old[hessian], new[hessian], check_exact=False, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Refused before Ray starts


def no_ray_started(ray_tmpdir: str) -> bool:
    return not os.listdir(ray_tmpdir)  # Ray would have made its session folder here


def model_row(cfg, seed: int, **changes) -> dict:
    row = {"run_id": "old", "config_hash": cfg.config_hash(), "load_name": "width", "load_value": 8.0,
           "temperature_name": "batch_size", "temperature_value": 32.0, "seed": seed, "status": "ok"}
    return {**row, **changes}


def test_a_run_dir_of_another_schema_version_is_refused_not_repaired(short_tmp, ray_tmpdir):
    import pyarrow.parquet as pq

    cfg = load_config("smoke")
    run_dir = os.path.join(short_tmp, "old")
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    tables = RunTables(run_dir)
    tables.write_part("models", mkey(cfg, 8, 32, 0), [model_row(cfg, 0, schema_version=SCHEMA_VERSION + 1)])
    # A part of an older layout: readable Parquet, its version, but not today's columns.
    path = tables.part_uri("models", mkey(cfg, 8, 32, 1))
    tables.write_part("models", mkey(cfg, 8, 32, 1), [model_row(cfg, 1, schema_version=SCHEMA_VERSION - 1)])
    pq.write_table(pq.read_table(path).drop_columns(["hessian_trace"]), path)
    parts = sorted(os.listdir(os.path.join(run_dir, "tables", "models")))

    env = hygienic_env(ray_tmpdir)
    assert_clean_error(landscape_run("resume", run_dir, env=env, timeout=120), "schema version")
    for args in (["status", run_dir], ["run", "smoke", "--out", run_dir, "--no-analysis"]):
        assert_clean_error(in_process(*args), "schema version")
    assert sorted(os.listdir(os.path.join(run_dir, "tables", "models"))) == parts  # nothing deleted
    assert no_ray_started(ray_tmpdir)


def test_a_damaged_saved_config_is_a_clean_error(short_tmp, ray_tmpdir):
    env = hygienic_env(ray_tmpdir)
    run_dir = os.path.join(short_tmp, "run")
    os.makedirs(run_dir)
    cases = {
        "binary": bytes(range(256)) * 8,
        "not yaml": b"name: [smoke\n",
        "a list": b"- 1\n- 2\n",
        "run is a list": yaml.safe_dump({**load_config("smoke").to_dict(), "run": [1, 2]}).encode(),
        "unknown key": yaml.safe_dump({**load_config("smoke").to_dict(), "future_setting": 1}).encode(),
        "empty": b"",
        "a key twice": b"name: smoke\nname: other\n",
    }
    for name, data in cases.items():
        with open(os.path.join(run_dir, "config.yaml"), "wb") as f:
            f.write(data)
        for args in (["resume", run_dir], ["status", run_dir]):
            assert_clean_error(in_process(*args), "config.yaml")
            if name in ("binary", "not yaml", "empty", "a key twice"):  # unreadable: say how to get it back
                assert_clean_error(in_process(*args), "restore the run's config.yaml")
        if name == "empty":
            assert_clean_error(in_process("status", run_dir), "config.yaml is empty")
        if name == "binary":
            assert_clean_error(landscape_run("resume", run_dir, env=env, timeout=120), "config.yaml",
                               "not valid YAML")
    assert no_ray_started(ray_tmpdir)


def test_status_of_a_run_dir_whose_table_folder_is_a_file_is_a_clean_error(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "tables").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(load_config("smoke").to_yaml())
    (run_dir / "tables" / "models").write_text("not a folder")
    assert_clean_error(in_process("status", str(run_dir)), "cannot read the run directory", "tables/<table>/")


def test_a_missing_dataset_folder_is_a_clean_error_at_once(short_tmp, ray_tmpdir):
    env = hygienic_env(ray_tmpdir)
    run_dir = os.path.join(short_tmp, "cifar")
    started = time.monotonic()
    proc = landscape_run("run", "smoke", "--out", run_dir, "--set", "workload.dataset=cifar10",
                         "--set", "workload.data_root=/nonexistent/cifar", env=env, timeout=120)
    assert_clean_error(proc, "workload.data_root", "/nonexistent/cifar", "does not exist")
    assert time.monotonic() - started < 60
    assert not os.path.exists(run_dir)

    # A run whose data folder has gone since: `resume` says so too.
    cfg = load_config("smoke", ["workload.dataset=cifar10", "workload.data_root=/nonexistent/cifar"],
                      check_data=False)
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    assert_clean_error(landscape_run("resume", run_dir, env=env, timeout=120), "workload.data_root",
                       "does not exist")
    assert no_ray_started(ray_tmpdir)


# ---------------------------------------------------------------------------------------------------------
# A full or read-only disk mid-sweep


def _one_error_line(result) -> str:
    err = result.stderr.strip()
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.ray
@pytest.mark.slow
def test_a_full_disk_mid_sweep_stops_with_one_error_line_and_resume_continues(cli, tmp_path, monkeypatch):
    """ENOSPC (or EROFS) where a worker writes a part, then where the driver records a failed job (inside a
    Tune callback): each ends the command at once with one `error:` line, exit 1 and the resume hint, no
    temporary file left; everything written stays, and a resume finishes the sweep. The disk is made full
    by the fault hook (no root tricks: a real full disk cannot be made safely on a shared machine)."""
    import json

    from orchestrator.rundir.fault_hook import FAULT_INJECT_ENV

    config = tiny_yaml(tmp_path / "corrupt.yaml")
    run_dir = str(tmp_path / "run")
    cfg = parse_config(yaml.safe_load(open(config)))
    grid = ["--set", "temperature.values=[0.01, 0.02]", "--set", "run.max_failures=0"]

    def with_faults(*faults):
        path = tmp_path / f"faults-{len(list(tmp_path.glob('faults-*')))}.json"
        path.write_text(json.dumps({"crash": list(faults)}))
        monkeypatch.setenv(FAULT_INJECT_ENV, str(path))

    def temporary_files():
        return [os.path.join(d, n) for d, _, names in os.walk(run_dir) for n in names if n.endswith(".tmp")]

    # 1. A worker's write: its weights file cannot be written.
    full = mkey(cfg, 8, 0.02, 1)
    with_faults({"key": full, "mode": "enospc"})
    first = cli("run", config, "--out", run_dir, "--no-analysis", *grid)
    assert first.exit_code == 1, first.output
    err = _one_error_line(first)
    for fragment in ("cannot write", full, "No space left on device", f"landscape resume {run_dir}"):
        assert fragment in err, err
    assert not temporary_files() and runlock.lock_holder(run_dir) is None
    assert full not in RunTables(run_dir).part_keys("models")

    # 2. The driver's write, from a Tune callback: a job that fails, whose failed row cannot be written.
    failing = full  # not done: the resume runs it again
    with_faults({"key": failing, "mode": "raise"}, {"key": failing, "mode": "erofs"})
    second = cli("resume", run_dir, "--no-analysis", "--set", "run.max_failures=0")
    assert second.exit_code == 1, second.output
    err = _one_error_line(second)
    for fragment in ("cannot write", failing, "Read-only file system", f"landscape resume {run_dir}"):
        assert fragment in err, err
    assert not temporary_files() and runlock.lock_holder(run_dir) is None

    # 3. Space again: the resume finishes, keeping what was done.
    monkeypatch.delenv(FAULT_INJECT_ENV)
    done = set(RunTables(run_dir).part_keys("models"))
    third = cli("resume", run_dir, "--no-analysis")
    assert third.exit_code == 0, third.output
    assert "4/4 models, 2/2 pairs done" in third.output
    assert done <= set(RunTables(run_dir).part_keys("models"))


@pytest.mark.ray
def test_a_sweep_that_ends_incomplete_exits_1_and_says_what_is_missing(cli, tmp_path, monkeypatch):
    """A job that keeps failing: the sweep finishes everything else, then exits 1 naming what is not done
    (an incomplete sweep without failed rows used to exit 0)."""
    import json

    from orchestrator.rundir.fault_hook import FAULT_INJECT_ENV

    config = tiny_yaml(tmp_path / "corrupt.yaml")
    cfg = parse_config(yaml.safe_load(open(config)))
    failing = mkey(cfg, 8, 0.01, 1)
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"crash": [{"key": failing, "mode": "raise"}]}))
    monkeypatch.setenv(FAULT_INJECT_ENV, str(faults))
    run_dir = str(tmp_path / "run")
    # One model per trial: in a cohort the failing model's trial would take its cohort's other members with it.
    result = cli("run", config, "--out", run_dir, "--no-analysis", "--set", "temperature.values=[0.01, 0.02]",
                 "--set", "run.max_failures=0", "--set", "execution.cohort=off")
    assert result.exit_code == 1, result.output
    assert "3/4 models, 1/2 pairs done" in result.output
    assert f"injected fault in {failing}" in result.stderr
    assert (f"sweep incomplete: 1 model(s) and 1 pair(s) not done (failed or never finished), e.g. {failing}; "
            f"see `landscape status {run_dir}`, then `landscape resume {run_dir}`") in result.stderr
    assert "Traceback" not in result.output + result.stderr
