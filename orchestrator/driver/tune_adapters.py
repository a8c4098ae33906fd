"""The sweep's adapters to Ray Tune: the searcher that hands out jobs, the callback that records them, the
stopper, the resources of a job and Tune's settings while a sweep runs (see orchestrator/driver/sweep.py)."""

from __future__ import annotations

import contextlib
import os

from analysis.tables import RunTables
from orchestrator.driver import interrupts
from orchestrator.rundir import storage
from orchestrator.planning.cohorts import cohort_request, model_cohorts, model_jobs, order_for_pairs, pair_cohorts, pair_jobs_of
from orchestrator.config import SweepConfig
from orchestrator.planning.jobs import DONE_MODEL, DONE_PAIR, STORAGE_ERROR, job_keys, member_key, members, mkey, model_job
from orchestrator.planning.plan import Plan
from orchestrator.worker.records import trial_error_text, write_failed_model, write_unmeasured_pair
from orchestrator.driver.state import SweepState
from orchestrator.worker.trial_outputs import member_hparams


def member_results(cfg: SweepConfig, job: dict, result: dict | None) -> list[dict]:
    """What each member of ``job`` reported: the result's ``members``; a result without them (a trial that ended
    before its final report, or a storage error) stands for every member."""
    result = result or {}
    return list(result.get("members") or [{**result, "key": key} for key in job_keys(cfg, job)])


def make_searcher_class():
    from ray.tune.search import Searcher

    class SweepSearcher(Searcher):
        """Hands Tune the model jobs of the plan (one per cohort, orchestrator/planning/cohorts.py) and each pair job (or
        pair cohort) as soon as the models of all its pairs are known, ahead of the model jobs left.

        Pairs whose models diverged or failed are resolved on the driver (a row saying why), without a job; a
        pair cohort's other pairs go on as one job. Runs in the driver only.
        """

        def __init__(self, cfg: SweepConfig, plan: Plan, state: SweepState, on_unmeasured):
            super().__init__(metric=None, mode=None)
            self.cfg = cfg
            self.state = state
            self.on_unmeasured = on_unmeasured  # (job, status, error) -> None
            # Pair groups whose models are not all known yet; with auto, as many cohorts as trials run at once.
            self.waiting = pair_cohorts(cfg, plan.pairs_todo, state.slots)
            groups = model_cohorts(cfg, plan.models_todo, state.slots)
            # Cohorts of one (off) keep the plan's order, longest cells first with a cell's seeds together.
            self.models = model_jobs(cfg, order_for_pairs(groups, self.waiting) if cfg.execution.cohorts else groups)
            # Finished models that only need an added metric measured: a job of one each, which does not train.
            self.models += [model_job(cfg, [k]) for k in plan.models_to_measure]
            self.model_status = dict(plan.models_done)  # key -> ok | diverged | failed
            self.ready: list = []  # pair jobs to hand out first
            self.live: dict = {}  # trial id -> job
            # A pair whose model is neither done nor to be trained in this round (it failed earlier in this
            # run) cannot be measured now: resolve it instead of waiting for a model that never comes.
            todo = {key for job in self.models for key in job_keys(cfg, job)}
            for lv, tv, a, b in plan.pairs_todo:
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
                job = self.ready.pop(0)
            elif self.models:
                job = self.models.pop(0)
            elif self.live:
                return None  # a pair may still become ready when a running model finishes
            else:
                return Searcher.FINISHED
            self.live[trial_id] = job
            self.state.attempted.update(job_keys(self.cfg, job))
            # The trial's config is the job, plus each member's hyperparameters for Tune's loggers (TensorBoard's
            # HParams, W&B's config, MLflow's params); the jobs read only their own keys.
            return {**job, "hparams": member_hparams(self.cfg, job)}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            job = self.live.pop(trial_id, None)
            if job is None or job["kind"] != "model":
                return
            if not error and (result or {}).get("status") == STORAGE_ERROR:
                return  # the sweep stops; its pairs stay to do (a resume measures them)
            reported = {} if error else {r["key"]: r.get("status") for r in member_results(self.cfg, job, result)}
            for key in job_keys(self.cfg, job):
                self.model_status[key] = reported.get(key) or "failed"
            self._release_pairs()

        def _release_pairs(self) -> None:
            still = []
            for group in self.waiting:
                known = []
                for lv, tv, a, b in group:
                    sa = self.model_status.get(mkey(self.cfg, lv, tv, a))
                    sb = self.model_status.get(mkey(self.cfg, lv, tv, b))
                    known.append((sa, sb))
                if any(sa is None or sb is None for sa, sb in known):
                    still.append(group)
                    continue
                measurable = []
                for (lv, tv, a, b), (sa, sb) in zip(group, known):
                    if sa == "ok" and sb == "ok":
                        measurable.append((lv, tv, a, b))
                        continue
                    bad = [(s, st) for s, st in ((a, sa), (b, sb)) if st != "ok"]
                    status = "failed" if any(st == "failed" for _, st in bad) else "diverged"
                    why = ", ".join(f"model seed={s} {st}" for s, st in bad)
                    self.on_unmeasured((lv, tv, a, b), status, f"not measured: {why}")
                self.ready += pair_jobs_of(self.cfg, measurable)
            self.waiting = still

    return SweepSearcher


def make_recorder_class():
    from ray.tune import Callback

    class JobRecorder(Callback):
        """Counts jobs for the progress view and records jobs that failed after Tune's retries.

        A write into the run directory that fails for good (storage.StorageFullError) sets ``state.fatal``
        instead of raising: an exception here would take ``tuner.fit()`` down with a chained traceback, while
        the stopper ends the experiment cleanly and run_sweep reports it.
        """

        def __init__(self, cfg: SweepConfig, run_dir: str, run_id: str, state: SweepState):
            self.cfg, self.run_dir, self.run_id, self.state = cfg, run_dir, run_id, state
            self.events: list = []  # (kind, key, status, result) for line-oriented logs

        def _start(self, trial) -> None:
            """Every key the trial computes counts as running: a (trial id, member index) entry each."""
            live = self.state.counts(trial.config["kind"]).live
            live.update({(trial.trial_id, i): key for i, key in enumerate(job_keys(self.cfg, trial.config))})
            # Its clock, for the ETA: a model trial reports each of its epochs.
            self.state.trial_started(trial.trial_id, self.cfg.training.epochs if trial.config["kind"] == "model" else 0)

        def _stop(self, trial) -> None:
            live = self.state.counts(trial.config["kind"]).live
            for entry in [e for e in live if isinstance(e, tuple) and e[0] == trial.trial_id]:
                live.pop(entry, None)
            self.state.trial_stopped(trial.trial_id)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._start(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            # An epoch report (orchestrator/worker/history.py: ``epoch``, no ``status``); the final report has a status.
            if isinstance(result, dict) and "status" not in result and isinstance(result.get("epoch"), (int, float)):
                self.state.epoch_reported(trial.trial_id, int(result["epoch"]), result.get("epoch_seconds"))

        def on_trial_recover(self, iteration, trials, trial, **info):  # failed; Tune starts it again
            self._stop(trial)

        def on_trial_complete(self, iteration, trials, trial, **info):
            job = trial.config
            kind = job["kind"]
            counts = self.state.counts(kind)
            self._stop(trial)
            result = trial.last_result or {}
            if result.get("status", "failed") == STORAGE_ERROR:
                self.state.fatal = self.state.fatal or result.get("error") or "the run directory cannot be written"
                return
            for member in member_results(self.cfg, job, result):
                key = member["key"]
                status = member.get("status", "failed")
                if member.get("skipped"):
                    counts.before.add(key)
                else:
                    counts.outcome[key] = status
                    counts.seconds[key] = float(member.get("wall_seconds") or 0.0)
                self.events.append((kind, key, status, member))

        def on_trial_error(self, iteration, trials, trial, **info):
            job = trial.config
            kind = job["kind"]
            counts = self.state.counts(kind)
            self._stop(trial)
            error = trial_error_text(trial)
            tables = RunTables(self.run_dir)
            for member in members(job):
                key = member_key(self.cfg, kind, member)
                # A job that died while writing its members' rows (or a retried one that had written some): the
                # rows written are kept.
                row = storage.read_part_row(tables, "models" if kind == "model" else "pairs", key)
                if row and row.get("config_hash") == self.cfg.config_hash() and \
                        row.get("status") in (DONE_MODEL if kind == "model" else DONE_PAIR):
                    counts.outcome[key] = row["status"]
                    self.events.append((kind, key, row["status"], {}))
                    continue
                counts.outcome[key] = "failed"
                self.state.failed_keys[key] = error
                self.events.append((kind, key, "failed", {"error": error}))
                try:
                    if kind == "model":
                        write_failed_model(self.cfg, self.run_dir, self.run_id, member, error)
                    else:
                        write_unmeasured_pair(self.cfg, self.run_dir, self.run_id, member, "failed", error)
                except storage.StorageFullError as exc:
                    self.state.fatal = self.state.fatal or str(exc)
                    return

        def on_experiment_end(self, trials, **info):
            for counts in (self.state.models, self.state.pairs):
                counts.live.clear()  # trials stopped with the experiment are not running any more
            self.state.trials.clear()

    return JobRecorder


def make_stopper_class():
    from ray.tune import Stopper

    class StopOnFatal(Stopper):
        """Ends the experiment (every trial) once ``state.fatal`` says the sweep cannot go on. Tune asks it at
        every step of its event loop, in the main thread: the safe point where a Ctrl-C or SIGTERM of the
        command raises KeyboardInterrupt (orchestrator/driver/interrupts.py)."""

        def __init__(self, state: SweepState):
            self.state = state

        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            interrupts.check()
            return self.state.fatal is not None

    return StopOnFatal


def job_resources(cfg: SweepConfig):
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    def resources(job: dict):
        found = members(job)
        load = found[0][0]
        r = cohort_request(cfg.trial_resources(load) if job["kind"] == "model" else cfg.pair_resources(load), len(found))
        bundle = {"CPU": r["cpu"]}
        if r["gpu"] > 0:
            bundle["GPU"] = r["gpu"]
        return PlacementGroupFactory([bundle])

    return resources


def concurrent_slots(cfg: SweepConfig, capacity: dict) -> int:
    counts = list(capacity.get("trials_at_once", {}).values())
    slots = max(1, min(counts)) if counts else 1
    if cfg.run.max_concurrent:
        slots = min(slots, cfg.run.max_concurrent)
    return slots


# Tune rewrites its experiment state (every trial's config and result, the searcher, the callbacks) every
# ~10 s by default, and uploads it to the run directory each time: 27 MB at 1,820 trials, on s3:// a PUT each
# time. Nothing here reads it (the tables are the record), so it is saved once an hour, and when a round ends.
TUNE_STATE_PERIOD_S = 3600


@contextlib.contextmanager
def tune_settings(slots: int):
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


# Tune saves its experiment state (RUN_DIR/tune, never read by us) and, when that write fails, logs the failure
# with its traceback at ERROR level and goes on: on a full disk a page of traceback came before our one
# `error:` line. Such a failure is what stops the sweep anyway (every write would fail the same way).
TUNE_STATE_LOGGER = "ray.tune.execution.experiment_state"


@contextlib.contextmanager
def tune_state_write_failures(state: SweepState, run_dir: str):
    """While a sweep runs: a failed save of Tune's experiment state that is a storage problem (full, read-only,
    no permission: storage.storage_problem) sets ``state.fatal`` (the stopper then ends the experiment, and the
    command prints one `error:` line) instead of printing Tune's traceback; other failures are logged as Tune
    logs them."""
    import logging

    tune_dir = storage.join(run_dir, "tune")

    class StorageProblems(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            error = record.exc_info[1] if record.exc_info else None
            problem = storage.storage_problem(error) if error is not None else None
            if problem is None:
                return True
            state.fatal = state.fatal or f"cannot write {tune_dir}: {problem}"
            return False

    logger, only_storage = logging.getLogger(TUNE_STATE_LOGGER), StorageProblems()
    logger.addFilter(only_storage)
    try:
        yield
    finally:
        logger.removeFilter(only_storage)
