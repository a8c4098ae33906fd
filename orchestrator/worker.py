"""What a job does in a Tune worker: ``run_job`` is the trainable of the sweep (see orchestrator/sweep.py).

It trains and measures one model, or connects one pair, through workloads/experiment.py (a cohort of them:
orchestrator/cohort_jobs.py); reads and writes
go through the run directory (storage), so any worker on any node can run any job.
"""

from __future__ import annotations

import functools
import json
import time

from analysis.schemas import table_schema
from analysis.tables import RunTables
from orchestrator import fault_hook, storage
from orchestrator.cells import cell_spec
from orchestrator.config import SweepConfig, build
from orchestrator.job_io import checkpoint_writer, job_device, load_weights, node_id, torch_device
from orchestrator.history import epoch_reporter, write_curve_history, write_history
from orchestrator.jobs import DONE_MODEL, DONE_PAIR, STORAGE_ERROR, JobContext, job_key, mkey, pkey
from orchestrator.provenance import provenance
from orchestrator.records import write_unmeasured_pair
from orchestrator.trial_outputs import final_member_metrics, final_values, member_labels, trial_name
from workloads.metric_discovery import missing_metrics


@functools.lru_cache(maxsize=4)
def _sweep_from_dict_cached(text: str) -> SweepConfig:
    return build(SweepConfig, json.loads(text), "")


def _sweep_of(context: JobContext) -> SweepConfig:
    return _sweep_from_dict_cached(json.dumps(context.sweep, sort_keys=True))


def run_job(config: dict, context: JobContext) -> None:
    """The Tune trainable: one model job or one pair job (see the module docstring).

    A model job reports each epoch as it ends (orchestrator/history.py: no ``status``), then, as every job,
    its final result last: {"kind", "key", "status", "skipped", "wall_seconds", ...}. Exceptions propagate,
    so Tune retries the job (FailureConfig); the driver records a job that keeps failing as ``failed``.
    """
    from ray import tune

    cfg = _sweep_of(context)
    started = time.perf_counter()
    fault_hook.arm(context.faults)  # tests only: None unless the driver had LANDSCAPE_FAULT_INJECT
    try:
        if config["kind"] == "model":
            result = _model_job(cfg, context, config)
        elif config["kind"] == "pair":
            result = _pair_job(cfg, context, config)
        elif config["kind"] == "model_cohort":
            from orchestrator.cohort_jobs import run_model_cohort

            result = run_model_cohort(cfg, context, config)
        elif config["kind"] == "pair_cohort":
            from orchestrator.cohort_jobs import run_pair_cohort

            result = run_pair_cohort(cfg, context, config)
        else:
            raise ValueError(f"unknown job kind {config['kind']!r}")
    except LookupError as exc:
        _reraise_missing_plugin(exc)
    except storage.StorageFullError as exc:
        # Not this job's fault and not worth a retry: the driver stops the sweep (SweepState.fatal).
        result = {"kind": config["kind"], "key": job_key(cfg, config), "status": STORAGE_ERROR, "skipped": False,
                  "error": str(exc), "wall_seconds": time.perf_counter() - started}
    else:
        # The trial's name (so a row of tune.ExperimentAnalysis says what it trained) and each member's final
        # numbers under its own label, beside the result the driver reads (orchestrator/trial_outputs.py).
        result = {**result, "trial": trial_name(cfg, config), **final_member_metrics(cfg, config, result)}
    tune.report(result)


def _reraise_missing_plugin(exc: LookupError):
    """A name the driver resolved but this worker does not know is an entry point of a package installed on the
    driver only (``module:function`` code is shipped, orchestrator/shipping.py): say so, as the user's error."""
    from workloads.registry import UnknownNameError

    if isinstance(exc, UnknownNameError) and exc.kind in ("model", "dataset"):
        from workloads.plugins import ENTRY_POINT_GROUPS, PluginError

        raise PluginError(f"{exc} (on the Ray worker of node {node_id()}: an entry point of "
                          f"{ENTRY_POINT_GROUPS[exc.kind]} must be installed on every node, or name the code as "
                          f"'module:function' to ship it)") from None
    raise exc


def _model_job(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    from workloads.experiment import ModelSpec, train_and_measure
    from workloads.train import ResumeStateError

    started = time.perf_counter()
    lv, tv, seed = job["load"], job["temperature"], job["seed"]
    key = mkey(cfg, lv, tv, seed)
    tables = RunTables(context.run_dir)
    existing = storage.read_part_row(tables, "models", key)
    weights = storage.model_uri(context.run_dir, key)
    cell = cell_spec(cfg, lv, tv)
    if existing and existing.get("config_hash") == context.config_hash and existing.get("status") in DONE_MODEL:
        if existing["status"] == "ok" and storage.exists(weights) and missing_metrics(existing, cell.added_metrics):
            return _measure_job(cfg, context, job, cell, existing)
        if existing["status"] == "diverged" or storage.exists(weights):
            return {"kind": "model", "key": key, "status": existing["status"], "skipped": True,
                    "wall_seconds": 0.0, **final_values("model", existing)}

    device = job_device(cfg.trial_cpu(lv))
    spec = ModelSpec(cell, int(seed), torch_device(device))
    ckpt = storage.checkpoint_uri(context.run_dir, key)
    notes = []  # what the user should know about this job although it succeeded
    resume_state, note = storage.load_checkpoint(ckpt)  # whichever setting made it (or an earlier run)
    notes += [note] if note else []
    fault_hook.attempt(key, resume_state.get("epoch") if isinstance(resume_state, dict) else None)
    checkpoint_fn = checkpoint_writer(cfg, ckpt, [key])
    report = epoch_reporter(key, member_labels(cfg, job))

    def epoch_fn(entry):
        report([entry])

    try:
        outcome = train_and_measure(spec, checkpoint_fn=checkpoint_fn, resume_state=resume_state, epoch_fn=epoch_fn)
    except ResumeStateError as exc:
        if resume_state is None:
            raise
        storage.delete(ckpt)  # a checkpoint of other settings, or not one of ours: start over
        notes.append(f"checkpoint {ckpt} does not fit this training ({exc}); deleted it, trained from epoch 0")
        outcome = train_and_measure(spec, checkpoint_fn=checkpoint_fn, resume_state=None, epoch_fn=epoch_fn)
    prov = provenance(context.run_id, context.config_hash)
    # Before the models row, which marks the model as done: a done model always has its history.
    write_history(tables, key, prov, spec.cell.keys(), int(seed), outcome.history)
    row = {**prov, **outcome.row, "node_id": node_id(), "device": device}
    if outcome.state_dict is not None:
        with storage.writing(weights):
            fault_hook.write_point(key)
            row["weights_sha256"] = storage.save_state(weights, outcome.state_dict)
        row["model_uri"] = weights
    with storage.writing(tables.part_uri("models", key)):
        fault_hook.write_point(key)
        tables.write_part("models", key, [row], added=cell.added_metrics)
    storage.delete(ckpt)
    return {"kind": "model", "key": key, "status": row["status"], "skipped": False,
            "wall_seconds": time.perf_counter() - started, **final_values("model", row),
            "error": row.get("error"), "note": "; ".join(notes) or None}


def _measure_job(cfg: SweepConfig, context: JobContext, job: dict, cell, existing: dict) -> dict:
    """A finished model that lacks an added metric of the run (one made before the metric existed): the metric
    is computed from its saved weights (checked against their sha256 where the row has one), never by
    retraining, and its models part is rewritten with the same row plus the new values."""
    from workloads.experiment import load_trained
    from workloads.metric_discovery import measure_added

    started = time.perf_counter()
    key = mkey(cfg, job["load"], job["temperature"], job["seed"])
    tables = RunTables(context.run_dir)
    fault_hook.attempt(key)
    todo = missing_metrics(existing, cell.added_metrics)
    state = load_weights(context.run_dir, tables, key)  # damaged weights: deleted, so the next plan retrains
    device = job_device(cfg.trial_cpu(job["load"]))
    data = cell.data().to(torch_device(device))
    values, failures = {}, []
    try:
        model = load_trained(cell, int(job["seed"]), state, data, torch_device(device))
    except Exception as exc:  # weights that do not fit the model: the finished row is kept as it is
        model, failures = None, [f"loading the weights failed: {type(exc).__name__}: {exc}"]
    for spec in todo if model is not None else ():
        try:  # each metric alone: one whose own code fails leaves the others measured and the row kept
            values.update(measure_added(model, data, [spec]))
        except Exception as exc:
            failures.append(f"measuring {spec.name} failed: {type(exc).__name__}: {exc}")
    done = [f"measured {', '.join(sorted(values))} from the saved weights (no training)"] if values else []
    result = {"kind": "model", "key": key, "status": "ok", "skipped": False, "measured": sorted(values),
              "test_acc": existing.get("test_acc"), "note": "; ".join(done + failures)[:500] or None}
    if not values:
        return {**result, "wall_seconds": time.perf_counter() - started}
    known = set(table_schema("models", cell.added_metrics).names)
    row = {**{k: v for k, v in existing.items() if k in known}, **values}
    with storage.writing(tables.part_uri("models", key)):
        fault_hook.write_point(key)
        tables.write_part("models", key, [row], added=cell.added_metrics)
    return {**result, "wall_seconds": time.perf_counter() - started}


def _pair_job(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    from workloads.experiment import PairSpec, measure_pair

    started = time.perf_counter()
    lv, tv, a, b = job["load"], job["temperature"], job["seed_a"], job["seed_b"]
    key = pkey(cfg, lv, tv, a, b)
    tables = RunTables(context.run_dir)
    existing = storage.read_part_row(tables, "pairs", key)
    if existing and existing.get("config_hash") == context.config_hash and existing.get("status") in DONE_PAIR:
        return {"kind": "pair", "key": key, "status": existing["status"], "skipped": True, "wall_seconds": 0.0,
                **final_values("pair", existing)}
    fault_hook.attempt(key)
    try:
        state_a = load_weights(context.run_dir, tables, mkey(cfg, lv, tv, a))
        state_b = load_weights(context.run_dir, tables, mkey(cfg, lv, tv, b))
    except storage.RunDirError as exc:
        # Not a fault of this worker, so no retry: the pair is failed for now, and the next round of this
        # run (or a resume) retrains the model whose file is gone and measures the pair again.
        write_unmeasured_pair(cfg, context.run_dir, context.run_id, job, "failed", str(exc))
        return {"kind": "pair", "key": key, "status": "failed", "skipped": False, "error": str(exc),
                "wall_seconds": time.perf_counter() - started}
    device = job_device(cfg.pair_resources(lv)["cpu"])
    outcome = measure_pair(PairSpec(cell_spec(cfg, lv, tv), int(a), int(b), torch_device(device)), state_a, state_b)
    prov = provenance(context.run_id, context.config_hash)
    with storage.writing(tables.part_uri("curves", key)):
        fault_hook.write_point(key)
        if outcome.curve_rows:
            tables.write_part("curves", key, [{**prov, **r} for r in outcome.curve_rows])
        else:
            tables.delete_part("curves", key)
    write_curve_history(tables, key, prov, outcome.history_rows)
    # The pairs row is written last: it is what marks the pair as done.
    with storage.writing(tables.part_uri("pairs", key)):
        fault_hook.write_point(key)
        tables.write_part("pairs", key, [{**prov, **outcome.row, "node_id": node_id(), "device": device}])
    return {"kind": "pair", "key": key, "status": outcome.row["status"], "skipped": False,
            "wall_seconds": time.perf_counter() - started, **final_values("pair", outcome.row),
            "error": outcome.row.get("error")}
