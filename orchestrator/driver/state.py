"""Counts of a running sweep, shared by the searcher, the recorder and the progress view."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class KindCounts:
    """One kind of job, counted by key: a job retried, or redone in a later round, counts once (its last
    outcome), so no count ever exceeds the grid."""

    keys: list = field(default_factory=list)  # every job key of this kind in the grid
    before: set = field(default_factory=set)  # keys found done (in the tables, or by the job itself)
    outcome: dict = field(default_factory=dict)  # key -> ok | diverged | failed, last outcome in this run
    live: dict = field(default_factory=dict)  # (trial id, member index) -> key of the members running now
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
class TrialClock:
    """When one running trial started and when its epoch reports reached the driver (``clock`` seconds)."""

    started: float
    epochs: int = 0  # epochs the trial trains in all (a model or model cohort trial; 0: it reports none)
    first_epoch: int = 0  # the first epoch it reported (1-based; > 1 when it resumed from a checkpoint)
    first_at: float | None = None  # when that report came
    first_seconds: float | None = None  # that epoch's own seconds as the worker measured them (if reported)
    epoch: int = 0  # the last epoch it reported
    at: float | None = None  # when that report came


@dataclass
class SweepState:
    models: KindCounts = field(default_factory=KindCounts)
    pairs: KindCounts = field(default_factory=KindCounts)
    slots: int = 1  # jobs the cluster runs at once
    clock: Callable[[], float] = time.monotonic  # the time source of every time below (a test passes its own)
    started: float | None = None  # clock() when the sweep started (set from clock when not given)
    attempted: set = field(default_factory=set)  # job keys handed to Tune in this run
    failed_keys: dict = field(default_factory=dict)  # key -> error of jobs that failed in this run
    costs: dict = field(default_factory=dict)  # job key -> estimated cost (job_costs); empty: all the same
    fatal: str | None = None  # why the sweep must stop now (the run directory cannot be written)
    trials: dict = field(default_factory=dict)  # trial id -> TrialClock of the trials running now
    epoch_reports: int = 0  # epoch reports received: new information for the ETA (revision())
    epoch_shares: dict = field(default_factory=dict)  # model key -> its cost's share of epochs (cost.epoch_shares)

    def __post_init__(self):
        if self.started is None:
            self.started = self.clock()

    def counts(self, kind: str) -> KindCounts:
        """"model": the models; "pair": the pairs."""
        return self.models if kind == "model" else self.pairs

    def trial_started(self, trial_id: str, epochs: int = 0) -> None:
        """A trial started (again: a retried one starts its clock over); ``epochs``: how many it will report."""
        self.trials[trial_id] = TrialClock(started=self.clock(), epochs=int(epochs))

    def trial_stopped(self, trial_id: str) -> None:
        self.trials.pop(trial_id, None)

    def epoch_reported(self, trial_id: str, epoch: int, seconds: float | None = None) -> None:
        """A running trial reported that ``epoch`` epochs (1-based, counted from the start of its training,
        so a resumed one starts above 1) are done; ``seconds``: that epoch's time as the worker measured it."""
        trial = self.trials.get(trial_id)
        if trial is None:
            return
        now = self.clock()
        if trial.first_at is None:
            trial.first_epoch, trial.first_at = int(epoch), now
            trial.first_seconds = float(seconds) if seconds and seconds > 0 else None
        trial.epoch, trial.at = int(epoch), now
        self.epoch_reports += 1

    def revision(self) -> tuple:
        """Changes whenever the ETA has new information: a job started, finished or reported an epoch."""
        return tuple(len(x) for c in (self.models, self.pairs) for x in (c.outcome, c.before, c.live)) + (
            len(self.trials), self.epoch_reports)

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds until the sweep ends, estimated at ``now`` (default: clock()); None while nothing has been
        measured (no job finished, no epoch reported). The model:

        * A running trial that has reported epochs (model jobs, model cohorts) is projected: its epochs take
          its time up to its last report plus (epochs left) x (seconds per epoch), the seconds per epoch
          being the time between its first and last reports over the epochs between them, or, after one
          report, that epoch's own seconds as the worker measured them (else the time since the trial
          started). With the epochs' own seconds its time counts from the start of its first epoch: the
          wait before is mostly a Ray worker starting, paid once per worker (later trials reuse it), and
          not in the finished jobs' seconds either. The whole job takes its epochs' time over the share of
          its estimated cost that is epochs (``epoch_shares``, cost.epoch_shares: the rest is its overhead,
          evaluation and Hessian; 1 when unknown).
        * Seconds per unit of cost (cost.job_costs: estimated seconds; only their ratios matter), per kind of
          job: the seconds the jobs finished in this run took plus the projected totals of the running
          trials, over their estimated cost. So an ETA exists once the first running trial reports its first
          epoch, long before a job finishes. Pairs report no epochs: until a pair has finished they take
          the models' rate.
        * Each running trial's time left: projected, its projected total less its time at its last report,
          less the time since that report; not projected, its members' cost x the rate less its time so
          far; never below 0 (a trial past its estimate is taken to be finishing). A running key whose
          trial has no clock (a state filled by hand, benchmarks/eta.py) counts half its cost x the rate.
        * The jobs not started: their cost x the rate, run on ``slots`` trials at once.
        * ETA = the larger of the longest trial left and (the time left of the running trials + the pending
          jobs' time) / slots.

        Weighting by cost matters because the longest jobs run first: the mean time of the first jobs
        times the number left overestimated a sweep 2-4x.
        """
        now = self.clock() if now is None else now
        cost = lambda key: self.costs.get(key, 1.0)  # noqa: E731
        running = {}  # kind -> [(trial id, its keys not finished yet)]
        for kind, c in (("model", self.models), ("pair", self.pairs)):
            finished = c.before | set(c.outcome)
            by_trial: dict = {}
            for entry, key in c.live.items():
                if key not in finished:
                    by_trial.setdefault(entry[0] if isinstance(entry, tuple) else entry, []).append(key)
            running[kind] = list(by_trial.items())

        projected = {}  # trial id -> (its projected total seconds, its seconds up to its last report)
        for trial_id, keys in running["model"]:
            t = self.trials.get(trial_id)
            if t is not None and t.at is not None and t.epochs:
                units = sum(cost(k) for k in keys)
                share = sum(cost(k) * self.epoch_shares.get(k, 1.0) for k in keys) / units if units else 1.0
                projected[trial_id] = _projection(t, share)
        rates = {}
        for kind, c in (("model", self.models), ("pair", self.pairs)):
            seconds, units = sum(c.seconds.values()), sum(cost(k) for k in c.seconds)
            for trial_id, keys in running[kind]:
                if trial_id in projected:
                    seconds += projected[trial_id][0]
                    units += sum(cost(k) for k in keys)
            if seconds > 0 and units > 0:
                rates[kind] = seconds / units
        if not rates:
            return None
        trial_left, pending = [], 0.0
        for kind, c in (("model", self.models), ("pair", self.pairs)):
            # Cost units are comparable across kinds (both estimate seconds): one kind's rate stands in for
            # the other's until a job of it has been measured.
            rate = rates.get(kind, rates.get("pair" if kind == "model" else "model"))
            pending += rate * sum(cost(k) for k in c.left()[0])
            for trial_id, keys in running[kind]:
                t = self.trials.get(trial_id)
                if t is None:
                    trial_left.append(0.5 * rate * sum(cost(k) for k in keys))
                elif trial_id in projected:
                    total, done = projected[trial_id]
                    trial_left.append(max(0.0, total - done - (now - t.at)))
                else:
                    trial_left.append(max(0.0, rate * sum(cost(k) for k in keys) - (now - t.started)))
        return max(max(trial_left, default=0.0), (sum(trial_left) + pending) / max(1, self.slots))

    def work_left(self) -> bool:
        return any(c.finished < c.total for c in (self.models, self.pairs))


def _projection(t: TrialClock, share: float) -> tuple[float, float]:
    """(projected total seconds, seconds up to its last report) of a trial that reported epochs, whose epochs
    are ``share`` of its work (SweepState.eta_seconds)."""
    if t.epoch > t.first_epoch:
        per_epoch = (t.at - t.first_at) / (t.epoch - t.first_epoch)
    else:
        per_epoch = t.first_seconds if t.first_seconds is not None else t.first_at - t.started
    done = t.at - t.started if t.first_seconds is None else (t.at - t.first_at) + t.first_seconds
    epochs = done + max(0, t.epochs - t.epoch) * per_epoch
    return epochs / max(share, 1e-3), done


class EtaCountdown:
    """The ETA as shown: estimated again (SweepState.eta_seconds) only when the state has new information
    (SweepState.revision()), and in between the last estimate minus the time since it was made, so that it
    counts down every second instead of standing still between job completions. Never below 0."""

    def __init__(self):
        self._revision = None
        self._estimate: float | None = None
        self._made_at = 0.0

    def update(self, state: SweepState, now: float | None = None) -> None:
        """Estimate again if the state changed since the last estimate."""
        now = state.clock() if now is None else now
        revision = state.revision()
        if revision != self._revision:
            self._revision, self._estimate, self._made_at = revision, state.eta_seconds(now), now

    def value(self, now: float) -> float | None:
        """The last estimate counted down to ``now``; reads nothing of the state (safe off its thread)."""
        if self._estimate is None:
            return None
        return max(0.0, self._estimate - (now - self._made_at))

    def read(self, state: SweepState, now: float | None = None) -> float | None:
        now = state.clock() if now is None else now
        self.update(state, now)
        return self.value(now)
