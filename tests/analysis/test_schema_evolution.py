"""Schema evolution: a run directory written by the released 0.1.0 (tests/data/run_v0_1_0: 8 models, 4 pairs,
their curves and weights; its models parts lack the columns added since, ``train_loss_drop`` and
``weights_sha256``) is read, analysed and resumed by this version without retraining anything, on a copy.

Resume computes the metrics added since (workloads/extra_metrics/: ``weight_spectral_norm``, ...) from the
saved weights, without training: the models parts are rewritten with the same values plus the new column (the only
files whose bytes change, besides what Ray Tune writes into RUN_DIR/tune); weights, pairs, curves, and run.json keep their bytes; config.yaml is rewritten in the current full form (same settings and hash, the
run's new location in run.storage).
"""

import dataclasses
import hashlib
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from analysis.tables import RunTables
import yaml

from orchestrator.config import parse_config
from workloads.metric_discovery import package_metrics
from tests.helpers import hygienic_env, landscape_cmd, landscape_in_process
from tests.helpers import TESTS_DATA

FIXTURE = os.path.join(TESTS_DATA, "run_v0_1_0")


def file_digests(root: str) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root``."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def old_run(tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(FIXTURE, run_dir)
    return run_dir


def test_the_config_of_an_old_run_keeps_its_hash(old_run):
    with open(os.path.join(old_run, "config.yaml")) as fh:
        cfg = parse_config(yaml.safe_load(fh), check_data=False)
    hashes = set(RunTables(old_run).read("models")["config_hash"]) | set(RunTables(old_run).read("pairs")["config_hash"])
    assert hashes == {cfg.config_hash()}


def test_old_parts_read_with_nulls_for_added_columns(old_run):
    models = RunTables(old_run).read("models")
    assert len(models) == 8 and (models["status"] == "ok").all()
    assert models["train_loss_drop"].isna().all() and models["weights_sha256"].isna().all()
    assert models["test_acc"].notna().all() and models["hessian_trace"].notna().all()


def test_status_of_an_old_run(old_run):
    before = file_digests(old_run)
    proc = landscape_in_process("status", old_run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "stage 1 models: 8 expected · 8 ok · 0 diverged · 0 failed · 0 missing" in proc.stdout
    assert "stage 2 pairs : 4 expected · 4 ok" in proc.stdout
    assert "8 ok model(s) lack an added metric" in proc.stdout and "no training" in proc.stdout
    assert file_digests(old_run) == before  # status only reads


def test_analyze_an_old_run(old_run):
    before = file_digests(old_run)
    proc = landscape_in_process("analyze", old_run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    cells = pd.read_parquet(os.path.join(old_run, "analysis", "cells.parquet"))
    assert len(cells) == 4 and cells["phase"].notna().all()
    assert cells["train_loss_drop"].isna().all()  # the old run has no training curves: null, not an error
    assert cells["complete"].all()
    assert os.path.exists(os.path.join(old_run, "analysis", "report.html"))
    after = file_digests(old_run)
    # The analysis writes into RUN_DIR/analysis only; the run's own files keep their bytes.
    assert {k: v for k, v in after.items() if not k.startswith("analysis" + os.sep)} == before


def spectral_norm_reference(weights_path: str) -> float:
    """prod of the largest singular value of every 2-D weight of a saved state dict (numpy's SVD)."""
    import torch

    state = torch.load(weights_path, weights_only=True)
    mats = [v.double().numpy() for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return float(np.prod([np.linalg.svd(m, compute_uv=False)[0] for m in mats]))


@pytest.mark.ray
@pytest.mark.slow
def test_resume_of_an_old_run_measures_the_added_metric_without_training(old_run, ray_tmpdir):
    before = file_digests(old_run)
    tables = RunTables(old_run)
    old_models = tables.read("models").sort_values(["load_value", "temperature_value", "seed"]).reset_index(drop=True)

    proc = subprocess.run(landscape_cmd() + ["resume", old_run, "--no-analysis"], capture_output=True, text=True,
                          timeout=400, env=hygienic_env(ray_tmpdir))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "already done: 8 models, 4 pairs; to do: 0 models, 0 pairs, 8 finished models to measure" in proc.stdout

    after = file_digests(old_run)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    # Besides Ray Tune's folder and the run lock's file: the models parts (the new column), config.yaml, which
    # every run and resume writes in the current full form (fields added since 0.1.0 at their legacy values: the
    # same config and the same hash), and facts.json, the measured facts status reads instead of running code.
    models_parts = sorted(k for k in before if k.startswith(os.path.join("tables", "models") + os.sep))
    assert [k for k in changed if not k.startswith("tune" + os.sep) and k != ".lock"] == [
        "config.yaml", "facts.json", *models_parts]
    with open(os.path.join(FIXTURE, "config.yaml")) as old, open(os.path.join(old_run, "config.yaml")) as new:
        old_cfg, new_cfg = (parse_config(yaml.safe_load(f), check_data=False) for f in (old, new))
    assert new_cfg == dataclasses.replace(old_cfg, run=dataclasses.replace(old_cfg.run, storage=old_run))  # moved
    assert new_cfg.config_hash() == old_cfg.config_hash()
    scan = tables.scan("models")
    added = [s.name for s in package_metrics()]
    assert [s.name for s in scan.metrics.added] == added and "weight_spectral_norm" in added
    new_models = scan.frame.sort_values(["load_value", "temperature_value", "seed"]).reset_index(drop=True)
    # Every value the rows had is kept (a training would have renewed finished_at, train_seconds, ...).
    pd.testing.assert_frame_equal(new_models[old_models.columns], old_models)
    assert new_models[added].notna().all().all()
    for row in new_models.itertuples():  # the one this version added, against an independent reference
        key = f"width={row.load_value:g}__batch_size={row.temperature_value:g}__seed={row.seed}"
        ref = spectral_norm_reference(os.path.join(old_run, "models", f"{key}.pt"))
        assert row.weight_spectral_norm == pytest.approx(ref, rel=1e-9), key

    # Nothing is left to do: a second resume starts no job and changes nothing.
    again = subprocess.run(landscape_cmd() + ["resume", old_run, "--no-analysis"], capture_output=True, text=True,
                           timeout=200, env=hygienic_env(ray_tmpdir))
    assert again.returncode == 0 and "nothing to do" in again.stdout, (again.stdout, again.stderr)
    assert {k: v for k, v in file_digests(old_run).items() if k != ".lock"} == {
        k: v for k, v in after.items() if k != ".lock"}

    # The analysis draws the new metric from the tables alone: its column, panel and report column.
    analysed = landscape_in_process("analyze", old_run)
    assert analysed.returncode == 0, (analysed.stdout, analysed.stderr)
    cells = pd.read_parquet(os.path.join(old_run, "analysis", "cells.parquet"))
    report = open(os.path.join(old_run, "analysis", "report.html"), encoding="utf-8").read()
    for spec in package_metrics():
        assert cells[spec.shown].notna().all()
        assert (spec.panel is None or spec.panel.title in report) and (spec.report is None or spec.report.header in report)


BROKEN_PLUGIN = """
from workloads.metric_specs import MetricSpec
SPEC = MetricSpec("broken_metric", "model", required=False, compute="brokenmetric:broken")
def broken(model, data):
    raise RuntimeError("the plug-in's own bug")
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_failing_added_metric_retrains_nothing_and_keeps_the_others(old_run, ray_tmpdir, tmp_path):
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "brokenmetric.py").write_text(BROKEN_PLUGIN)
    before = RunTables(old_run).read("models")
    env = hygienic_env(ray_tmpdir, PYTHONPATH=str(plugin_dir))
    proc = subprocess.run(landscape_cmd() + ["resume", old_run, "--no-analysis", "--set",
                                             "metrics.extra=[brokenmetric:SPEC]"],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "sweep incomplete: the added metrics of 8 finished model(s) not done" in proc.stderr
    after = RunTables(old_run).scan("models")
    frame = after.frame
    assert len(frame) == 8 and (frame["status"] == "ok").all()
    assert frame["broken_metric"].isna().all() and frame["weight_spectral_norm"].notna().all()
    order = ["load_value", "temperature_value", "seed"]
    pd.testing.assert_frame_equal(frame[before.columns].sort_values(order).reset_index(drop=True),
                                  before.sort_values(order).reset_index(drop=True))  # nothing retrained
