"""The sweep on Ray Tune: one Tune trial per model, and a dependent pairwise job per seed pair of a cell.

How it runs
    One Tune experiment runs two kinds of jobs through one trainable (``run_job``):
      * model jobs, one per (load, temperature, seed): train, per-model metrics, save the weights to
        RUN_DIR/models/<key>.pt (through pyarrow's file systems, so local paths and s3:// both work), write
        the ``models`` row;
      * pair jobs, one per configured seed pair of a cell: load both weights from the run directory, curve +
        CKA + L2, write the ``curves`` and ``pairs`` rows.
    A custom Tune searcher (``SweepSearcher``) hands out the jobs: a pair job as soon as both of its models
    exist (before any waiting model job), else the next model job (longest cells first, seeds of a cell
    together, so pairs become ready early). Tune asks a custom searcher for a new trial only when the
    previous one has started (one pending trial at a time), so a ready pair job waits for at most the next
    free slot: it is never starved, and no capacity sits idle reserved for pairs that are not ready yet.
    With ``reuse_actors=True`` both kinds reuse the same warm worker processes (~0.03 s per job instead of
    ~2-3 s for a fresh actor); ``run_job`` resets seeds and threads itself.

Why not the obvious design (plain Ray tasks for pairs submitted from a Tune callback)
    Cached Tune actors keep their CPUs between trials, so pair tasks starve unless a fixed share of the
    cluster is reserved for them; on a small machine that share idles until the first pair is ready (on
    2 CPUs: half the machine). Jobs of one experiment share Tune's resource accounting, retries
    (FailureConfig), progress and worker reuse instead.

The tables are the record of what is done
    Before a run (and a resume) the plan is made from the tables, each read once: a model is done when its
    row is ok (and its weights file exists) or diverged; a pair is done when its row is ok or diverged (and,
    when ok, its curve part exists). A row counts only from the part named by its own key (a copy or a part
    under another key's name is moved aside, never counted). Only the rest is handed to Tune, and every job
    checks its own part again before working. So a resumed or grown sweep computes exactly the missing keys;
    Tune's own experiment state is not needed for that (and cannot grow a grid), so it is saved rarely.

Stopping
    A write into the run directory that no retry fixes (a full or read-only disk, storage.STORAGE_ERRNOS)
    stops the sweep: a worker reports it instead of raising (Tune would retry it), a Tune callback records
    it instead of raising (it would take tuner.fit() down), and a Tune Stopper ends the experiment; run_sweep
    then raises storage.StorageFullError. Weights are checked against their row's sha256 when a pair job
    loads them; damaged ones are deleted and the model retrained in the next round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

from analysis.tables import TABLE_NAMES, RunTables, TableScan, join, model_key, pair_key
from orchestrator import storage
from orchestrator.config import SweepConfig, dataset_facts, expand_data_root, transformed_train_size
from orchestrator.provenance import provenance

DONE_MODEL = ("ok", "diverged")
DONE_PAIR = ("ok", "diverged")
STORAGE_ERROR = "storage_error"  # a job's result status (never a row's): the run directory cannot be written


# ---------------------------------------------------------------------------------------------------------
# From the config to the workloads' specs


def cell_spec(cfg: SweepConfig, load_value: float, temperature_value: float):
    """The workloads.experiment.CellSpec of one grid cell."""
    from workloads.experiment import CellSpec, HessianSettings
    from workloads.metrics.connectivity import CurveConfig
    from workloads.train import TrainConfig

    t, m, c, w = cfg.training, cfg.metrics, cfg.metrics.curve, cfg.workload
    return CellSpec(
        load_name=cfg.load.name,
        load_value=float(load_value),
        temperature_name=cfg.temperature.name,
        temperature_value=float(temperature_value),
        dataset=w.dataset,
        data_root=expand_data_root(w.data_root),  # "~/data" is the home of the node that runs the job
        model=w.model,
        model_args=dict(w.model_args),
        width=w.width,
        data_seed=w.data_seed,
        train_fraction=w.train_fraction,
        label_noise=w.label_noise,
        training=TrainConfig(
            epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
            schedule=t.schedule, lr_scaling=t.lr_scaling, base_batch_size=t.base_batch_size,
            checkpoint_every=t.checkpoint_every,
        ),
        hessian=HessianSettings(
            samples=m.hessian_samples, backend=m.hessian_backend, eigen_tol=m.hessian_eigen_tol,
            eigen_max_iter=m.hessian_eigen_max_iter, trace_tol=m.hessian_trace_tol,
            trace_max_probes=m.hessian_trace_max_probes, batch_size=m.hessian_batch_size, seed=m.hessian_seed,
        ),
        curve=CurveConfig(
            epochs=c.epochs, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, batch_size=c.batch_size,
            num_points=c.points, seed=c.seed, lr_schedule=c.lr_schedule,
        ),
        cka_probes=m.cka_probes,
        cka_probe_seed=m.cka_probe_seed,
    )


def mkey(cfg: SweepConfig, lv, tv, seed) -> str:
    return model_key(cfg.load.name, lv, cfg.temperature.name, tv, seed)


def pkey(cfg: SweepConfig, lv, tv, a, b) -> str:
    return pair_key(cfg.load.name, lv, cfg.temperature.name, tv, a, b)


def model_job(lv, tv, seed) -> dict:
    return {"kind": "model", "load": lv, "temperature": tv, "seed": int(seed)}


def pair_job(lv, tv, a, b) -> dict:
    return {"kind": "pair", "load": lv, "temperature": tv, "seed_a": int(a), "seed_b": int(b)}


def job_key(cfg: SweepConfig, job: dict) -> str:
    if job["kind"] == "model":
        return mkey(cfg, job["load"], job["temperature"], job["seed"])
    return pkey(cfg, job["load"], job["temperature"], job["seed_a"], job["seed_b"])


# ---------------------------------------------------------------------------------------------------------
# The plan: what the tables say is done, and what is left


class PlanError(RuntimeError):
    """The run directory holds results that cannot be continued with this config."""


@dataclass
class Plan:
    models_done: dict = field(default_factory=dict)  # model key -> status (ok | diverged)
    models_todo: list = field(default_factory=list)  # [(load, temperature, seed)]
    pairs_done: dict = field(default_factory=dict)  # pair key -> status
    pairs_todo: list = field(default_factory=list)  # [(load, temperature, seed_a, seed_b)]
    repaired: list = field(default_factory=list)  # human-readable notes on what was found broken
    broken_weights: dict = field(default_factory=dict)  # model key -> "missing" | "truncated" (status shows them)
    broken_curves: list = field(default_factory=list)  # ok pairs whose curve part is missing or unreadable
    unreadable: dict = field(default_factory=dict)  # table -> [(part key, why)] (moved aside by a repair)
    misplaced: dict = field(default_factory=dict)  # table -> {part key: why} parts not holding their own key
    scans: dict = field(default_factory=dict)  # table -> TableScan the plan was made from, without those parts

    @property
    def complete(self) -> bool:
        return not self.models_todo and not self.pairs_todo


def scan_tables(run_dir: str) -> dict[str, TableScan]:
    """Every table of ``run_dir`` read once (each part once): what a command shares between the plan, its
    summary and the analysis."""
    tables = RunTables(run_dir)
    return {table: tables.scan(table) for table in TABLE_NAMES}


def make_plan(cfg: SweepConfig, run_dir: str, *, repair: bool = True, scans: dict | None = None) -> Plan:
    """Compare the config's grid with the tables of ``run_dir`` (read once, or the given ``scans``).

    Broken things are detected and scheduled again: an unreadable part, a part that does not hold its own
    key (a copy ``K (copy).parquet``, a part stored under another key's name: never counted, never a reason
    to skip a key), an ok model whose weights file is missing or truncated, an ok pair whose curve part is
    missing. ``repair`` moves such parts to RUN_DIR/quarantine (nothing a user put there is deleted) and
    removes the temporary files of writes cut short. Rows computed with different settings (another config
    hash) raise PlanError before anything is changed: mixing them would silently compare apples and pears.
    """
    tables = RunTables(run_dir)
    plan = Plan()
    scans = dict(scans) if scans is not None else scan_tables(run_dir)
    moves = []  # (table, key, note) of parts to move aside, done once the plan is known to be valid
    for table in TABLE_NAMES:
        scan = scans[table]
        plan.unreadable[table] = list(scan.unreadable)
        plan.misplaced[table] = scan.misnamed()
        for key, why in scan.unreadable:
            moves.append((table, key, f"unreadable {table} part {key} ({why.split(':')[0]})"))
        for key, why in plan.misplaced[table].items():
            moves.append((table, key, f"{table} part {key}.parquet does not hold {key} ({why})"))
        # What the plan (and whatever shares its read) counts: the parts that hold their own keys.
        scans[table] = scan.without(set(plan.misplaced[table]) | ({k for k, _ in scan.unreadable} if repair else set()))
    plan.scans = scans
    frames = {table: scan.frame for table, scan in scans.items()}
    current = cfg.config_hash()
    for table in ("models", "pairs"):
        hashes = set(frames[table]["config_hash"].dropna()) - {current}
        if hashes:
            raise PlanError(
                f"{run_dir} holds {table} rows computed with other settings (config hash {sorted(hashes)[0]}, "
                f"this config: {current}): training or metric settings differ from the run's. Keep the run's "
                f"settings (only grid values, seeds and resources may change on resume) or use a new run directory"
            )
    if repair:
        swept = storage.sweep_temporary_files(run_dir)
        if swept:
            plan.repaired.append(f"removed {len(swept)} temporary file(s) of writes cut short, e.g. {swept[0]}")
    for table, key, note in moves:
        if repair:
            moved = storage.move_aside(run_dir, tables.part_uri(table, key))
            plan.repaired.append(f"{note}: moved to {moved}, recomputed")
        else:
            plan.repaired.append(f"{note}: resume moves it aside and recomputes it")
    model_files = storage.list_names(join(run_dir, "models"), ".pt")
    curve_parts = set(scans["curves"].row_parts)  # readable curve parts that hold their own key

    status = dict(zip(scans["models"].row_parts, frames["models"]["status"]))
    for lv, tv, s in cfg.model_keys():
        key = mkey(cfg, lv, tv, s)
        st = status.get(key)
        if st == "ok" and key not in model_files:
            plan.repaired.append(f"model {key}: weights file missing, retrained")
            plan.broken_weights[key] = "missing"
            st = None
        elif st == "ok" and not storage.looks_complete(storage.model_uri(run_dir, key)):
            plan.repaired.append(f"model {key}: weights file truncated, retrained")
            plan.broken_weights[key] = "truncated"
            if repair:
                storage.delete(storage.model_uri(run_dir, key))
            st = None
        if st in DONE_MODEL:
            plan.models_done[key] = st
        else:
            plan.models_todo.append((lv, tv, s))

    pstatus = dict(zip(scans["pairs"].row_parts, frames["pairs"]["status"]))
    retrained = {mkey(cfg, lv, tv, s) for lv, tv, s in plan.models_todo}
    for lv, tv, a, b in cfg.pair_keys():
        key = pkey(cfg, lv, tv, a, b)
        st = pstatus.get(key)
        redo = False
        if st == "ok" and key not in curve_parts:
            plan.repaired.append(f"pair {key}: curve part missing or unreadable, recomputed")
            plan.broken_curves.append(key)
            redo = True
        # A pair measured on a model that is now retrained is stale: measure it again with the new model.
        elif st in DONE_PAIR and (mkey(cfg, lv, tv, a) in retrained or mkey(cfg, lv, tv, b) in retrained):
            redo = True
        if redo:
            st = None
            if repair:  # the pair job skips a key whose row says done: the stale row (ours, by its key) must go
                tables.delete_part("pairs", key)
        if st in DONE_PAIR:
            plan.pairs_done[key] = st
        else:
            plan.pairs_todo.append((lv, tv, a, b))
    plan.models_todo = order_models(cfg, plan.models_todo)
    return plan


def order_models(cfg: SweepConfig, todo: list) -> list:
    """Longest cells first (shorter tail at the end of the sweep), the seeds of a cell together (its pairs
    become ready early). Costs are rough estimates used only for this order and to weight the ETA."""
    try:
        cost = _cost_model(cfg)[0]
        return sorted(todo, key=lambda k: (-cost(k[0], k[1]), k[0], k[1], k[2]))
    except Exception:  # ordering is an optimisation: never fail a sweep over it
        return list(todo)


def job_costs(cfg: SweepConfig) -> dict[str, float]:
    """Job key -> estimated cost of every model and pair job of the grid (model-seconds at the assumed rate
    below; only the ratios matter: the ETA scales them by the seconds the finished jobs took). Empty when
    the model cannot be sized (the ETA then weighs every job the same)."""
    try:
        model_cost, pair_cost = _cost_model(cfg)
        cells = {(lv, tv): (model_cost(lv, tv), pair_cost(lv, tv)) for lv in cfg.load.values for tv in cfg.temperature.values}
    except Exception:  # an estimate: never fail a sweep over it
        return {}
    out = {mkey(cfg, lv, tv, s): cells[(lv, tv)][0] for lv, tv, s in cfg.model_keys()}
    out.update({pkey(cfg, lv, tv, a, b): cells[(lv, tv)][1] for lv, tv, a, b in cfg.pair_keys()})
    return out


# The cost model: seconds at an assumed sustained rate. Wrong in absolute terms on any machine; what it must
# get roughly right is how jobs of one sweep compare (a wide model at batch 16 against a narrow one at 1024).
# Fitted to the 144 jobs of a `landscape run demo` on this project's 2-core CPU (2026-12-01, while other
# processes loaded it; benchmarks/eta.py replays a run's ETA): per training step a fixed cost dominates small
# models, larger matrix products run faster per flop than small ones (taken as one rate), and a curve step
# costs about twice a training step's fixed cost (it builds the curve point's weights from three models).
FLOPS_PER_SECOND = 18e9  # dense layers, fitted (a first guess of 5e9 overweighted wide models 4x)
STEP_OVERHEAD_S = 1.6e-3  # per SGD step: Python, autograd, optimizer, indexing (fitted; a guess of 2e-4 was 8x low)
CURVE_STEP_FACTOR = 2.0  # a curve training step's fixed cost, in training steps
JOB_OVERHEAD_S = 0.7  # per job: data, model build, writing the weights and parts (fitted)
HESSIAN_PRODUCTS = 50  # Hessian-vector products per model, typical (Lanczos + Hutchinson; capped at 100 + 100)


def _cost_model(cfg: SweepConfig):
    """(model_cost(lv, tv), pair_cost(lv, tv)) for the cells of ``cfg``, in estimated seconds."""
    from workloads.models import build_model, count_parameters

    full, shape, classes = dataset_facts(cfg.workload.dataset, cfg.workload.data_root)
    m, c = cfg.metrics, cfg.metrics.curve

    @functools.lru_cache(maxsize=None)
    def params(width: int) -> int:
        import torch

        with torch.device("meta"):  # shapes only: no memory, no initialisation (ResNet18 k=128 is 45M params)
            return count_parameters(build_model(cfg.workload.model, width=width, num_classes=classes,
                                                input_shape=shape, **cfg.workload.model_args))

    def cell(lv, tv):
        width = int(lv) if cfg.load.name == "width" else cfg.workload.width
        batch = int(tv) if cfg.temperature.name == "batch_size" else cfg.training.batch_size
        return transformed_train_size(cfg, lv, full), batch, params(width)

    def sgd(epochs: int, n: int, batch: int, p: int, step_factor: float = 1.0) -> float:
        # ~6 flops per parameter and example for a forward and backward pass.
        return epochs * max(1, n // batch) * (step_factor * STEP_OVERHEAD_S + 6.0 * batch * p / FLOPS_PER_SECOND)

    def evaluation(n: int, p: int) -> float:  # train and test set (~1.25 n), forward only
        return 2.0 * 1.25 * n * p / FLOPS_PER_SECOND

    def model_cost(lv, tv):
        n, batch, p = cell(lv, tv)
        hessian = HESSIAN_PRODUCTS * 12.0 * min(m.hessian_samples, n) * p / FLOPS_PER_SECOND
        return JOB_OVERHEAD_S + sgd(cfg.training.epochs, n, batch, p) + evaluation(n, p) + hessian

    def pair_cost(lv, tv):
        n, _, p = cell(lv, tv)
        # Each t of the grid: BatchNorm statistics recomputed (a pass over the training set) and an evaluation.
        return (JOB_OVERHEAD_S + sgd(c.epochs, n, c.batch_size, p, CURVE_STEP_FACTOR)
                + c.points * (evaluation(n, p) + 2.0 * n * p / FLOPS_PER_SECOND))

    return model_cost, pair_cost


# ---------------------------------------------------------------------------------------------------------
# The job (runs in a Tune worker)


@dataclass(frozen=True)
class JobContext:
    """What every job needs besides its own keys; shipped once to the workers by tune.with_parameters."""

    sweep: dict  # SweepConfig.to_dict()
    run_dir: str
    run_id: str
    config_hash: str
    faults: str | None = None  # testing hook only: see FAULT_INJECT_ENV


# ---------------------------------------------------------------------------------------------------------
# Fault injection: a TESTING hook, off unless the variable is set on the driver (tests/test_faults.py).
# The pattern of Ray Tune's own restore tests: a job crashes while a marker file is absent and creates it,
# so it crashes exactly once; without a marker it crashes on every attempt. The file holds JSON:
#   {"crash": [{"key": JOB KEY, "mode": MODE, "marker": PATH (optional: crash once), ...}],
#    "log": PATH (optional: one JSON line per job attempt that does work: key, pid, resumed_from epoch)}
# MODE:
#   "exit"   the worker process dies;  "raise"  the job raises
#            (both when the job starts, or "at_epoch": N, after the training checkpoint of epoch N)
#   "block"  the job waits, when it starts, until the file "until" exists (at most BLOCK_LIMIT_S), after
#            creating the file "started" if given: a sweep that cannot finish before a test acts on it
#   "enospc" | "erofs"   every write of the key's table parts (by its worker, or by the driver recording it)
#            raises OSError(ENOSPC | EROFS): a full or read-only disk, without touching a real one
FAULT_INJECT_ENV = "LANDSCAPE_FAULT_INJECT"
BLOCK_LIMIT_S = 600.0  # a blocked job gives up waiting eventually: a test that forgot its marker still ends
_WRITE_FAULTS = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}


def _faults(context: JobContext) -> dict:
    if not context.faults:
        return {}
    with open(context.faults) as f:
        return json.load(f)


def _log_attempt(faults: dict, key: str, resumed_from) -> None:
    if faults.get("log"):
        with open(faults["log"], "a") as f:
            f.write(json.dumps({"key": key, "pid": os.getpid(), "resumed_from": resumed_from}) + "\n")


def _inject(faults: dict, key: str, epoch: int | None = None) -> None:
    for fault in faults.get("crash", []):
        if fault.get("key") != key or fault.get("at_epoch") != epoch or fault.get("mode") in _WRITE_FAULTS:
            continue
        if fault.get("mode") == "block":
            if fault.get("started"):
                open(fault["started"], "w").close()
            deadline = time.monotonic() + BLOCK_LIMIT_S
            while not os.path.exists(fault["until"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            continue
        marker = fault.get("marker")
        if marker:
            if os.path.exists(marker):
                continue
            open(marker, "w").close()
        if fault.get("mode") == "exit":
            os._exit(3)  # no cleanup, no exception: as if the worker was killed
        raise RuntimeError(f"injected fault in {key}" + (f" after epoch {epoch}" if epoch else ""))


def _inject_write(faults: dict, key: str, uri: str) -> None:
    for fault in faults.get("crash", []):
        if fault.get("key") == key and fault.get("mode") in _WRITE_FAULTS:
            code = _WRITE_FAULTS[fault["mode"]]
            raise OSError(code, f"{os.strerror(code)} (injected)", uri)


@contextlib.contextmanager
def _writing(uri: str, faults: dict | None = None, key: str | None = None):
    """Around a write into the run directory: a write error no retry fixes (full, read-only, no permission:
    storage.STORAGE_ERRNOS) becomes StorageFullError naming ``uri``, which stops the sweep."""
    try:
        if faults:
            _inject_write(faults, key, uri)
        yield
    except OSError as exc:
        if storage.storage_problem(exc) is None:
            raise
        raise storage.StorageFullError(f"cannot write {uri}: {exc.strerror or os.strerror(exc.errno)}") from None


@functools.lru_cache(maxsize=4)
def _sweep_from_dict_cached(text: str) -> SweepConfig:
    import json

    from orchestrator.config import SweepConfig, _build

    return _build(SweepConfig, json.loads(text), "")


def _sweep_of(context: JobContext) -> SweepConfig:
    import json

    return _sweep_from_dict_cached(json.dumps(context.sweep, sort_keys=True))


def _job_device(cpus: float) -> str:
    """cuda when Ray gave this job a GPU (Ray sets CUDA_VISIBLE_DEVICES to it), else cpu; threads = CPUs.

    A GPU that Ray accounts for but CUDA cannot use (a declared ``--num-gpus`` on a machine without one,
    a broken driver) runs the job on the CPU and says so in the ``device`` column ("cpu (...)"), so a
    sweep that was meant for GPUs never runs on CPUs unnoticed (`landscape run` warns about such rows).
    """
    import ray
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids and torch.cuda.is_available():
        return "cuda"
    if gpu_ids:
        return f"cpu (Ray GPU {','.join(map(str, gpu_ids))} has no CUDA)"
    return "cpu"


def _torch_device(device: str) -> str:
    """The torch device of a _job_device label ("cpu (...)" -> "cpu")."""
    return device.split(" ", 1)[0]


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


def run_job(config: dict, context: JobContext) -> None:
    """The Tune trainable: one model job or one pair job (see the module docstring).

    Reports exactly once: {"kind", "key", "status", "skipped", "wall_seconds", ...}. Exceptions propagate,
    so Tune retries the job (FailureConfig); the driver records a job that keeps failing as ``failed``.
    """
    from ray import tune

    cfg = _sweep_of(context)
    started = time.perf_counter()
    try:
        if config["kind"] == "model":
            result = _model_job(cfg, context, config)
        elif config["kind"] == "pair":
            result = _pair_job(cfg, context, config)
        else:
            raise ValueError(f"unknown job kind {config['kind']!r}")
    except storage.StorageFullError as exc:
        # Not this job's fault and not worth a retry: the driver stops the sweep (SweepState.fatal).
        result = {"kind": config["kind"], "key": job_key(cfg, config), "status": STORAGE_ERROR, "skipped": False,
                  "error": str(exc), "wall_seconds": time.perf_counter() - started}
    tune.report(result)


def _model_job(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    from workloads.experiment import ModelSpec, train_and_measure
    from workloads.train import ResumeStateError

    started = time.perf_counter()
    lv, tv, seed = job["load"], job["temperature"], job["seed"]
    key = mkey(cfg, lv, tv, seed)
    tables = RunTables(context.run_dir)
    existing = storage.read_part_row(tables, "models", key)
    weights = storage.model_uri(context.run_dir, key)
    if existing and existing.get("config_hash") == context.config_hash and existing.get("status") in DONE_MODEL:
        if existing["status"] == "diverged" or storage.exists(weights):
            return {"kind": "model", "key": key, "status": existing["status"], "skipped": True,
                    "wall_seconds": 0.0, "test_acc": existing.get("test_acc")}

    device = _job_device(cfg.trial_cpu(lv))
    spec = ModelSpec(cell_spec(cfg, lv, tv), int(seed), _torch_device(device))
    ckpt = storage.checkpoint_uri(context.run_dir, key)
    notes = []  # what the user should know about this job although it succeeded
    resume_state, note = storage.load_checkpoint(ckpt) if cfg.training.checkpoint_every else (None, None)
    notes += [note] if note else []
    faults = _faults(context)
    _log_attempt(faults, key, (resume_state or {}).get("epoch") if isinstance(resume_state, dict) else None)
    _inject(faults, key)
    # Periodic checkpoints go to the run directory (shared storage on a cluster), so a retried or resumed
    # job continues on any node from its last checkpoint instead of epoch 0.
    checkpoint_fn = None
    if cfg.training.checkpoint_every:
        def checkpoint_fn(state):
            with _writing(ckpt):
                storage.save_state(ckpt, state)
            _inject(faults, key, state["epoch"])
    try:
        outcome = train_and_measure(spec, checkpoint_fn=checkpoint_fn, resume_state=resume_state)
    except ResumeStateError as exc:
        if resume_state is None:
            raise
        storage.delete(ckpt)  # a checkpoint of other settings, or not one of ours: start over
        notes.append(f"checkpoint {ckpt} does not fit this training ({exc}); deleted it, trained from epoch 0")
        outcome = train_and_measure(spec, checkpoint_fn=checkpoint_fn, resume_state=None)
    row = {**provenance(context.run_id, context.config_hash), **outcome.row, "node_id": _node_id(), "device": device}
    if outcome.state_dict is not None:
        with _writing(weights, faults, key):
            row["weights_sha256"] = storage.save_state(weights, outcome.state_dict)
        row["model_uri"] = weights
    with _writing(tables.part_uri("models", key), faults, key):
        tables.write_part("models", key, [row])
    storage.delete(ckpt)
    return {"kind": "model", "key": key, "status": row["status"], "skipped": False,
            "wall_seconds": time.perf_counter() - started, "test_acc": row.get("test_acc"),
            "train_loss": row.get("train_loss"), "error": row.get("error"), "note": "; ".join(notes) or None}


def _pair_job(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    from workloads.experiment import PairSpec, measure_pair

    started = time.perf_counter()
    lv, tv, a, b = job["load"], job["temperature"], job["seed_a"], job["seed_b"]
    key = pkey(cfg, lv, tv, a, b)
    tables = RunTables(context.run_dir)
    existing = storage.read_part_row(tables, "pairs", key)
    if existing and existing.get("config_hash") == context.config_hash and existing.get("status") in DONE_PAIR:
        return {"kind": "pair", "key": key, "status": existing["status"], "skipped": True, "wall_seconds": 0.0,
                "mode_connectivity": existing.get("mode_connectivity")}
    faults = _faults(context)
    _log_attempt(faults, key, None)
    _inject(faults, key)
    try:
        state_a = _load_weights(context.run_dir, tables, mkey(cfg, lv, tv, a))
        state_b = _load_weights(context.run_dir, tables, mkey(cfg, lv, tv, b))
    except storage.RunDirError as exc:
        # Not a fault of this worker, so no retry: the pair is failed for now, and the next round of this
        # run (or a resume) retrains the model whose file is gone and measures the pair again.
        write_unmeasured_pair(cfg, context.run_dir, context.run_id, job, "failed", str(exc), faults=faults)
        return {"kind": "pair", "key": key, "status": "failed", "skipped": False, "error": str(exc),
                "wall_seconds": time.perf_counter() - started}
    device = _job_device(cfg.pair_resources(lv)["cpu"])
    outcome = measure_pair(PairSpec(cell_spec(cfg, lv, tv), int(a), int(b), _torch_device(device)), state_a, state_b)
    prov = provenance(context.run_id, context.config_hash)
    with _writing(tables.part_uri("curves", key), faults, key):
        if outcome.curve_rows:
            tables.write_part("curves", key, [{**prov, **r} for r in outcome.curve_rows])
        else:
            tables.delete_part("curves", key)
    # The pairs row is written last: it is what marks the pair as done.
    with _writing(tables.part_uri("pairs", key), faults, key):
        tables.write_part("pairs", key, [{**prov, **outcome.row, "node_id": _node_id(), "device": device}])
    return {"kind": "pair", "key": key, "status": outcome.row["status"], "skipped": False,
            "wall_seconds": time.perf_counter() - started, "mode_connectivity": outcome.row.get("mode_connectivity"),
            "error": outcome.row.get("error")}


def _load_weights(run_dir: str, tables: RunTables, key: str) -> dict:
    """A model's weights, checked against the content hash of its models row (rows written before hashes
    have none: not checked). A file that is unreadable or not the bytes its row names is deleted before the
    error propagates, so that the next plan (this run's next round, or a resume) retrains that model instead
    of measuring damaged weights (a pair of damaged weights once came out `diverged` with L2 6.7e24)."""
    uri = storage.model_uri(run_dir, key)
    row = storage.read_part_row(tables, "models", key) or {}
    try:
        return storage.load_state(uri, sha256=row.get("weights_sha256"))
    except storage.UnreadableFile:
        storage.delete(uri)
        raise


# ---------------------------------------------------------------------------------------------------------
# Driver side: rows the driver writes itself


def _utcnow():
    return datetime.now(timezone.utc)


def write_failed_model(cfg, run_dir, run_id, job, error: str, *, faults: dict | None = None) -> None:
    """The row of a model job that kept failing; StorageFullError when the run directory cannot be written."""
    lv, tv, seed = job["load"], job["temperature"], job["seed"]
    row = {**provenance(run_id, cfg.config_hash()), "load_name": cfg.load.name, "load_value": float(lv),
           "temperature_name": cfg.temperature.name, "temperature_value": float(tv), "seed": int(seed),
           "status": "failed", "error": error, "finished_at": _utcnow(), "hessian_backend": cfg.metrics.hessian_backend}
    key = mkey(cfg, lv, tv, seed)
    tables = RunTables(run_dir)
    with _writing(tables.part_uri("models", key), faults, key):
        tables.write_part("models", key, [row])


def write_unmeasured_pair(cfg, run_dir, run_id, job, status: str, error: str, *, faults: dict | None = None) -> None:
    """A pair that cannot be measured (an endpoint diverged or failed, or the job failed); StorageFullError
    when the run directory cannot be written."""
    lv, tv, a, b = job["load"], job["temperature"], job["seed_a"], job["seed_b"]
    now = _utcnow()
    c = cfg.metrics.curve
    row = {**provenance(run_id, cfg.config_hash()), "load_name": cfg.load.name, "load_value": float(lv),
           "temperature_name": cfg.temperature.name, "temperature_value": float(tv), "seed_a": int(a),
           "seed_b": int(b), "status": status, "error": error, "curve_epochs": c.epochs, "curve_lr": c.lr,
           "curve_points": c.points, "cka_probe_size": cfg.metrics.cka_probes,
           "cka_probe_seed": cfg.metrics.cka_probe_seed, "started_at": now, "finished_at": now}
    tables = RunTables(run_dir)
    key = pkey(cfg, lv, tv, a, b)
    with _writing(tables.part_uri("pairs", key), faults, key):
        tables.delete_part("curves", key)
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


# ---------------------------------------------------------------------------------------------------------
# Counts shared by the searcher and the progress view


@dataclass
class KindCounts:
    """One kind of job, counted by key: a job retried, or redone in a later round, counts once (its last
    outcome), so no count ever exceeds the grid."""

    keys: list = field(default_factory=list)  # every job key of this kind in the grid
    before: set = field(default_factory=set)  # keys found done (in the tables, or by the job itself)
    outcome: dict = field(default_factory=dict)  # key -> ok | diverged | failed, last outcome in this run
    live: dict = field(default_factory=dict)  # trial id -> key of the jobs running now
    seconds: dict = field(default_factory=dict)  # key -> wall seconds of its last job that did work

    @property
    def total(self) -> int:
        return len(self.keys)

    @property
    def done_before(self) -> int:
        return len(self.before - set(self.outcome))

    def _count(self, status: str) -> int:
        return sum(1 for v in self.outcome.values() if v == status)

    @property
    def ok(self) -> int:
        return self._count("ok")

    @property
    def diverged(self) -> int:
        return self._count("diverged")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def running(self) -> int:
        return len(self.live)

    @property
    def finished(self) -> int:
        return min(self.total, len(self.before | set(self.outcome)))

    @property
    def pending(self) -> int:
        return max(0, self.total - self.finished - self.running)

    def left(self) -> tuple[list, list]:
        """(keys not finished and not running, keys running now)."""
        running = set(self.live.values())
        finished = self.before | set(self.outcome)
        return [k for k in self.keys if k not in finished and k not in running], sorted(running - finished)


@dataclass
class SweepState:
    models: KindCounts = field(default_factory=KindCounts)
    pairs: KindCounts = field(default_factory=KindCounts)
    slots: int = 1  # jobs the cluster runs at once
    started: float = field(default_factory=time.monotonic)
    attempted: set = field(default_factory=set)  # job keys handed to Tune in this run
    failed_keys: dict = field(default_factory=dict)  # key -> error of jobs that failed in this run
    costs: dict = field(default_factory=dict)  # job key -> estimated cost (job_costs); empty: all the same
    fatal: str | None = None  # why the sweep must stop now (the run directory cannot be written)

    def counts(self, kind: str) -> KindCounts:
        return self.models if kind == "model" else self.pairs

    def eta_seconds(self) -> float | None:
        """Seconds until the sweep ends: the estimated cost of what is left (a running job counts half) times
        the seconds per unit of cost measured on the jobs finished so far, over the parallel slots.

        Weighting by cost matters because the longest jobs run first: the mean time of the first jobs
        times the number left overestimated a sweep 2-4x. None before any job has finished.
        """
        rates = {}
        for kind, c in (("model", self.models), ("pair", self.pairs)):
            cost = sum(self.costs.get(k, 1.0) for k in c.seconds)
            if c.seconds and cost > 0:
                rates[kind] = sum(c.seconds.values()) / cost
        if not rates:
            return None
        left = 0.0
        for kind, c in (("model", self.models), ("pair", self.pairs)):
            # Cost units are comparable across kinds (both estimate seconds): one kind's rate stands in for
            # the other's until a job of it has finished.
            rate = rates.get(kind, rates.get("pair" if kind == "model" else "model"))
            todo, running = c.left()
            left += rate * (sum(self.costs.get(k, 1.0) for k in todo) + 0.5 * sum(self.costs.get(k, 1.0) for k in running))
        return left / max(1, self.slots)


# ---------------------------------------------------------------------------------------------------------
# The searcher: hands out jobs, pairs first once their models exist


def _make_searcher_class():
    from ray.tune.search import Searcher

    class SweepSearcher(Searcher):
        """Hands Tune the model jobs of the plan and each pair job as soon as both its models are ok.

        Pairs whose models diverged or failed are resolved on the driver (a row saying why), without a job.
        Runs in the driver only.
        """

        def __init__(self, cfg: SweepConfig, plan: Plan, state: SweepState, on_unmeasured):
            super().__init__(metric=None, mode=None)
            self.cfg = cfg
            self.state = state
            self.on_unmeasured = on_unmeasured  # (job, status, error) -> None
            self.models = list(plan.models_todo)
            self.model_status = dict(plan.models_done)  # key -> ok | diverged | failed
            self.waiting = list(plan.pairs_todo)  # pairs whose models are not both known yet
            self.ready: list = []
            self.live: dict = {}  # trial id -> job
            # A pair whose model is neither done nor to be trained in this round (it failed earlier in this
            # run) cannot be measured now: resolve it instead of waiting for a model that never comes.
            todo = {mkey(cfg, *k) for k in self.models}
            for lv, tv, a, b in self.waiting:
                for seed in (a, b):
                    key = mkey(cfg, lv, tv, seed)
                    if key not in todo and key not in self.model_status:
                        self.model_status[key] = "failed"
            self._release_pairs()

        # Tune's checkpointing of searcher state: the tables are our state, nothing to save.
        def save_to_dir(self, *args, **kwargs):
            return None

        def restore_from_dir(self, *args, **kwargs):
            return None

        def suggest(self, trial_id: str):
            if self.state.fatal:
                return Searcher.FINISHED  # the run directory cannot be written: no job could record itself
            if self.ready:
                job = pair_job(*self.ready.pop(0))
            elif self.models:
                job = model_job(*self.models.pop(0))
            elif self.live:
                return None  # a pair may still become ready when a running model finishes
            else:
                return Searcher.FINISHED
            self.live[trial_id] = job
            self.state.attempted.add(job_key(self.cfg, job))
            return dict(job)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            job = self.live.pop(trial_id, None)
            if job is None or job["kind"] != "model":
                return
            key = job_key(self.cfg, job)
            status = "failed" if error else (result or {}).get("status", "failed")
            if status == STORAGE_ERROR:
                return  # the sweep stops; its pairs stay to do (a resume measures them)
            self.model_status[key] = status
            self._release_pairs()

        def _release_pairs(self) -> None:
            still = []
            for lv, tv, a, b in self.waiting:
                sa = self.model_status.get(mkey(self.cfg, lv, tv, a))
                sb = self.model_status.get(mkey(self.cfg, lv, tv, b))
                if sa is None or sb is None:
                    still.append((lv, tv, a, b))
                elif sa == "ok" and sb == "ok":
                    self.ready.append((lv, tv, a, b))
                else:
                    bad = [(s, st) for s, st in ((a, sa), (b, sb)) if st != "ok"]
                    status = "failed" if any(st == "failed" for _, st in bad) else "diverged"
                    why = ", ".join(f"model seed={s} {st}" for s, st in bad)
                    self.on_unmeasured(pair_job(lv, tv, a, b), status, f"not measured: {why}")
            self.waiting = still

    return SweepSearcher


def _make_recorder_class():
    from ray.tune import Callback

    class JobRecorder(Callback):
        """Counts jobs for the progress view and records jobs that failed after Tune's retries.

        A write into the run directory that fails for good (storage.StorageFullError) sets ``state.fatal``
        instead of raising: an exception here would take ``tuner.fit()`` down with a chained traceback, while
        the stopper ends the experiment cleanly and run_sweep reports it.
        """

        def __init__(self, cfg: SweepConfig, run_dir: str, run_id: str, state: SweepState, faults: dict | None = None):
            self.cfg, self.run_dir, self.run_id, self.state = cfg, run_dir, run_id, state
            self.faults = faults
            self.events: list = []  # (kind, key, status, result) for line-oriented logs

        def on_trial_start(self, iteration, trials, trial, **info):
            self.state.counts(trial.config["kind"]).live[trial.trial_id] = job_key(self.cfg, trial.config)

        def on_trial_recover(self, iteration, trials, trial, **info):  # failed; Tune starts it again
            self.state.counts(trial.config["kind"]).live.pop(trial.trial_id, None)

        def on_trial_complete(self, iteration, trials, trial, **info):
            job = trial.config
            counts = self.state.counts(job["kind"])
            counts.live.pop(trial.trial_id, None)
            result = trial.last_result or {}
            status = result.get("status", "failed")
            key = job_key(self.cfg, job)
            if status == STORAGE_ERROR:
                self.state.fatal = self.state.fatal or result.get("error") or "the run directory cannot be written"
                return
            if result.get("skipped"):
                counts.before.add(key)
            else:
                counts.outcome[key] = status
                counts.seconds[key] = float(result.get("wall_seconds") or 0.0)
            self.events.append((job["kind"], key, status, result))

        def on_trial_error(self, iteration, trials, trial, **info):
            job = trial.config
            counts = self.state.counts(job["kind"])
            counts.live.pop(trial.trial_id, None)
            error = trial_error_text(trial)
            key = job_key(self.cfg, job)
            counts.outcome[key] = "failed"
            self.state.failed_keys[key] = error
            self.events.append((job["kind"], key, "failed", {"error": error}))
            try:
                if job["kind"] == "model":
                    write_failed_model(self.cfg, self.run_dir, self.run_id, job, error, faults=self.faults)
                else:
                    write_unmeasured_pair(self.cfg, self.run_dir, self.run_id, job, "failed", error, faults=self.faults)
            except storage.StorageFullError as exc:
                self.state.fatal = self.state.fatal or str(exc)

        def on_experiment_end(self, trials, **info):
            for counts in (self.state.models, self.state.pairs):
                counts.live.clear()  # trials stopped with the experiment are not running any more

    return JobRecorder


def _make_stopper_class():
    from ray.tune import Stopper

    class StopOnFatal(Stopper):
        """Ends the experiment (every trial) once ``state.fatal`` says the sweep cannot go on."""

        def __init__(self, state: SweepState):
            self.state = state

        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return self.state.fatal is not None

    return StopOnFatal


# ---------------------------------------------------------------------------------------------------------
# Running a sweep


@dataclass
class SweepSummary:
    run_dir: str
    run_id: str
    seconds: float
    plan_before: Plan
    plan_after: Plan
    state: SweepState
    resources: dict


def _job_resources(cfg: SweepConfig):
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    def resources(job: dict):
        r = cfg.trial_resources(job["load"]) if job["kind"] == "model" else cfg.pair_resources(job["load"])
        bundle = {"CPU": r["cpu"]}
        if r["gpu"] > 0:
            bundle["GPU"] = r["gpu"]
        return PlacementGroupFactory([bundle])

    return resources


def _slots(cfg: SweepConfig, plan_resources: dict) -> int:
    counts = list(plan_resources.get("trials_at_once", {}).values())
    slots = max(1, min(counts)) if counts else 1
    if cfg.run.max_concurrent:
        slots = min(slots, cfg.run.max_concurrent)
    return slots


# Tune rewrites its experiment state (every trial's config and result, the searcher, the callbacks) every
# ~10 s by default, and uploads it to the run directory each time: 27 MB at 1,820 trials, on s3:// a PUT each
# time. Nothing here reads it (the tables are the record), so it is saved once an hour, and when a round ends.
TUNE_STATE_PERIOD_S = 3600


@contextlib.contextmanager
def _tune_settings(slots: int):
    """Tune's settings for one sweep, set while it runs (a value the user set in the environment wins).

    TUNE_MAX_PENDING_TRIALS_PG: one pending trial per slot (a custom searcher gets 1 by default). With 1,
    the second worker only starts once the first trial runs (~3 s of an idle slot at the start of every
    sweep); with one per slot all workers start together. A ready pair job then waits for at most ``slots``
    model jobs that were already pending, never for the rest of the grid.
    TUNE_GLOBAL_CHECKPOINT_S: how often Tune saves its experiment state (TUNE_STATE_PERIOD_S above).
    """
    settings = {"TUNE_MAX_PENDING_TRIALS_PG": str(max(1, int(slots))), "TUNE_GLOBAL_CHECKPOINT_S": str(TUNE_STATE_PERIOD_S)}
    added = [key for key in settings if key not in os.environ]
    for key in added:
        os.environ[key] = settings[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def run_sweep(cfg: SweepConfig, run_dir: str, *, run_id: str, resources: dict, progress=None,
              max_rounds: int = 3, plan: Plan | None = None) -> SweepSummary:
    """Run every job the tables say is missing; Ray must be initialised and resources checked.

    ``progress``: a Tune Callback factory taking (state, recorder) (orchestrator.progress.make_progress).
    ``plan``: the plan the caller has just made (saves reading the tables again). After each Tune experiment
    the plan is made again from the tables (a job may have been lost with a worker, or models retrained);
    jobs not yet attempted in this run get another round. Raises storage.StorageFullError (after removing
    the temporary files of cut writes) when the run directory cannot be written: the sweep stops at once.
    """
    from ray import tune

    started = time.monotonic()
    # resources.gpu: auto becomes a number here, as check_resources decided it for this cluster.
    cfg = cfg.with_gpus_available(bool(resources.get("cluster", {}).get("gpu_available")))
    config_hash = cfg.config_hash()
    plan_before = plan if plan is not None else make_plan(cfg, run_dir)
    state = SweepState(slots=_slots(cfg, resources), costs=job_costs(cfg))
    state.models.keys = [mkey(cfg, *k) for k in cfg.model_keys()]
    state.pairs.keys = [pkey(cfg, *k) for k in cfg.pair_keys()]
    state.models.before = set(plan_before.models_done)
    state.pairs.before = set(plan_before.pairs_done)
    context = JobContext(sweep=cfg.to_dict(), run_dir=run_dir, run_id=run_id, config_hash=config_hash,
                         faults=os.environ.get(FAULT_INJECT_ENV) or None)
    faults = _faults(context)  # the driver's own writes honour the write faults too (testing only)
    trainable = tune.with_resources(tune.with_parameters(run_job, context=context), _job_resources(cfg))
    Searcher = _make_searcher_class()
    Recorder = _make_recorder_class()

    def on_unmeasured(job, status, error):
        key = job_key(cfg, job)
        state.attempted.add(key)
        try:
            write_unmeasured_pair(cfg, run_dir, run_id, job, status, error, faults=faults)
        except storage.StorageFullError as exc:
            state.fatal = state.fatal or str(exc)
            return
        state.pairs.outcome[key] = status
        recorder.events.append(("pair", key, status, {"error": error}))

    recorder = Recorder(cfg, run_dir, run_id, state, faults)
    callbacks = [recorder]
    if progress is not None:
        callbacks.append(progress(state, recorder))
    stopper = _make_stopper_class()(state)
    plan = plan_before
    for round_ in range(max_rounds):
        todo_models = [k for k in plan.models_todo if mkey(cfg, *k) not in state.attempted]
        # A pair tried in this run gets another round when one of its models is retrained in this one (its
        # weights were found broken by the pair job itself).
        retrained = {mkey(cfg, *k) for k in todo_models}
        todo_pairs = [k for k in plan.pairs_todo if pkey(cfg, *k) not in state.attempted
                      or {mkey(cfg, k[0], k[1], k[2]), mkey(cfg, k[0], k[1], k[3])} & retrained]
        if not todo_models and not todo_pairs:
            break
        round_plan = dataclasses.replace(plan, models_todo=todo_models, pairs_todo=todo_pairs)
        try:
            searcher = Searcher(cfg, round_plan, state, on_unmeasured)
            search_alg = searcher
            if cfg.run.max_concurrent:
                from ray.tune.search import ConcurrencyLimiter

                search_alg = ConcurrencyLimiter(searcher, max_concurrent=cfg.run.max_concurrent)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search_alg, num_samples=-1, reuse_actors=True,
                    trial_name_creator=lambda t: f"{t.config['kind']}-{t.trial_id}",
                    trial_dirname_creator=lambda t: f"{t.config['kind']}-{t.trial_id}",
                ),
                run_config=tune.RunConfig(
                    storage_path=join(run_dir, "tune"),
                    name=f"{stamp}-{round_}",
                    failure_config=tune.FailureConfig(max_failures=cfg.run.max_failures),
                    stop=stopper,
                    verbose=0,
                    callbacks=callbacks,
                    log_to_file=False,
                ),
            )
            if not state.fatal:
                with _tune_settings(state.slots):
                    tuner.fit()
        except Exception as exc:  # Tune's own writes into RUN_DIR/tune fail the same way on a full disk
            problem = storage.storage_problem(exc)
            if problem is None:
                raise
            state.fatal = state.fatal or f"cannot write {join(run_dir, 'tune')}: {problem}"
        if state.fatal:
            storage.sweep_temporary_files(run_dir)
            raise storage.StorageFullError(f"the sweep stopped: {state.fatal}")
        plan = make_plan(cfg, run_dir)
    return SweepSummary(run_dir=run_dir, run_id=run_id, seconds=time.monotonic() - started,
                        plan_before=plan_before, plan_after=plan, state=state, resources=resources)
