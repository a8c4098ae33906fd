"""What a job does in a Tune worker: ``run_job`` is the trainable of the sweep (see orchestrator/driver/sweep.py).

Every job is a cohort (orchestrator/planning/jobs.py; one member when execution.cohort is off). A model job trains and
measures its members as one vectorised model (workloads/cohort_experiment.py) and writes one ``models`` row and
one weights file per member, the ``cohort`` column naming the cohort; a pair job trains its pairs' curves as one
and writes each pair's ``curves`` and ``pairs`` rows. Reads and writes go through the run directory (storage),
so any worker on any node can run any job.

Members whose row says done already (a retried trial that had written some) are not computed again: the cohort
is re-formed from the others (a new id, so a checkpoint of the old cohort is not used). A done model that lacks
an added metric of the run (made before the metric existed) is measured from its saved weights, never retrained.

Checkpoints: one per cohort, ``RUN_DIR/checkpoints/<cohort id>.pt`` (weights_only-loadable; it names its
members). The fault hook sees every member's key (a fault on one model's key hits the cohort training it).
The result reported to Tune: the cohort's {"kind", "key", "status", "skipped", "wall_seconds"} and, under
``members``, one result per member (its key, status, final numbers, error and note).
"""

from __future__ import annotations

import functools
import json
import time

from analysis.schemas import table_schema
from analysis.tables import RunTables
from orchestrator.rundir import fault_hook, storage
from orchestrator.planning.cells import cell_spec
from orchestrator.config import SweepConfig, build
from orchestrator.worker.history import epoch_reporter, write_curve_history, write_history
from orchestrator.worker.job_io import checkpoint_writer, job_device, load_weights, node_id, torch_device
from orchestrator.planning.jobs import DONE_MODEL, DONE_PAIR, STORAGE_ERROR, JobContext, cohort_id, members, mkey, pkey
from orchestrator.rundir.provenance import provenance
from orchestrator.worker.records import write_unmeasured_pair
from orchestrator.worker.trial_outputs import final_member_metrics, final_values, member_labels, trial_name
from workloads.metric_discovery import missing_metrics


@functools.lru_cache(maxsize=4)
def _sweep_from_dict_cached(text: str) -> SweepConfig:
    return build(SweepConfig, json.loads(text), "")


def _sweep_of(context: JobContext) -> SweepConfig:
    return _sweep_from_dict_cached(json.dumps(context.sweep, sort_keys=True))


def run_job(config: dict, context: JobContext) -> None:
    """The Tune trainable: one model job or one pair job (see the module docstring).

    A model job reports each epoch as it ends (orchestrator/worker/history.py: no ``status``), then, as every job,
    its final result last. Exceptions propagate, so Tune retries the job (FailureConfig); the driver records a
    job that keeps failing as ``failed``.
    """
    from ray import tune

    cfg = _sweep_of(context)
    started = time.perf_counter()
    fault_hook.arm(context.faults)  # tests only: None unless the driver had LANDSCAPE_FAULT_INJECT
    try:
        if config["kind"] == "model":
            result = train_models(cfg, context, config)
        elif config["kind"] == "pair":
            result = measure_pairs(cfg, context, config)
        else:
            raise ValueError(f"unknown job kind {config['kind']!r}")
    except LookupError as exc:
        _reraise_missing_plugin(exc)
    except storage.StorageFullError as exc:
        # Not this job's fault and not worth a retry: the driver stops the sweep (SweepState.fatal).
        result = {"kind": config["kind"], "key": config["cohort"], "status": STORAGE_ERROR, "skipped": False,
                  "error": str(exc), "wall_seconds": time.perf_counter() - started}
    else:
        # The trial's name (so a row of tune.ExperimentAnalysis says what it trained) and each member's final
        # numbers under its own label, beside the result the driver reads (orchestrator/worker/trial_outputs.py).
        result = {**result, "trial": trial_name(cfg, config), **final_member_metrics(cfg, config, result)}
    tune.report(result)


def _reraise_missing_plugin(exc: LookupError):
    """A name the driver resolved but this worker does not know is an entry point of a package installed on the
    driver only (``module:function`` code is shipped, orchestrator/cluster/shipping.py): say so, as the user's error."""
    from workloads.registry import UnknownNameError

    if isinstance(exc, UnknownNameError) and exc.kind in ("model", "dataset"):
        from workloads.plugins import ENTRY_POINT_GROUPS, PluginError

        raise PluginError(f"{exc} (on the Ray worker of node {node_id()}: an entry point of "
                          f"{ENTRY_POINT_GROUPS[exc.kind]} must be installed on every node, or name the code as "
                          f"'module:function' to ship it)") from None
    raise exc


def _execution(cfg: SweepConfig):
    from workloads.cohort_train import Execution

    return Execution(compile=cfg.execution.compile, precision=cfg.execution.precision)


def _done_row(tables: RunTables, table: str, key: str, context: JobContext, done: tuple) -> dict | None:
    row = storage.read_part_row(tables, table, key)
    if row and row.get("config_hash") == context.config_hash and row.get("status") in done:
        return row
    return None


def _skipped(key: str, kind: str, row: dict) -> dict:
    return {"key": key, "status": row["status"], "skipped": True, "wall_seconds": 0.0, **final_values(kind, row)}


def train_models(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    """Train and measure the members of a model job; returns the trial's result (see the module doc)."""
    from workloads.cohort_experiment import train_and_measure_cohort
    from workloads.specs import ModelSpec

    started = time.perf_counter()
    tables = RunTables(context.run_dir)
    results, todo = [], []
    for lv, tv, seed in members(job):
        key = mkey(cfg, lv, tv, seed)
        row = _done_row(tables, "models", key, context, DONE_MODEL)
        kept = row is not None and storage.exists(storage.model_uri(context.run_dir, key))
        if kept and row["status"] == "ok" and missing_metrics(row, cell_spec(cfg, lv, tv).added_metrics):
            results.append(measure_added_metrics(cfg, context, (lv, tv, seed), row))
        elif row and (row["status"] == "diverged" or kept):
            results.append(_skipped(key, "model", row))
        else:
            todo.append((lv, tv, int(seed), key))
    if not todo:
        return _cohort_result("model", job["cohort"], results, started)
    keys = [k for *_, k in todo]
    cohort = cohort_id("models", keys)
    device = job_device(cfg.trial_cpu(todo[0][0]))
    specs = [ModelSpec(cell_spec(cfg, lv, tv), seed, torch_device(device)) for lv, tv, seed, _ in todo]
    ckpt = storage.checkpoint_uri(context.run_dir, cohort)
    notes = []  # what the user should know about this job although it succeeded
    resume_state, note = storage.load_checkpoint(ckpt)  # whichever setting made it (or an earlier run)
    notes += [note] if note else []
    resumed = resume_state.get("epoch") if isinstance(resume_state, dict) else None
    for key in keys:
        fault_hook.attempt(key, resumed)
    checkpoint_fn = checkpoint_writer(cfg, ckpt, keys)
    execution = _execution(cfg)
    # Per epoch: the mean over the members still training, and each one's own numbers under its label.
    label_of = dict(zip((mkey(cfg, *m) for m in members(job)), member_labels(cfg, job)))
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
    return _cohort_result("model", cohort, results, started)


def measure_added_metrics(cfg: SweepConfig, context: JobContext, member: tuple, existing: dict) -> dict:
    """A finished model that lacks an added metric of the run (one made before the metric existed): the metric
    is computed from its saved weights (checked against their sha256 where the row has one), never by
    retraining, and its models part is rewritten with the same row plus the new values. Returns the member's
    result."""
    from workloads.cohort_experiment import load_trained
    from workloads.metric_discovery import measure_added

    started = time.perf_counter()
    lv, tv, seed = member
    key = mkey(cfg, lv, tv, seed)
    cell = cell_spec(cfg, lv, tv)
    tables = RunTables(context.run_dir)
    fault_hook.attempt(key)
    todo = missing_metrics(existing, cell.added_metrics)
    state = load_weights(context.run_dir, tables, key)  # damaged weights: deleted, so the next plan retrains
    device = torch_device(job_device(cfg.trial_cpu(lv)))
    data = cell.data().to(device)
    values, failures = {}, []
    try:
        model = load_trained(cell, int(seed), state, data, device)
    except Exception as exc:  # weights that do not fit the model: the finished row is kept as it is
        model, failures = None, [f"loading the weights failed: {type(exc).__name__}: {exc}"]
    for spec in todo if model is not None else ():
        try:  # each metric alone: one whose own code fails leaves the others measured and the row kept
            values.update(measure_added(model, data, [spec]))
        except Exception as exc:
            failures.append(f"measuring {spec.name} failed: {type(exc).__name__}: {exc}")
    done = [f"measured {', '.join(sorted(values))} from the saved weights (no training)"] if values else []
    result = {"key": key, "status": "ok", "skipped": False, "measured": sorted(values),
              "test_acc": existing.get("test_acc"), "note": "; ".join(done + failures)[:500] or None}
    if values:
        known = set(table_schema("models", cell.added_metrics).names)
        row = {**{k: v for k, v in existing.items() if k in known}, **values}
        with storage.writing(tables.part_uri("models", key)):
            fault_hook.write_point(key)
            tables.write_part("models", key, [row], added=cell.added_metrics)
    return {**result, "wall_seconds": time.perf_counter() - started}


def measure_pairs(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    """Measure the pairs of a pair job, their curves trained as one; returns the trial's result."""
    from workloads.cohort_experiment import measure_pairs_cohort
    from workloads.specs import PairSpec

    started = time.perf_counter()
    tables = RunTables(context.run_dir)
    results, todo = [], []
    for lv, tv, a, b in members(job):
        key = pkey(cfg, lv, tv, a, b)
        row = _done_row(tables, "pairs", key, context, DONE_PAIR)
        if row:
            results.append(_skipped(key, "pair", row))
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
            # Not a fault of this worker, so no retry: the pair is failed for now, and the next round of this
            # run (or a resume) retrains the model whose file is gone and measures the pair again.
            write_unmeasured_pair(cfg, context.run_dir, context.run_id, (lv, tv, a, b), "failed", str(exc))
            results.append({"key": key, "status": "failed", "skipped": False, "error": str(exc),
                            "wall_seconds": 0.0})
    if not ready:
        return _cohort_result("pair", job["cohort"], results, started)
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
    return _cohort_result("pair", cohort, results, started)


def _shared_time(info) -> dict:
    """A member's wall_seconds is its share of the cohort's; the progress line names the whole and the size."""
    return {"cohort_size": int(info.size), "cohort_seconds": float(info.wall_seconds)}


def _cohort_result(kind: str, cohort: str, results: list[dict], started: float) -> dict:
    """The trial's one report: the cohort, and per member what it computed (see the module doc)."""
    return {"kind": kind, "key": cohort, "status": "ok", "skipped": all(r["skipped"] for r in results),
            "wall_seconds": time.perf_counter() - started, "members": results}
