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
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from analysis.tables import join
from orchestrator.driver import interrupts
from orchestrator.planning import run_facts
from orchestrator.rundir import fault_hook, storage
from orchestrator.config import SweepConfig
from orchestrator.planning.cost import epoch_shares, job_costs
from orchestrator.rundir.fault_hook import FAULT_INJECT_ENV
from orchestrator.planning.jobs import JobContext, mkey, pkey
from orchestrator.driver.loggers import logger_callbacks
from orchestrator.planning.plan import Plan, assess, repair
from orchestrator.worker.records import write_unmeasured_pair
from orchestrator.driver.state import SweepState
from orchestrator.worker.trial_outputs import TrialNamer
from orchestrator.driver.tune_adapters import (
    job_resources,
    make_recorder_class,
    make_searcher_class,
    make_stopper_class,
    concurrent_slots,
    tune_settings,
    tune_state_write_failures,
)
from orchestrator.worker.trainable import run_job


@dataclass
class SweepSummary:
    run_dir: str
    run_id: str
    seconds: float
    plan_before: Plan
    plan_after: Plan
    state: SweepState
    resources: dict


@contextlib.contextmanager
def _closed_after(shown):
    """The progress view closed after a Tune experiment even when it ends in an exception (Ctrl-C: Tune then
    calls no on_experiment_end), so that no bar is left drawn, or redrawn, under the error."""
    try:
        yield
    finally:
        close = getattr(shown, "close", None)
        if close is not None:
            close()


def run_sweep(cfg: SweepConfig, run_dir: str, *, run_id: str, resources: dict, progress=None,
              max_rounds: int = 3, plan: Plan | None = None, scope: tuple[set, set] | None = None) -> SweepSummary:
    """Run every job the tables say is missing; Ray must be initialised and resources checked.

    ``progress``: a Tune Callback factory taking (state, recorder) (orchestrator.driver.progress.make_progress).
    ``plan``: the plan the caller has just assessed and repaired (saves reading the tables again). After each
    Tune experiment it is assessed and repaired again (a job may have been lost with a worker, or models
    retrained); jobs not yet attempted in this run get another round. Raises storage.StorageFullError (after
    removing the temporary files of cut writes) when the run directory cannot be written: the sweep stops at once.
    ``scope``: (model keys, pair keys) the sweep is limited to (a wave of an adaptive search,
    orchestrator/driver/adaptive_sweep.py); None: the whole grid.
    """
    from ray import tune

    started = time.monotonic()
    # resources.gpu: auto becomes a number here, as check_resources decided it for this cluster.
    cfg = cfg.with_gpus_available(bool(resources.get("cluster", {}).get("gpu_available")))
    config_hash = cfg.config_hash()
    plan_before = plan if plan is not None else repair(run_dir, assess(cfg, run_dir, facts=run_facts.measure(cfg)))
    state = SweepState(slots=concurrent_slots(cfg, resources), costs=job_costs(cfg, plan_before.facts),
                       epoch_shares=epoch_shares(cfg, plan_before.facts))
    state.models.keys = [mkey(cfg, *k) for k in cfg.model_keys()]
    state.pairs.keys = [pkey(cfg, *k) for k in cfg.pair_keys()]
    if scope is not None:
        state.models.keys = [k for k in state.models.keys if k in scope[0]]
        state.pairs.keys = [k for k in state.pairs.keys if k in scope[1]]
    in_scope = (set(state.models.keys), set(state.pairs.keys))
    state.models.before = set(plan_before.models_done) & in_scope[0]
    state.pairs.before = set(plan_before.pairs_done) & in_scope[1]
    context = JobContext(sweep=cfg.to_dict(), run_dir=run_dir, run_id=run_id, config_hash=config_hash,
                         faults=os.environ.get(FAULT_INJECT_ENV) or None)
    fault_hook.arm(context.faults)  # tests only: the driver's own writes honour the write faults too
    trainable = tune.with_resources(tune.with_parameters(run_job, context=context), job_resources(cfg))
    Searcher = make_searcher_class()
    Recorder = make_recorder_class()

    def on_unmeasured(member, status, error):
        key = pkey(cfg, *member)
        state.attempted.add(key)
        try:
            write_unmeasured_pair(cfg, run_dir, run_id, member, status, error)
        except storage.StorageFullError as exc:
            state.fatal = state.fatal or str(exc)
            return
        state.pairs.outcome[key] = status
        recorder.events.append(("pair", key, status, {"error": error}))

    recorder = Recorder(cfg, run_dir, run_id, state)
    callbacks = [recorder]
    shown = progress(state, recorder) if progress is not None else None
    if shown is not None:
        callbacks.append(shown)
    callbacks += logger_callbacks(cfg.logging, cfg.name, run_dir)  # the config's (default: json) and `--log`'s
    stopper = make_stopper_class()(state)
    plan = plan_before
    for round_ in range(max_rounds):
        interrupts.check()  # a Ctrl-C between rounds (or waves of an adaptive search): no new experiment
        todo_models = [k for k in plan.models_todo if mkey(cfg, *k) not in state.attempted
                       and mkey(cfg, *k) in in_scope[0]]
        # A pair tried in this run gets another round when one of its models is retrained in this one (its
        # weights were found broken by the pair job itself).
        retrained = {mkey(cfg, *k) for k in todo_models}
        todo_pairs = [k for k in plan.pairs_todo if pkey(cfg, *k) in in_scope[1] and (
            pkey(cfg, *k) not in state.attempted or {mkey(cfg, k[0], k[1], k[2]), mkey(cfg, k[0], k[1], k[3])} & retrained)]
        todo_measures = [k for k in plan.models_to_measure if mkey(cfg, *k) not in state.attempted
                         and mkey(cfg, *k) in in_scope[0]]
        if not todo_models and not todo_pairs and not todo_measures:
            break
        round_plan = dataclasses.replace(plan, models_todo=tuple(todo_models), pairs_todo=tuple(todo_pairs),
                                         models_to_measure=tuple(todo_measures))
        try:
            searcher = Searcher(cfg, round_plan, state, on_unmeasured)
            search_alg = searcher
            if cfg.run.max_concurrent:
                from ray.tune.search import ConcurrencyLimiter

                search_alg = ConcurrencyLimiter(searcher, max_concurrent=cfg.run.max_concurrent)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            namer = TrialNamer(cfg)  # trials named by what they compute: "model width=64,batch_size=32,seeds=0-4"
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search_alg, num_samples=-1, reuse_actors=True,
                    trial_name_creator=namer.name, trial_dirname_creator=namer.dirname,
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
                with tune_settings(state.slots), tune_state_write_failures(state, run_dir), _closed_after(shown):
                    tuner.fit()
        except Exception as exc:  # Tune's own writes into RUN_DIR/tune fail the same way on a full disk
            problem = storage.storage_problem(exc)
            if problem is None:
                raise
            state.fatal = state.fatal or f"cannot write {join(run_dir, 'tune')}: {problem}"
        if state.fatal:
            storage.sweep_temporary_files(run_dir)
            raise storage.StorageFullError(f"the sweep stopped: {state.fatal}")
        # Weights were hashed once, by the plan before the sweep (and as each was written): between rounds only
        # their sizes are checked again, not every byte of every file of the run. The facts (costs, added
        # metrics) are those measured before the sweep: the config's data is not loaded again every round.
        plan = repair(run_dir, assess(cfg, run_dir, verify_weights=False, facts=plan_before.facts))
    return SweepSummary(run_dir=run_dir, run_id=run_id, seconds=time.monotonic() - started,
                        plan_before=plan_before, plan_after=plan, state=state, resources=resources)
