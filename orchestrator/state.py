"""Counts of a running sweep, shared by the searcher, the recorder and the progress view."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class KindCounts:
    """One kind of job, counted by key: a job retried, or redone in a later round, counts once (its last
    outcome), so no count ever exceeds the grid."""

    keys: list = field(default_factory=list)  # every job key of this kind in the grid
    before: set = field(default_factory=set)  # keys found done (in the tables, or by the job itself)
    outcome: dict = field(default_factory=dict)  # key -> ok | diverged | failed, last outcome in this run
    live: dict = field(default_factory=dict)  # trial id (a cohort's: (trial id, i)) -> key of the jobs running now
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
        """"model" or "model_cohort": the models; "pair" or "pair_cohort": the pairs."""
        return self.models if kind in ("model", "model_cohort") else self.pairs

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
