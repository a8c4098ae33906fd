"""One model, or one pair of models, of a sweep: the calls that compute it (the specs, workloads/specs.py, are
re-exported here).

    train_and_measure(ModelSpec) -> ModelOutcome   build the cell's data (the load transform), build the
                                                   model under its seed, train, evaluate, Hessian
    measure_pair(PairSpec, state_a, state_b) -> PairOutcome
                                                   rebuild both models, Bezier curve (mode connectivity),
                                                   CKA on the cell's shared mixup probes, L2 distance

Both are the engine's cohort functions (workloads/cohort_experiment.py) for a cohort of one: a model trained
alone is trained and measured exactly as it would be among others. Benchmarks, scripts and tests call them in one
process; the sweep calls the cohort functions. Nothing here knows about Ray, storage or provenance.
"""

from __future__ import annotations

from workloads.cohort_experiment import (
    ModelOutcome,
    PairOutcome,
    measure_pairs_cohort,
    train_and_measure_cohort,
)
from workloads.cohort_train import Execution
from workloads.specs import CellSpec, ModelSpec, PairSpec  # noqa: F401  (re-exported: the specs of a job)


def train_and_measure(spec: ModelSpec, *, execution: Execution = Execution(), checkpoint_fn=None,
                      resume_state: dict | None = None, epoch_fn=None) -> ModelOutcome:
    """Train one model of a cell and measure it: the cohort of one (train_and_measure_cohort([spec])).

    checkpoint_fn / resume_state / epoch_fn: as there (the cohort's checkpoint; epoch_fn(entries) with the one
    member's entry). A diverged training gives status "diverged" with metrics left null and the reason in
    ``error``. Exceptions (bad settings, out of memory) propagate: the caller decides about retries.
    """
    return train_and_measure_cohort([spec], execution=execution, checkpoint_fn=checkpoint_fn,
                                    resume_state=resume_state, epoch_fn=epoch_fn)[0]


def measure_pair(spec: PairSpec, state_a: dict, state_b: dict, *, execution: Execution = Execution()) -> PairOutcome:
    """Connect two trained models of a cell and compare them: the cohort of one (measure_pairs_cohort).

    state_a, state_b: the state dicts of seeds ``spec.seed_a`` and ``spec.seed_b``. A curve whose training
    diverges gives status "diverged" (mode connectivity null, CKA and L2 still measured).
    """
    return measure_pairs_cohort([spec], [(state_a, state_b)], execution=execution)[0]
