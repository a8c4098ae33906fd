"""A colleague with write access to a shared run directory cannot make `landscape analyze`, `plot` or `status`
read, write or exhaust anything outside it (issue #18): links and devices are refused by name, names from the
tables never become paths outside the analysis folder, rows that do not belong are left out and listed, and
sizes declared in the tables are checked before anything is decoded.

Every case runs the command through click's runner on a synthetic run (no Ray, no training), as a user would.
"""

from __future__ import annotations

import os
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.tables import RunTables, model_key
from tests.analysis_synthetic import COMMON, write_synthetic_run
from tests.helpers import assert_clean_error, landscape_in_process
from tests.helpers import REPO_ROOT

CONFIG = os.path.join(REPO_ROOT, "orchestrator", "configs", "demo.yaml")


def analyze(*args):
    return landscape_in_process("analyze", *args)


def report_text(run: str) -> str:
    with open(os.path.join(run, "analysis", "report.html"), encoding="utf-8") as fh:
        return fh.read()


def model_row(width=8, batch=16, seed=0, **over):
    row = {**COMMON, "load_name": "width", "load_value": float(width), "temperature_name": "batch_size",
           "temperature_value": float(batch), "seed": seed, "status": "ok", "train_loss": 0.5, "train_acc": 0.8,
           "test_loss": 1.0, "test_acc": 0.5}
    row.update(over)
    return row


@pytest.fixture
def run_with_config(tmp_path):
    """A synthetic run with a real config.yaml whose hash its rows carry (what `landscape run` leaves)."""
    from orchestrator.config.run_config import load_run_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes(open(CONFIG, "rb").read())
    write_synthetic_run(str(run), config_hash=load_run_config(str(run)).config_hash())
    return str(run)


# ------------------------------------------------------------------------------------------------------------
# Links out of the run directory


def test_links_to_secrets_are_named_not_embedded(tmp_path, monkeypatch):
    """provenance.json -> /proc/self/environ and config.yaml -> a secret file: the analysis goes on, each link is
    named on stderr and in the report, and neither the environment nor the secret is in report.html."""
    monkeypatch.setenv("LANDSCAPE_TEST_TOKEN", "env-token-5f1e9c")
    secret = tmp_path / "secret"
    secret.write_text("api_key: secret-token-83d2a7\n")
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    os.symlink("/proc/self/environ", os.path.join(run, "provenance.json"))
    os.symlink(secret, os.path.join(run, "config.yaml"))
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    report = report_text(run)
    for leaked in ("env-token-5f1e9c", "secret-token-83d2a7"):
        assert leaked not in report and leaked not in proc.stdout + proc.stderr
    for name in ("provenance.json", "config.yaml"):
        assert f"{name} is left out of the report" in proc.stderr, proc.stderr
        assert f"{name} is left out of the report" in report
    assert "symbolic link" in proc.stderr


def test_links_to_dev_zero_are_refused_fast(tmp_path):
    """config.yaml, provenance.json and a table part -> /dev/zero: refused by name, at once (never read), by
    `status` as one error line and by `analyze`, which analyses the rest."""
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    for name in ("config.yaml", "provenance.json"):
        os.symlink("/dev/zero", os.path.join(run, name))
    part = os.path.join(run, "tables", "models", model_key("width", 8, "batch_size", 16, 0) + ".parquet")
    os.remove(part)
    os.symlink("/dev/zero", part)
    started = time.monotonic()
    assert_clean_error(landscape_in_process("status", run), "config.yaml", "symbolic link")
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert time.monotonic() - started < 120  # reading /dev/zero would not end (it ends at the OOM killer)
    assert "1 unreadable part(s) of table models" in proc.stderr and "symbolic link" in proc.stderr
    cells = pd.read_parquet(os.path.join(run, "analysis", "cells.parquet"))
    assert len(cells) == 16  # the rest is analysed


def test_a_linked_analysis_folder_is_refused(tmp_path):
    """RUN_DIR/analysis -> elsewhere would write the report and figures there: refused, nothing written."""
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, os.path.join(run, "analysis"))
    assert_clean_error(analyze(run), "analysis is a symbolic link", "--out DIR")
    assert list(elsewhere.iterdir()) == []


def test_a_link_planted_under_a_figure_name_is_replaced_not_written_through(tmp_path):
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.makedirs(os.path.join(run, "analysis"))
    os.symlink(victim, os.path.join(run, "analysis", "phase_map.png"))
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert victim.read_text() == "keep me"
    assert not os.path.islink(os.path.join(run, "analysis", "phase_map.png"))


# ------------------------------------------------------------------------------------------------------------
# Names from the tables


def test_a_traversal_in_a_knob_name_writes_nothing_outside(tmp_path):
    """A part whose rows name the load `x/../../../../../outside/PLANTED`: left out and named; no figure is
    written outside the analysis folder (the rest is analysed)."""
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    evil = "x/../../../../../outside/PLANTED"
    tables = RunTables(run)
    for seed in (0, 1):
        tables.write_part("models", f"planted-{seed}", [model_row(seed=seed, load_name=evil)])
    cell = {k: v for k, v in model_row(load_name=evil).items() if k in COMMON or k.endswith(("_name", "_value"))}
    tables.write_part("pairs", "planted", [{**cell, "seed_a": 0, "seed_b": 1, "status": "ok",
                                             "mode_connectivity": 1.0, "cka": 0.5}])
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    planted = [os.path.join(d, n) for d, _, names in os.walk(tmp_path) for n in names if "PLANTED" in n]
    assert planted == []
    assert "models/planted-0.parquet" in proc.stderr and "is not a load knob" in proc.stderr
    assert "pairs/planted.parquet" in proc.stderr


def test_figure_names_are_plain_file_names(tmp_path):
    from analysis.plots import figure_stem

    assert figure_stem(str(tmp_path), "phase_map__width__batch_size") == str(tmp_path / "phase_map__width__batch_size")
    for name in ("x/../../PLANTED", "..", "a/b", "", "phase map"):
        with pytest.raises(ValueError, match="not a plain file name"):
            figure_stem(str(tmp_path), name)


# ------------------------------------------------------------------------------------------------------------
# Rows that do not belong


def test_a_misnamed_copy_and_a_foreign_config_hash_are_left_out_and_listed(run_with_config):
    """`...seed=0 (copy).parquet` holding seed 1's row (status: "never counted") and a part of another config
    hash (status lists it, resume refuses it) are not analysed: not in cells.parquet, named on stderr and in the
    report."""
    run = run_with_config
    tables = RunTables(run)
    own_hash = pd.read_parquet(tables.part_uri("models", model_key("width", 8, "batch_size", 16, 1)))["config_hash"][0]
    copy_key = model_key("width", 8, "batch_size", 16, 0) + " (copy)"
    tables.write_part("models", copy_key, [model_row(8, 16, seed=1, config_hash=own_hash, test_acc=0.99)])
    foreign_key = model_key("width", 16, "batch_size", 16, 2)
    tables.write_part("models", foreign_key, [model_row(16, 16, seed=2, config_hash="ffffffffffffffff", test_acc=0.99)])
    status = landscape_in_process("status", run)
    assert "never counted" in status.stdout and "ffffffffffffffff" in status.stdout

    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    cells = pd.read_parquet(os.path.join(run, "analysis", "cells.parquet")).set_index(["load_value", "temperature_value"])
    assert cells.loc[(8.0, 16.0), "n_models"] == 3  # seeds 0, 1, 2 once each: the copy is not a fourth
    assert cells.loc[(16.0, 16.0), "n_models"] == 2  # the foreign seed 2 is left out
    assert cells["test_acc"].max() < 0.9  # neither planted 0.99 is averaged in
    report = report_text(run)
    for key, why in ((copy_key, "its rows are"), (foreign_key, "other settings")):
        assert f"models/{key}.parquet" in proc.stderr and why in proc.stderr, proc.stderr
        assert f"models/{key}.parquet" in report


# ------------------------------------------------------------------------------------------------------------
# Sizes declared in the tables


def test_a_crazy_format_in_the_metadata_is_harmless(tmp_path):
    """An added metric whose spec (Parquet field metadata) asks for the format "300000000": shown with a sane
    format instead, with a warning; the report stays small."""
    from workloads.metric_specs import MetricSpec, Panel, ReportColumn

    run = str(tmp_path / "run")
    write_synthetic_run(run)
    spec = MetricSpec("planted_metric", "model", panel=Panel("planted", fmt="300000000"),
                      report=ReportColumn("planted", fmt="300000000"))
    key = model_key("width", 8, "batch_size", 16, 0)
    RunTables(run).write_part("models", key, [model_row(train_loss=0.9, planted_metric=1.5)], added=(spec,))
    started = time.monotonic()
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "planted_metric" in proc.stderr and "'300000000'" in proc.stderr and "is not a number format" in proc.stderr
    assert os.path.getsize(os.path.join(run, "analysis", "report.html")) < 20 * 2**20
    assert time.monotonic() - started < 300


def test_history_with_an_absurd_epoch_is_left_out_by_name(tmp_path):
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    tables = RunTables(run)
    good = model_key("width", 8, "batch_size", 16, 0)
    bad = model_key("width", 8, "batch_size", 16, 1)
    def history(seed, epochs):
        row = {k: v for k, v in model_row(seed=seed).items() if k != "status"}
        return [{**row, "epoch": e, "lr": 0.1} for e in epochs]

    tables.write_part("history", good, history(0, range(5)))
    tables.write_part("history", bad, history(1, [0, 2**62]))
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert f"history/{bad}.parquet" in proc.stderr and "is not an epoch of a training" in proc.stderr


def test_a_part_declaring_too_many_rows_is_refused_before_decoding(tmp_path):
    from analysis.tables import MAX_PART_ROWS

    tables = RunTables(str(tmp_path))
    key = model_key("width", 8, "batch_size", 16, 0)
    row = {k: v for k, v in model_row().items() if k != "status"}
    tables.write_part("history", key, [{**row, "epoch": e} for e in range(MAX_PART_ROWS["history"] + 1)])
    scan = tables.scan("history")
    assert scan.frame.empty
    assert scan.unreadable and "rows, over the" in scan.unreadable[0][1] and key in scan.unreadable[0][1]


def test_text_that_unfolds_beyond_the_limit_is_refused(tmp_path):
    """A small part whose one long text value repeats in every row (dictionary-encoded: a few kB on disk) would
    decode to gigabytes: refused, measured before it is decoded."""
    from analysis.schemas import table_schema

    schema = table_schema("models")
    rows = 900
    columns = {f.name: pa.nulls(rows, f.type) for f in schema}
    columns.update(load_name=pa.array(["width"] * rows), temperature_name=pa.array(["batch_size"] * rows),
                   load_value=pa.array([8.0] * rows), temperature_value=pa.array([16.0] * rows),
                   seed=pa.array(range(rows), pa.int64()), schema_version=pa.array([1] * rows, pa.int32()),
                   error=pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["e" * 2**20])))
    folder = tmp_path / "tables" / "models"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(columns), folder / "bomb.parquet", compression="zstd")
    assert os.path.getsize(folder / "bomb.parquet") < 2**20
    scan = RunTables(str(tmp_path)).scan("models")
    assert scan.frame.empty and "decodes to" in scan.unreadable[0][1]
