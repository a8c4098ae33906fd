"""The sweep's adapters to Ray Tune: the searcher that hands out jobs, the callback that records them, the
stopper, the resources of a job and Tune's settings while a sweep runs (see orchestrator/sweep.py)."""

from __future__ import annotations

import contextlib
import os

from orchestrator import storage
from orchestrator.config import SweepConfig
from orchestrator.jobs import STORAGE_ERROR, job_key, mkey, model_job, pair_job
from orchestrator.plan import Plan
from orchestrator.records import trial_error_text, write_failed_model, write_unmeasured_pair
from orchestrator.state import SweepState


def make_searcher_class():
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
            # Model jobs: trainings, then finished models that only need an added metric measured (no training).
            self.models = list(plan.models_todo) + list(plan.models_to_measure)
            self.model_status = dict(plan.models_done)  # key -> ok | diverged | failed
            self.waiting = list(plan.pairs_todo)  # pairs whose models are not both known yet
            self.ready: list = []
            self.live: dict = {}  # trial id -> job
            # A pair whose model is neither done nor to be trained in this round (it failed earlier in this
            # run) cannot be measured now: resolve it instead of waiting for a model that never comes.
            todo = {mkey(cfg, *k) for k in plan.models_todo}
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


def make_recorder_class():
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


def make_stopper_class():
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


def job_resources(cfg: SweepConfig):
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    def resources(job: dict):
        r = cfg.trial_resources(job["load"]) if job["kind"] == "model" else cfg.pair_resources(job["load"])
        bundle = {"CPU": r["cpu"]}
        if r["gpu"] > 0:
            bundle["GPU"] = r["gpu"]
        return PlacementGroupFactory([bundle])

    return resources


def concurrent_slots(cfg: SweepConfig, plan_resources: dict) -> int:
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
