"""Damaged run directories and bad input through the `landscape` CLI: each is repaired or refused clearly.

* Repair (on the session's local Ray, the CLI in process): a truncated models part, a deleted weights file,
  a truncated weights file, a weights file with a damaged head (only a pair job reading it can tell) and a
  truncated curves part; `landscape resume` recomputes exactly those models and the pairs that depend on
  them, to the same numbers, and leaves every other file byte-identical.
* Refused with one `error: ...` line and no traceback, before Ray starts: a run directory written with
  another schema version (also when its parts lack today's columns: they must not be "repaired" away), a
  damaged saved config.yaml, a missing dataset folder (`run` and `resume`).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from analysis.tables import SCHEMA_VERSION, RunTables
from orchestrator import storage
from orchestrator.config import load_config, parse_config
from orchestrator.sweep import mkey, pkey
from tests.conftest import assert_clean_error, hygienic_env, landscape_cmd
from tests.conftest import landscape_in_process as in_process

LRS = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]  # one cell per kind of damage, and one left alone


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

    import orchestrator.cli as cli_module
    import orchestrator.progress as progress

    monkeypatch.setattr(cli_module, "_shutdown_ray", lambda: None)
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


def digests(folder: str, suffix: str) -> dict[str, tuple]:
    """File name -> (sha256 of its bytes, inode, mtime) for every file of ``folder`` ending in ``suffix``:
    a file written again (atomically: a new inode) differs even when its bytes are the same."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(suffix) and not name.startswith("."):
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            st = os.stat(path)
            out[name[: -len(suffix)]] = (digest, st.st_ino, st.st_mtime_ns)
    return out


def snapshot(run_dir: str) -> dict:
    t = os.path.join(run_dir, "tables")
    return {"models": digests(f"{t}/models", ".parquet"), "pairs": digests(f"{t}/pairs", ".parquet"),
            "curves": digests(f"{t}/curves", ".parquet"), "weights": digests(f"{run_dir}/models", ".pt")}


def truncate(path: str, size: int = 100) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.ray
@pytest.mark.slow
def test_resume_repairs_exactly_what_was_damaged(cli, tmp_path):
    config = tiny_yaml(tmp_path / "corrupt.yaml")
    run_dir = str(tmp_path / "run")
    first = cli("run", config, "--out", run_dir, "--no-analysis")
    assert first.exit_code == 0, first.output
    cfg = parse_config(yaml.safe_load(open(config)))
    tables = RunTables(run_dir)
    before_rows = {t: tables.read(t) for t in ("models", "pairs", "curves")}
    before = snapshot(run_dir)
    weights = {k: storage.read_bytes(storage.model_uri(run_dir, k)) for k in before["weights"]}
    assert len(before["models"]) == 12 and len(before["pairs"]) == 6 and len(before["weights"]) == 12

    m = lambda lr, seed: mkey(cfg, 8, lr, seed)  # noqa: E731
    p = lambda lr: pkey(cfg, 8, lr, 0, 1)  # noqa: E731
    truncate(tables.part_uri("models", m(0.01, 0)))  # 1. a models part cut short
    os.remove(storage.model_uri(run_dir, m(0.02, 1)))  # 2. a weights file deleted
    truncate(storage.model_uri(run_dir, m(0.03, 0)), 5000)  # 3. a weights file cut short
    with open(storage.model_uri(run_dir, m(0.04, 1)), "r+b") as f:  # 4. its head damaged, its end intact:
        f.write(b"\0" * 64)  # only a pair job loading it can tell; so its pair is made to run again
    os.remove(tables.part_uri("pairs", p(0.04)))
    truncate(tables.part_uri("curves", p(0.05)))  # 5. a curves part cut short
    # cell 0.06: left alone
    run_id = storage.read_run_info(run_dir)["run_id"]
    with open(os.path.join(run_dir, "run.json"), "w") as f:  # 6. run.json valid JSON, but not the run's record
        f.write("[1, 2]")

    # `status` sees every damage without repairing anything.
    damaged = snapshot(run_dir)
    status = cli("status", run_dir)
    assert status.exit_code == 0, status.output
    assert "1 unreadable part(s)" in status.output and "2 ok model(s) without usable weights" in status.output
    for line in (f"model {m(0.02, 1)}: weights file missing", f"model {m(0.03, 0)}: weights file truncated"):
        assert line in status.output, status.output
    assert snapshot(run_dir) == damaged

    resumed = cli("resume", run_dir, "--no-analysis")
    assert resumed.exit_code == 0, resumed.output
    out = resumed.output
    assert "Traceback" not in out
    for note in (f"unreadable models part {m(0.01, 0)}", f"model {m(0.02, 1)}: weights file missing",
                 f"model {m(0.03, 0)}: weights file truncated", f"unreadable curves part {p(0.05)}",
                 f"run.json was damaged: rewritten with the run id of the tables ({run_id})"):
        assert note in out, out
    assert storage.read_run_info(run_dir)["run_id"] == run_id
    assert (tables.read("models").run_id == run_id).all()  # old and new rows still name one run
    assert "12/12 models, 6/6 pairs done" in out, out

    # Every key exactly once, everything ok.
    models, pairs, curves = (tables.read(t) for t in ("models", "pairs", "curves"))
    assert len(models) == 12 and not models.duplicated(["temperature_value", "seed"]).any()
    assert len(pairs) == 6 and not pairs.duplicated(["temperature_value"]).any()
    assert len(curves) == 6 * 3 and not curves.duplicated(["temperature_value", "t"]).any()
    assert (models.status == "ok").all() and (pairs.status == "ok").all(), pairs[["temperature_value", "error"]]

    # Exactly the damaged models and the pairs that depend on them were recomputed; every other file
    # has the same bytes as before.
    after = snapshot(run_dir)
    damaged_models = {m(0.01, 0), m(0.02, 1), m(0.03, 0), m(0.04, 1)}
    changed = {t: {k for k in after[t] if after[t][k] != before[t].get(k)} for t in after}
    assert changed["models"] == damaged_models
    assert changed["weights"] == damaged_models
    assert changed["pairs"] == {p(lr) for lr in (0.01, 0.02, 0.03, 0.04, 0.05)}
    assert changed["curves"] == {p(lr) for lr in (0.01, 0.02, 0.03, 0.04, 0.05)}
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
        pd.testing.assert_frame_equal(old, new, check_exact=True)


# ---------------------------------------------------------------------------------------------------------
# Refused before Ray starts


def landscape(*args, env, timeout=120) -> subprocess.CompletedProcess:
    """The real console script (one case per test: a process costs seconds of imports)."""
    return subprocess.run(landscape_cmd() + list(args), capture_output=True, text=True, env=env, timeout=timeout)


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
    assert_clean_error(landscape("resume", run_dir, env=env), "schema version")
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
            assert_clean_error(landscape("resume", run_dir, env=env), "config.yaml", "not valid YAML")
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
    proc = landscape("run", "smoke", "--out", run_dir, "--set", "workload.dataset=cifar10",
                     "--set", "workload.data_root=/nonexistent/cifar", env=env)
    assert_clean_error(proc, "workload.data_root", "/nonexistent/cifar", "does not exist")
    assert time.monotonic() - started < 60
    assert not os.path.exists(run_dir)

    # A run whose data folder has gone since: `resume` says so too.
    cfg = load_config("smoke", ["workload.dataset=cifar10", "workload.data_root=/nonexistent/cifar"],
                      check_data=False)
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    assert_clean_error(landscape("resume", run_dir, env=env), "workload.data_root", "does not exist")
    assert no_ray_started(ray_tmpdir)
