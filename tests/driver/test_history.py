"""Training histories and live views: the history table, the per-epoch Tune reports, Tune's logger callbacks.

The end-to-end test runs `landscape run smoke --log tensorboard` on one width (4 models, 2 pairs) and reads
the event files back with the tensorboard package (what `tensorboard --logdir RUN_DIR/tune` reads), checking
them against the history table. The acceptance test for the table on the full smoke grid is in
tests/cli/test_cli.py (test_smoke_through_the_cli).
"""

from __future__ import annotations

import glob
import os
import subprocess

import pytest

from analysis.schemas import HISTORY_SCHEMA
from analysis.tables import RunTables
from tests.helpers import assert_clean_error, hygienic_env, landscape_cmd, landscape_in_process

SMOKE_EPOCHS = 3


def test_epoch_result_is_the_mean_over_the_models_of_a_job():
    from orchestrator.worker.history import epoch_result

    one = {"epoch": 4, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "seconds": 2.0, "test_loss": None,
           "test_acc": None}
    two = {**one, "train_loss": 3.0, "train_acc": 0.7, "seconds": 4.0}
    result = epoch_result("K", [one, two])
    assert result == {"kind": "model", "key": "K", "epoch": 5, "models": 2, "epoch_lr": 0.1,
                      "epoch_train_loss": 2.0, "epoch_train_acc": pytest.approx(0.6), "epoch_seconds": 3.0}
    assert "status" not in result  # the job's last report (its status) is the one the searcher reads
    evaluated = epoch_result("K", [{**one, "test_loss": 2.5, "test_acc": 0.25}])
    assert (evaluated["epoch_test_loss"], evaluated["epoch_test_acc"]) == (2.5, 0.25)
    assert "epoch_train_loss" not in epoch_result("K", [{**one, "train_loss": float("nan")}])


def test_history_rows_name_the_model_and_null_what_an_entry_lacks():
    from workloads.rows import history_rows

    keys = {"load_name": "width", "load_value": 8.0, "temperature_name": "batch_size", "temperature_value": 32.0}
    rows = history_rows(keys, 1, [{"epoch": 0, "lr": 0.1, "train_loss": 2.0, "train_acc": 0.1, "seconds": 0.5}])
    assert rows == [{**keys, "seed": 1, "epoch": 0, "lr": 0.1, "train_loss": 2.0, "train_acc": 0.1,
                     "test_loss": None, "test_acc": None, "seconds": 0.5}]
    assert set(rows[0]) | {"run_id", "config_hash", "package_version", "library_versions", "schema_version"} == set(
        HISTORY_SCHEMA.names)


def test_a_run_without_history_reads_as_an_empty_table(tmp_path):
    """Runs made before the table existed have no history parts: reading gives the schema's columns, no rows."""
    frame = RunTables(str(tmp_path)).read("history")
    assert len(frame) == 0 and list(frame.columns) == HISTORY_SCHEMA.names


def test_eval_every_and_logging_leave_the_config_hash_alone():
    from orchestrator.config import load_config

    base = load_config("smoke", []).config_hash()
    assert load_config("smoke", ["training.eval_every=1"]).config_hash() == base
    assert load_config("smoke", ["logging=[tensorboard]"]).config_hash() == base
    assert load_config("smoke", ["training.epochs=4"]).config_hash() != base


def test_unknown_or_missing_logger_is_one_clear_error_before_ray(tmp_path, monkeypatch):
    from orchestrator.driver import loggers

    out = str(tmp_path / "run")
    assert_clean_error(landscape_in_process("run", "smoke", "--out", out, "--log", "tensorbord"),
                       "unknown logger 'tensorbord'", "tensorboard, wandb, mlflow")
    monkeypatch.setattr(loggers, "installed", lambda package: package != "wandb")
    assert_clean_error(landscape_in_process("run", "smoke", "--out", out, "--log", "wandb"),
                       "wandb needs the wandb package", "pip install wandb")
    assert_clean_error(landscape_in_process("validate", "smoke", "--set", "logging=[mlfow]"), "unknown logger 'mlfow'")
    assert not os.path.exists(out)  # refused before anything was written
    # resume takes --log as well, checked the same way before the run directory is touched
    from orchestrator.config import load_config

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.yaml").write_text(load_config("smoke", []).to_yaml())
    assert_clean_error(landscape_in_process("resume", str(existing), "--log", "wandb"), "pip install wandb")
    assert sorted(os.listdir(existing)) == ["config.yaml"]


def test_tensorboard_reads_every_epoch_of_a_smoke_run(short_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = os.path.join(short_tmp, "smoke")
    # One trial per model (execution.cohort: off: cohorts of one), so each model's epochs are one event file; the
    # cohort form (one file per cohort: the mean over its members) is the next test.
    proc = subprocess.run(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis", "--log",
                                             "tensorboard", "--set", "load.values=[8]", "--set", "execution.cohort=off"],
                          capture_output=True, text=True, timeout=300, env=hygienic_env())
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    history = RunTables(run_dir).read("history")
    assert len(history) == 4 * SMOKE_EPOCHS and history.groupby(["temperature_value", "seed"]).size().eq(3).all()
    per_model = [list(g.sort_values("epoch").train_loss) for _, g in history.groupby(["temperature_value", "seed"])]

    model_dirs = sorted(glob.glob(os.path.join(run_dir, "tune", "*", "model_*")))
    assert len(model_dirs) == 4, model_dirs
    matched = []
    for folder in model_dirs:
        events = EventAccumulator(folder)
        events.Reload()
        scalars = events.Tags()["scalars"]
        assert "ray/tune/epoch_train_loss" in scalars and "ray/tune/epoch_test_acc" in scalars, scalars
        points = events.Scalars("ray/tune/epoch_train_loss")
        assert [p.step for p in points] == [1, 2, 3]  # one Tune iteration per epoch, then the final result
        values = [p.value for p in points]  # float32 in the event file
        matched += [i for i, losses in enumerate(per_model) if values == pytest.approx(losses, rel=1e-6)]
        # The final result last, each member's numbers under its label (a cohort of one: its seed).
        (final,) = [t for t in scalars if t.startswith("ray/tune/seed_") and t.endswith("/test_acc")]
        assert events.Scalars(final)[-1].step == SMOKE_EPOCHS + 1
    assert sorted(matched) == [0, 1, 2, 3]  # each model's epochs in TensorBoard are its rows of the history table


def test_a_cohort_trial_reports_the_mean_of_its_members_and_writes_every_members_history(short_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = os.path.join(short_tmp, "smoke")
    proc = subprocess.run(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis", "--log",
                                             "tensorboard", "--set", "load.values=[8]"],
                          capture_output=True, text=True, timeout=300, env=hygienic_env())
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    tables = RunTables(run_dir)
    models, history = tables.read("models"), tables.read("history")
    assert models.cohort.notna().all() and models.cohort.nunique() < len(models)  # trained as cohorts
    assert len(history) == 4 * SMOKE_EPOCHS
    # The last epoch's test point is the models row's final evaluation (the same full test set, eval mode).
    last = history[history.epoch == SMOKE_EPOCHS - 1].merge(models, on=["temperature_value", "seed"],
                                                             suffixes=("", "_row"))
    assert last.test_acc.to_numpy() == pytest.approx(last.test_acc_row.to_numpy(), abs=1e-12)
    folders = sorted(glob.glob(os.path.join(run_dir, "tune", "*", "model_*")))
    assert len(folders) == models.cohort.nunique(), folders
    # Each cohort's curve is the mean over its members' histories (which cohort is which folder: by value).
    means = [list(history.merge(members[["temperature_value", "seed"]]).groupby("epoch").train_loss.mean())
             for _, members in models.groupby("cohort")]
    seen = []
    for folder in folders:
        events = EventAccumulator(folder)
        events.Reload()
        points = events.Scalars("ray/tune/epoch_train_loss")
        assert [p.step for p in points] == list(range(1, SMOKE_EPOCHS + 1))
        values = [p.value for p in points]
        seen += [i for i, m in enumerate(means) if values == pytest.approx(m, rel=1e-6)]
    assert sorted(seen) == list(range(len(means)))


# ---------------------------------------------------------------------------------------------------------
# Analysis: training curves per cell (no Ray, no torch: a hand-made run)


def _write_history(tables, width, batch, seeds=(0, 1, 2), epochs=6):
    """Histories with known numbers: train loss 2 / (epoch + 1) + seed / 100, the test set after epochs 2 and 5."""
    from tests.analysis_synthetic import COMMON, cell_id
    from analysis.tables import model_key

    for seed in seeds:
        rows = [{**COMMON, **cell_id(width, batch), "seed": seed, "epoch": e, "lr": 0.1,
                 "train_loss": 2 / (e + 1) + seed / 100, "train_acc": 0.5, "seconds": 0.1,
                 "test_loss": 1.0 if e in (2, 5) else None, "test_acc": 0.6 + e / 100 if e in (2, 5) else None}
                for e in range(epochs)]
        tables.write_part("history", model_key("width", width, "batch_size", batch, seed), rows)


def test_cell_history_gives_each_seeds_curves(tmp_path):
    from analysis.history_data import cell_history
    from tests.analysis_synthetic import write_synthetic_run

    tables = write_synthetic_run(str(tmp_path))
    _write_history(tables, 64, 128)
    data = cell_history(tables.read("history"), 64, 128)
    assert [s.seed for s in data.seeds] == [0, 1, 2] and data.title == "width=64, batch_size=128"
    one = data.seeds[1]
    assert one.epoch.tolist() == [1, 2, 3, 4, 5, 6]  # epochs done
    assert one.train_loss.tolist() == pytest.approx([2 / k + 0.01 for k in range(1, 7)])
    assert one.test_epoch.tolist() == [3, 6] and one.test_acc.tolist() == pytest.approx([0.62, 0.65])
    assert cell_history(tables.read("history"), 8, 16) is None  # no history for that cell


def test_the_report_shows_training_curves_when_the_run_has_a_history(tmp_path):
    from analysis.api import analyze_run
    from tests.analysis_synthetic import CELLS, write_synthetic_run

    old = str(tmp_path / "old")
    write_synthetic_run(old)  # a run made before the history table: analysed as before
    result = analyze_run(old)
    assert "training" not in result.figures
    assert "Training curves" not in open(result.report_path).read()

    new = str(tmp_path / "new")
    tables = write_synthetic_run(new)
    for width, batch in CELLS:
        _write_history(tables, width, batch)
    result = analyze_run(new)
    assert os.path.getsize(result.figures["training"]["png"]) > 0 and result.figures["training"]["pdf"]
    report = open(result.report_path).read()
    assert "Training curves of representative cells" in report and 'alt="training curves: ' in report


def test_landscape_plot_draws_any_cell_and_names_the_grid_for_a_wrong_one(tmp_path):
    from tests.analysis_synthetic import write_synthetic_run

    run_dir = str(tmp_path / "run")
    tables = write_synthetic_run(run_dir)
    _write_history(tables, 16, 32)
    proc = landscape_in_process("plot", run_dir, "--cell", "width=16,batch_size=32")
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip()
    assert path == os.path.join(run_dir, "analysis", "training__width=16__batch_size=32.png")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    # the knobs in either order
    assert landscape_in_process("plot", run_dir, "--cell", "batch_size=32, width=16").returncode == 0

    assert_clean_error(landscape_in_process("plot", run_dir, "--cell", "width=12,batch_size=32"),
                       "not a cell of this run's grid", "width in [8, 16, 32, 64]", "batch_size in [16, 32, 64, 128]")
    assert_clean_error(landscape_in_process("plot", run_dir, "--cell", "width=16"), "must name this run's load and "
                       "temperature knobs", "e.g. width=8,batch_size=16")
    assert_clean_error(landscape_in_process("plot", run_dir, "--cell", "width:16"), "KNOB=VALUE,KNOB=VALUE")
    assert_clean_error(landscape_in_process("plot", run_dir, "--cell", "width=8,batch_size=16"),
                       "no training history for width=8, batch_size=16", "runs made before the history table")


def test_curve_history_rows_count_epochs_from_zero_and_seconds_per_epoch():
    from workloads.rows import curve_history_rows

    keys = {"load_name": "width", "load_value": 8.0, "temperature_name": "batch_size", "temperature_value": 32.0}
    history = [{"epoch": 1, "lr": 0.2, "train_loss": 1.5, "train_error": 40.0, "objective": 1.6, "seconds": 2.0},
               {"epoch": 2, "lr": 0.1, "train_loss": 1.0, "train_error": 30.0, "objective": 1.1, "seconds": 5.0}]
    rows = curve_history_rows(keys, 0, 1, history)
    assert [(r["epoch"], r["seconds"], r["lr"]) for r in rows] == [(0, 2.0, 0.2), (1, 3.0, 0.1)]
    from analysis.schemas import CURVE_HISTORY_SCHEMA

    assert set(rows[0]) | {"run_id", "config_hash", "package_version", "library_versions", "schema_version"} == set(
        CURVE_HISTORY_SCHEMA.names)
