"""Rows the driver writes itself: a model whose job kept failing, a pair that cannot be measured; and the
error text of a failed Tune trial."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from analysis.tables import RunTables
from orchestrator.rundir import fault_hook, storage
from orchestrator.planning.jobs import mkey, pkey
from orchestrator.rundir.provenance import provenance
from workloads.settings import MC_ON


def _utcnow():
    return datetime.now(timezone.utc)


def write_failed_model(cfg, run_dir, run_id, member: tuple, error: str) -> None:
    """The row of model ``member`` (load, temperature, seed) whose job kept failing; StorageFullError when the
    run directory cannot be written."""
    lv, tv, seed = member
    row = {**provenance(run_id, cfg.config_hash()), "load_name": cfg.load.name, "load_value": float(lv),
           "temperature_name": cfg.temperature.name, "temperature_value": float(tv), "seed": int(seed),
           "status": "failed", "error": error, "finished_at": _utcnow(), "hessian_backend": cfg.metrics.hessian.backend}
    key = mkey(cfg, lv, tv, seed)
    tables = RunTables(run_dir)
    with storage.writing(tables.part_uri("models", key)):
        fault_hook.write_point(key)
        tables.write_part("models", key, [row])


def write_unmeasured_pair(cfg, run_dir, run_id, member: tuple, status: str, error: str) -> None:
    """Pair ``member`` (load, temperature, seed_a, seed_b) that cannot be measured (an endpoint diverged or
    failed, or the job failed); StorageFullError when the run directory cannot be written."""
    lv, tv, a, b = member
    now = _utcnow()
    c = cfg.metrics.curve
    row = {**provenance(run_id, cfg.config_hash()), "load_name": cfg.load.name, "load_value": float(lv),
           "temperature_name": cfg.temperature.name, "temperature_value": float(tv), "seed_a": int(a),
           "seed_b": int(b), "status": status, "error": error, "curve_epochs": c.epochs, "curve_lr": c.lr,
           "curve_points": c.points, "cka_probe_size": cfg.metrics.cka.probes,
           "cka_probe_seed": cfg.metrics.cka.probe_seed, "cka_probe_maker": cfg.metrics.cka.probe_maker,
           "cka_probe_pool": cfg.metrics.cka.probe_pool,
           "mc_unit": MC_ON[c.mc_on], "started_at": now, "finished_at": now}
    tables = RunTables(run_dir)
    key = pkey(cfg, lv, tv, a, b)
    with storage.writing(tables.part_uri("pairs", key)):
        fault_hook.write_point(key)
        tables.delete_part("curves", key)
        tables.delete_part("curve_history", key)
        tables.write_part("pairs", key, [row])


def trial_error_text(trial) -> str:
    """The last line of a failed trial's traceback ("ValueError: ..."), from Tune's error file."""
    text = ""
    try:
        path = trial.error_file
        if path and os.path.exists(path):
            with open(path) as f:
                text = f.read()
    except Exception:
        text = ""
    if not text:
        text = str(getattr(trial, "error_msg", "") or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Tune's file holds "Failure # N ..." headers and full tracebacks; the exception line is the last one
    # that looks like "SomeError: message".
    for line in reversed(lines):
        if ":" in line and not line.startswith(("File ", "Failure #", "Traceback", "^", "~")):
            return line[:500]
    return (lines[-1] if lines else "job failed without an error message")[:500]
