"""What a cohort trial does in a Tune worker (orchestrator/worker.py dispatches to it; cohorts.py forms them).

A model cohort trains and measures its members as one vectorised model (workloads/cohort_experiment.py) and
writes one ``models`` row and one weights file per member, as a model job does, with the ``cohort`` column
naming the cohort; a pair cohort trains its pairs' curves as one and writes each pair's ``curves`` and
``pairs`` rows. Members whose row says done already (a retried trial that had written some) are not trained
again: the cohort is re-formed from the others (a new id, so a checkpoint of the old cohort is not used).

Checkpoints: one per cohort, ``RUN_DIR/checkpoints/<cohort id>.pt`` (weights_only-loadable; it names its
members). The fault hook sees every member's key (a fault on one model's key hits the cohort training it).
The result reported to Tune lists one result per member under ``members`` (what a plain job reports).
"""

from __future__ import annotations

import time

from analysis.tables import RunTables
from orchestrator import fault_hook, storage
from orchestrator.cells import cell_spec
from orchestrator.cohorts import cohort_id
from orchestrator.config import SweepConfig
from orchestrator.history import epoch_reporter, write_curve_history, write_history
from orchestrator.job_io import checkpoint_writer, job_device, load_weights, node_id, torch_device
from orchestrator.jobs import DONE_MODEL, DONE_PAIR, JobContext, mkey, pair_job, pkey
from orchestrator.provenance import provenance
from orchestrator.records import write_unmeasured_pair
from orchestrator.trial_outputs import final_values, member_labels


def _execution(cfg: SweepConfig):
    from workloads.cohort_train import Execution

    return Execution(compile=cfg.execution.compile, precision=cfg.execution.precision)


def _done_row(tables: RunTables, table: str, key: str, context: JobContext, done: tuple) -> dict | None:
    row = storage.read_part_row(tables, table, key)
    if row and row.get("config_hash") == context.config_hash and row.get("status") in done:
        return row
    return None


def run_model_cohort(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    """Train and measure the members of a model_cohort job; returns the trial's result (see module doc)."""
    from workloads.cohort_experiment import train_and_measure_cohort
    from workloads.experiment import ModelSpec

    started = time.perf_counter()
    tables = RunTables(context.run_dir)
    results, todo = [], []
    for lv, tv, seed in job["members"]:
        key = mkey(cfg, lv, tv, seed)
        row = _done_row(tables, "models", key, context, DONE_MODEL)
        if row and (row["status"] == "diverged" or storage.exists(storage.model_uri(context.run_dir, key))):
            results.append({"key": key, "status": row["status"], "skipped": True, "wall_seconds": 0.0,
                            **final_values("model", row)})
        else:
            todo.append((lv, tv, int(seed), key))
    if not todo:
        return _cohort_result("model_cohort", job["cohort"], results, started)
    keys = [k for *_, k in todo]
    cohort = cohort_id("models", keys)
    device = job_device(cfg.trial_cpu(todo[0][0]))
    specs = [ModelSpec(cell_spec(cfg, lv, tv), seed, torch_device(device)) for lv, tv, seed, _ in todo]
    ckpt = storage.checkpoint_uri(context.run_dir, cohort)
    notes = []
    resume_state, note = storage.load_checkpoint(ckpt)  # whichever setting made it (or an earlier run)
    notes += [note] if note else []
    resumed = resume_state.get("epoch") if isinstance(resume_state, dict) else None
    for key in keys:
        fault_hook.attempt(key, resumed)
    checkpoint_fn = checkpoint_writer(cfg, ckpt, keys)
    execution = _execution(cfg)
    # Per epoch: the mean over the members still training, and each one's own numbers under its label.
    label_of = dict(zip((mkey(cfg, *m) for m in job["members"]), member_labels(cfg, job)))
    report = epoch_reporter(cohort, [label_of[k] for k in keys])
    try:
        outcomes = train_and_measure_cohort(specs, execution=execution, checkpoint_fn=checkpoint_fn,
                                            resume_state=resume_state, epoch_fn=report)
    except ValueError as exc:
        if resume_state is None or not str(exc).startswith("resume_state"):
            raise
        storage.delete(ckpt)  # another cohort's, other settings, or not one of ours: start this cohort over
        notes.append(f"checkpoint {ckpt} does not fit this cohort ({str(exc)[:160]}); deleted it, trained from "
                     f"epoch 0")
        outcomes = train_and_measure_cohort(specs, execution=execution, checkpoint_fn=checkpoint_fn,
                                            resume_state=None, epoch_fn=report)
    prov = provenance(context.run_id, context.config_hash)
    node = node_id()
    for spec, key, outcome in zip(specs, keys, outcomes):
        # Before the models row, which marks the model as done: a done model always has its history.
        write_history(tables, key, prov, spec.cell.keys(), int(spec.seed), outcome.history)
        row = {**prov, **outcome.row, "node_id": node, "device": device, "cohort": cohort}
        weights = storage.model_uri(context.run_dir, key)
        if outcome.state_dict is not None:
            with storage.writing(weights):
                fault_hook.write_point(key)
                row["weights_sha256"] = storage.save_state(weights, outcome.state_dict)
            row["model_uri"] = weights
        with storage.writing(tables.part_uri("models", key)):
            fault_hook.write_point(key)
            tables.write_part("models", key, [row], added=spec.cell.added_metrics)
        results.append({"key": key, "status": row["status"], "skipped": False, "wall_seconds": row["wall_seconds"],
                        **final_values("model", row), "error": row.get("error"), "note": "; ".join(notes) or None,
                        "cohort": cohort, **_shared_time(outcome.cohort)})
    storage.delete(ckpt)
    return _cohort_result("model_cohort", cohort, results, started)


def run_pair_cohort(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    """Measure the pairs of a pair_cohort job, their curves trained as one; returns the trial's result."""
    from workloads.cohort_experiment import measure_pairs_cohort
    from workloads.experiment import PairSpec

    started = time.perf_counter()
    tables = RunTables(context.run_dir)
    results, todo = [], []
    for lv, tv, a, b in job["members"]:
        key = pkey(cfg, lv, tv, a, b)
        row = _done_row(tables, "pairs", key, context, DONE_PAIR)
        if row:
            results.append({"key": key, "status": row["status"], "skipped": True, "wall_seconds": 0.0,
                            **final_values("pair", row)})
        else:
            todo.append((lv, tv, int(a), int(b), key))
    for *_, key in todo:
        fault_hook.attempt(key)
    loaded: dict = {}  # model key -> weights (each model once, though it ends several pairs)
    ready = []
    for lv, tv, a, b, key in todo:
        try:
            states = []
            for seed in (a, b):
                mk = mkey(cfg, lv, tv, seed)
                if mk not in loaded:
                    loaded[mk] = load_weights(context.run_dir, tables, mk)
                states.append(loaded[mk])
            ready.append((lv, tv, a, b, key, tuple(states)))
        except storage.RunDirError as exc:
            # As a pair job: failed for now; the next round (or a resume) retrains the model and measures it.
            write_unmeasured_pair(cfg, context.run_dir, context.run_id, pair_job(lv, tv, a, b), "failed", str(exc))
            results.append({"key": key, "status": "failed", "skipped": False, "error": str(exc),
                            "wall_seconds": 0.0})
    if not ready:
        return _cohort_result("pair_cohort", job["cohort"], results, started)
    cohort = cohort_id("pairs", [r[4] for r in ready])
    device = job_device(cfg.pair_resources(ready[0][0])["cpu"])
    specs = [PairSpec(cell_spec(cfg, lv, tv), a, b, torch_device(device)) for lv, tv, a, b, _, _ in ready]
    outcomes = measure_pairs_cohort(specs, [r[5] for r in ready], execution=_execution(cfg))
    prov = provenance(context.run_id, context.config_hash)
    node = node_id()
    for (lv, tv, a, b, key, _), outcome in zip(ready, outcomes):
        with storage.writing(tables.part_uri("curves", key)):
            fault_hook.write_point(key)
            if outcome.curve_rows:
                tables.write_part("curves", key, [{**prov, **r} for r in outcome.curve_rows])
            else:
                tables.delete_part("curves", key)
        write_curve_history(tables, key, prov, outcome.history_rows)
        row = {**prov, **outcome.row, "node_id": node, "device": device, "cohort": cohort}
        with storage.writing(tables.part_uri("pairs", key)):  # last: it marks the pair done
            fault_hook.write_point(key)
            tables.write_part("pairs", key, [row])
        results.append({"key": key, "status": row["status"], "skipped": False, "wall_seconds": row["wall_seconds"],
                        **final_values("pair", row), "error": row.get("error"), "cohort": cohort,
                        **_shared_time(outcome.cohort)})
    return _cohort_result("pair_cohort", cohort, results, started)


def _shared_time(info) -> dict:
    """A member's wall_seconds is its share of the cohort's; the progress line names the whole and the size."""
    return {"cohort_size": int(info.size), "cohort_seconds": float(info.wall_seconds)}


def _cohort_result(kind: str, cohort: str, results: list[dict], started: float) -> dict:
    """The trial's one report: the cohort, and per member what a plain job reports."""
    return {"kind": kind, "key": cohort, "status": "ok", "skipped": all(r["skipped"] for r in results),
            "wall_seconds": time.perf_counter() - started, "members": results}
