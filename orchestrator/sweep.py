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
    Before a run (and a resume) the plan is made from the tables: a model is done when its row is ok (and
    its weights file exists) or diverged; a pair is done when its row is ok or diverged (and, when ok, its
    curve part exists). Only the rest is handed to Tune, and every job checks its own part again before
    working. So a resumed or grown sweep computes exactly the missing keys; Tune's own experiment state is
    not needed for that (and cannot grow a grid).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone

from analysis.tables import RunTables, join, model_key, pair_key
from orchestrator import storage
from orchestrator.config import SweepConfig, dataset_facts, expand_data_root, transformed_train_size
from orchestrator.provenance import provenance

DONE_MODEL = ("ok", "diverged")
DONE_PAIR = ("ok", "diverged")


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

    @property
    def complete(self) -> bool:
        return not self.models_todo and not self.pairs_todo


def make_plan(cfg: SweepConfig, run_dir: str, *, repair: bool = True) -> Plan:
    """Compare the config's grid with the tables of ``run_dir``.

    Broken things are detected and scheduled again: an unreadable part (``repair`` deletes it), an ok model
    whose weights file is missing, an ok pair whose curve part is missing. Rows computed with different
    settings (another config hash) raise PlanError: mixing them would silently compare apples and pears.
    """
    tables = RunTables(run_dir)
    plan = Plan()
    frames = {}
    for table in ("models", "pairs", "curves"):
        for key, why in tables.corrupt_parts(table):
            plan.repaired.append(f"unreadable {table} part {key} ({why.split(':')[0]}): recomputed")
            if repair:
                tables.delete_part(table, key)
        frames[table] = tables.read(table, on_corrupt="skip")
    current = cfg.config_hash()
    for table in ("models", "pairs"):
        hashes = set(frames[table]["config_hash"].dropna()) - {current}
        if hashes:
            raise PlanError(
                f"{run_dir} holds {table} rows computed with other settings (config hash {sorted(hashes)[0]}, "
                f"this config: {current}): training or metric settings differ from the run's. Keep the run's "
                f"settings (only grid values, seeds and resources may change on resume) or use a new run directory"
            )
    model_files = storage.list_names(join(run_dir, "models"), ".pt")
    curve_parts = set(tables.part_keys("curves"))

    status = {}
    for row in frames["models"][["load_value", "temperature_value", "seed", "status"]].itertuples(index=False):
        status[mkey(cfg, row.load_value, row.temperature_value, row.seed)] = row.status
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

    pstatus = {}
    for row in frames["pairs"][["load_value", "temperature_value", "seed_a", "seed_b", "status"]].itertuples(index=False):
        pstatus[pkey(cfg, row.load_value, row.temperature_value, row.seed_a, row.seed_b)] = row.status
    retrained = {mkey(cfg, lv, tv, s) for lv, tv, s in plan.models_todo}
    for lv, tv, a, b in cfg.pair_keys():
        key = pkey(cfg, lv, tv, a, b)
        st = pstatus.get(key)
        redo = False
        if st == "ok" and key not in curve_parts:
            plan.repaired.append(f"pair {key}: curve part missing, recomputed")
            redo = True
        # A pair measured on a model that is now retrained is stale: measure it again with the new model.
        elif st in DONE_PAIR and (mkey(cfg, lv, tv, a) in retrained or mkey(cfg, lv, tv, b) in retrained):
            redo = True
        if redo:
            st = None
            if repair:  # the pair job skips a key whose row says done: the stale row must go
                tables.delete_part("pairs", key)
        if st in DONE_PAIR:
            plan.pairs_done[key] = st
        else:
            plan.pairs_todo.append((lv, tv, a, b))
    plan.models_todo = order_models(cfg, plan.models_todo)
    return plan


def order_models(cfg: SweepConfig, todo: list) -> list:
    """Longest cells first (shorter tail at the end of the sweep), the seeds of a cell together (its pairs
    become ready early). Costs are rough estimates used only for this order."""
    try:
        cost = _cost_model(cfg)
        return sorted(todo, key=lambda k: (-cost(k[0], k[1]), k[0], k[1], k[2]))
    except Exception:  # ordering is an optimisation: never fail a sweep over it
        return list(todo)


def _cost_model(cfg: SweepConfig):
    from workloads.models import build_model, count_parameters

    full, shape, classes = dataset_facts(cfg.workload.dataset, cfg.workload.data_root)

    @functools.lru_cache(maxsize=None)
    def params(width: int) -> int:
        import torch

        with torch.device("meta"):  # shapes only: no memory, no initialisation (ResNet18 k=128 is 45M params)
            return count_parameters(build_model(cfg.workload.model, width=width, num_classes=classes,
                                                input_shape=shape, **cfg.workload.model_args))

    def cost(lv, tv):
        width = int(lv) if cfg.load.name == "width" else cfg.workload.width
        batch = int(tv) if cfg.temperature.name == "batch_size" else cfg.training.batch_size
        n = transformed_train_size(cfg, lv, full)
        steps = cfg.training.epochs * max(1, n // batch)
        # ~0.2 ms of fixed cost per SGD step plus ~6 flops per parameter and example at ~5 GFLOP/s.
        return steps * (2e-4 + 6.0 * batch * params(width) / 5e9)

    return cost


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
#   {"crash": [{"key": JOB KEY, "mode": "exit" (the worker process dies) | "raise",
#               "at_epoch": N (after the training checkpoint of epoch N; default: when the job starts),
#               "marker": PATH (optional: crash once)}],
#    "log": PATH (optional: one JSON line per job attempt that does work: key, pid, resumed_from epoch)}
FAULT_INJECT_ENV = "LANDSCAPE_FAULT_INJECT"


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
        if fault.get("key") != key or fault.get("at_epoch") != epoch:
            continue
        marker = fault.get("marker")
        if marker:
            if os.path.exists(marker):
                continue
            open(marker, "w").close()
        if fault.get("mode") == "exit":
            os._exit(3)  # no cleanup, no exception: as if the worker was killed
        raise RuntimeError(f"injected fault in {key}" + (f" after epoch {epoch}" if epoch else ""))


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
    if config["kind"] == "model":
        result = _model_job(cfg, context, config)
    elif config["kind"] == "pair":
        result = _pair_job(cfg, context, config)
    else:
        raise ValueError(f"unknown job kind {config['kind']!r}")
    tune.report(result)


def _model_job(cfg: SweepConfig, context: JobContext, job: dict) -> dict:
    from workloads.experiment import ModelSpec, train_and_measure

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
    resume_state = storage.load_checkpoint(ckpt) if cfg.training.checkpoint_every else None
    faults = _faults(context)
    _log_attempt(faults, key, (resume_state or {}).get("epoch"))
    _inject(faults, key)
    # Periodic checkpoints go to the run directory (shared storage on a cluster), so a retried or resumed
    # job continues on any node from its last checkpoint instead of epoch 0.
    checkpoint_fn = None
    if cfg.training.checkpoint_every:
        def checkpoint_fn(state):
            storage.save_state(ckpt, state)
            _inject(faults, key, state["epoch"])
    try:
        outcome = train_and_measure(spec, checkpoint_fn=checkpoint_fn, resume_state=resume_state)
    except ValueError as exc:
        if resume_state is None or "resume_state" not in str(exc):
            raise
        storage.delete(ckpt)  # a checkpoint of other settings: start over
        outcome = train_and_measure(spec, checkpoint_fn=checkpoint_fn, resume_state=None)
    row = {**provenance(context.run_id, context.config_hash), **outcome.row, "node_id": _node_id(), "device": device}
    if outcome.state_dict is not None:
        storage.save_state(weights, outcome.state_dict)
        row["model_uri"] = weights
    tables.write_part("models", key, [row])
    storage.delete(ckpt)
    return {"kind": "model", "key": key, "status": row["status"], "skipped": False,
            "wall_seconds": time.perf_counter() - started, "test_acc": row.get("test_acc"),
            "train_loss": row.get("train_loss"), "error": row.get("error")}


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
        state_a = _load_weights(context.run_dir, mkey(cfg, lv, tv, a))
        state_b = _load_weights(context.run_dir, mkey(cfg, lv, tv, b))
    except storage.RunDirError as exc:
        # Not a fault of this worker, so no retry: the pair is failed for now, and the next round of this
        # run (or a resume) retrains the model whose file is gone and measures the pair again.
        write_unmeasured_pair(cfg, context.run_dir, context.run_id, job, "failed", str(exc))
        return {"kind": "pair", "key": key, "status": "failed", "skipped": False, "error": str(exc),
                "wall_seconds": time.perf_counter() - started}
    device = _job_device(cfg.pair_resources(lv)["cpu"])
    outcome = measure_pair(PairSpec(cell_spec(cfg, lv, tv), int(a), int(b), _torch_device(device)), state_a, state_b)
    prov = provenance(context.run_id, context.config_hash)
    if outcome.curve_rows:
        tables.write_part("curves", key, [{**prov, **r} for r in outcome.curve_rows])
    else:
        tables.delete_part("curves", key)
    # The pairs row is written last: it is what marks the pair as done.
    tables.write_part("pairs", key, [{**prov, **outcome.row, "node_id": _node_id(), "device": device}])
    return {"kind": "pair", "key": key, "status": outcome.row["status"], "skipped": False,
            "wall_seconds": time.perf_counter() - started, "mode_connectivity": outcome.row.get("mode_connectivity"),
            "error": outcome.row.get("error")}


def _load_weights(run_dir: str, key: str) -> dict:
    """A model's weights; an unreadable file is deleted before the error propagates, so that the next plan
    (this run's next round, or a resume) retrains that model instead of failing its pairs again and again."""
    uri = storage.model_uri(run_dir, key)
    try:
        return storage.load_state(uri)
    except storage.UnreadableFile:
        storage.delete(uri)
        raise


# ---------------------------------------------------------------------------------------------------------
# Driver side: rows the driver writes itself


def _utcnow():
    return datetime.now(timezone.utc)


def write_failed_model(cfg, run_dir, run_id, job, error: str) -> None:
    lv, tv, seed = job["load"], job["temperature"], job["seed"]
    row = {**provenance(run_id, cfg.config_hash()), "load_name": cfg.load.name, "load_value": float(lv),
           "temperature_name": cfg.temperature.name, "temperature_value": float(tv), "seed": int(seed),
           "status": "failed", "error": error, "finished_at": _utcnow(), "hessian_backend": cfg.metrics.hessian_backend}
    RunTables(run_dir).write_part("models", mkey(cfg, lv, tv, seed), [row])


def write_unmeasured_pair(cfg, run_dir, run_id, job, status: str, error: str) -> None:
    """A pair that cannot be measured (an endpoint diverged or failed, or the job failed)."""
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
    total: int = 0  # jobs of this kind in the whole grid
    done_before: int = 0  # found done in the tables before this run
    ok: int = 0
    diverged: int = 0
    failed: int = 0
    running: int = 0
    seconds: list = field(default_factory=list)  # wall time of the jobs that ran in this run

    @property
    def finished(self) -> int:
        return self.done_before + self.ok + self.diverged + self.failed

    @property
    def pending(self) -> int:
        return max(0, self.total - self.finished - self.running)

    def mean_seconds(self) -> float | None:
        return sum(self.seconds) / len(self.seconds) if self.seconds else None


@dataclass
class SweepState:
    models: KindCounts = field(default_factory=KindCounts)
    pairs: KindCounts = field(default_factory=KindCounts)
    slots: int = 1  # jobs the cluster runs at once
    started: float = field(default_factory=time.monotonic)
    attempted: set = field(default_factory=set)  # job keys handed to Tune in this run
    failed_keys: dict = field(default_factory=dict)  # key -> error of jobs that failed in this run

    def counts(self, kind: str) -> KindCounts:
        return self.models if kind == "model" else self.pairs

    def eta_seconds(self) -> float | None:
        """Remaining work / parallel slots, with the mean job time seen so far (None before any)."""
        m, p = self.models.mean_seconds(), self.pairs.mean_seconds()
        if m is None:
            return None
        if p is None:
            p = m / 2  # a curve costs about half a training (method.md)
        left = (self.models.pending + self.models.running / 2) * m + (self.pairs.pending + self.pairs.running / 2) * p
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
            self.model_status[key] = "failed" if error else (result or {}).get("status", "failed")
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
        """Counts jobs for the progress view and records jobs that failed after Tune's retries."""

        def __init__(self, cfg: SweepConfig, run_dir: str, run_id: str, state: SweepState):
            self.cfg, self.run_dir, self.run_id, self.state = cfg, run_dir, run_id, state
            self.events: list = []  # (kind, key, status, seconds, detail) for line-oriented logs

        def on_trial_start(self, iteration, trials, trial, **info):
            self.state.counts(trial.config["kind"]).running += 1

        def on_trial_complete(self, iteration, trials, trial, **info):
            job = trial.config
            counts = self.state.counts(job["kind"])
            counts.running = max(0, counts.running - 1)
            result = trial.last_result or {}
            status = result.get("status", "failed")
            if result.get("skipped"):
                counts.done_before += 1
            else:
                setattr(counts, status, getattr(counts, status) + 1)
                counts.seconds.append(float(result.get("wall_seconds") or 0.0))
            self.events.append((job["kind"], job_key(self.cfg, job), status, result))

        def on_trial_error(self, iteration, trials, trial, **info):
            job = trial.config
            counts = self.state.counts(job["kind"])
            counts.running = max(0, counts.running - 1)
            counts.failed += 1
            error = trial_error_text(trial)
            key = job_key(self.cfg, job)
            self.state.failed_keys[key] = error
            try:
                if job["kind"] == "model":
                    write_failed_model(self.cfg, self.run_dir, self.run_id, job, error)
                else:
                    write_unmeasured_pair(self.cfg, self.run_dir, self.run_id, job, "failed", error)
            finally:
                self.events.append((job["kind"], key, "failed", {"error": error}))

    return JobRecorder


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


@contextlib.contextmanager
def _max_pending_trials(slots: int):
    """Let Tune keep one pending trial per slot (a custom searcher gets 1 by default).

    With 1, the second worker only starts once the first trial runs (~3 s of an idle slot at the start of
    every sweep); with one per slot all workers start together. A ready pair job then waits for at most
    ``slots`` model jobs that were already pending, never for the rest of the grid.
    """
    key = "TUNE_MAX_PENDING_TRIALS_PG"
    before = os.environ.get(key)
    if before is None:
        os.environ[key] = str(max(1, int(slots)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)


def run_sweep(cfg: SweepConfig, run_dir: str, *, run_id: str, resources: dict, progress=None,
              max_rounds: int = 3) -> SweepSummary:
    """Run every job the tables say is missing; Ray must be initialised and resources checked.

    ``progress``: a Tune Callback factory taking (state, recorder) (orchestrator.progress.make_progress).
    After each Tune experiment the plan is made again from the tables (a job may have been lost with a
    worker, or models retrained); jobs not yet attempted in this run get another round.
    """
    from ray import tune

    started = time.monotonic()
    # resources.gpu: auto becomes a number here, as check_resources decided it for this cluster.
    cfg = cfg.with_gpus_available(bool(resources.get("cluster", {}).get("gpu_available")))
    config_hash = cfg.config_hash()
    plan_before = make_plan(cfg, run_dir)
    state = SweepState(slots=_slots(cfg, resources))
    state.models.total = len(cfg.model_keys())
    state.pairs.total = len(cfg.pair_keys())
    state.models.done_before = len(plan_before.models_done)
    state.pairs.done_before = len(plan_before.pairs_done)
    context = JobContext(sweep=cfg.to_dict(), run_dir=run_dir, run_id=run_id, config_hash=config_hash,
                         faults=os.environ.get(FAULT_INJECT_ENV) or None)
    trainable = tune.with_resources(tune.with_parameters(run_job, context=context), _job_resources(cfg))
    Searcher = _make_searcher_class()
    Recorder = _make_recorder_class()

    def on_unmeasured(job, status, error):
        write_unmeasured_pair(cfg, run_dir, run_id, job, status, error)
        counts = state.pairs
        setattr(counts, status, getattr(counts, status) + 1)
        state.attempted.add(job_key(cfg, job))
        recorder.events.append(("pair", job_key(cfg, job), status, {"error": error}))

    recorder = Recorder(cfg, run_dir, run_id, state)
    callbacks = [recorder]
    if progress is not None:
        callbacks.append(progress(state, recorder))
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
                verbose=0,
                callbacks=callbacks,
                log_to_file=False,
            ),
        )
        with _max_pending_trials(state.slots):
            tuner.fit()
        plan = make_plan(cfg, run_dir)
    return SweepSummary(run_dir=run_dir, run_id=run_id, seconds=time.monotonic() - started,
                        plan_before=plan_before, plan_after=plan, state=state, resources=resources)
