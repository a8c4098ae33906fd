"""scripts/pilot.py, which produced docs/science.md's pilot tables: it runs a config's jobs in one process
(no Ray) and writes the tables `landscape run` writes, so that the analysis reads them unchanged."""

import json
import os
import subprocess
import sys

import pytest

from analysis.tables import RunTables
from orchestrator.planning.cells import cell_spec
from orchestrator.config import load_config
from orchestrator.planning.jobs import mkey, pkey
from tests.helpers import hygienic_env
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
SETTINGS = ["training.epochs=2", "metrics.curve.epochs=1"]


@pytest.mark.slow
def test_pilot_writes_the_sweeps_tables_and_prints_the_phase_map(tmp_path):
    out = tmp_path / "pilot"
    sets = [arg for s in SETTINGS for arg in ("--set", s)]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "pilot.py"), "smoke", *sets, "--out", str(out)],
                          cwd=tmp_path, env={**hygienic_env(str(tmp_path)), "PYTHONPATH": ROOT},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config("smoke", SETTINGS, check_data=False)
    tables = RunTables(str(out))
    model_keys = {mkey(cfg, *k) for k in cfg.model_keys()}
    pair_keys = {pkey(cfg, *k) for k in cfg.pair_keys()}
    assert set(tables.part_keys("models")) == model_keys and set(tables.part_keys("pairs")) == pair_keys
    models = tables.read("models")
    assert (models["status"] == "ok").all() and (models["config_hash"] == cfg.config_hash()).all()
    added = [spec.name for spec in cell_spec(cfg, cfg.load.values[0], cfg.temperature.values[0]).added_metrics if spec.per == "model"]
    assert added, "the run's added metrics (e.g. weight_spectral_norm) are what the script once failed to write"
    for name in added:
        assert models[name].notna().all(), name
    times = json.loads((out / "pilot_times.json").read_text())
    assert set(times) == model_keys | pair_keys
    assert "\nphase\n" in proc.stdout and (out / "analysis" / "cells.parquet").exists()
