"""Estimated cost of every job of a sweep: the order of the model jobs, and the weights of the ETA.

Computed from a run's facts (orchestrator/planning/run_facts.py: training-set size, input shape, classes, parameter
counts), passed in as data; without them (``facts=None``) they are measured from the config's code, which only
`run`, `resume` and `validate` may do: the read-only commands pass the recorded or assumed facts."""

from __future__ import annotations

from orchestrator.planning.cells import cell_quantities
from orchestrator.config import SweepConfig
from orchestrator.planning.jobs import mkey, pkey


def order_models(cfg: SweepConfig, todo: list, facts=None) -> list:
    """Longest cells first (shorter tail at the end of the sweep), the seeds of a cell together (its pairs
    become ready early). Costs are rough estimates used only for this order and to weight the ETA."""
    try:
        cost = _cost_model(cfg, facts)[0]
        return sorted(todo, key=lambda k: (-cost(k[0], k[1]), k[0], k[1], k[2]))
    except Exception:  # ordering is an optimisation: never fail a sweep over it
        return list(todo)


def job_costs(cfg: SweepConfig, facts=None) -> dict[str, float]:
    """Job key -> estimated cost of every model and pair job of the grid (model-seconds at the assumed rate
    below; only the ratios matter: the ETA scales them by the seconds the finished jobs took). Empty when
    the model cannot be sized (the ETA then weighs every job the same)."""
    try:
        model_cost, pair_cost = _cost_model(cfg, facts)
        cells = {(lv, tv): (model_cost(lv, tv), pair_cost(lv, tv)) for lv in cfg.load.values for tv in cfg.temperature.values}
    except Exception:  # an estimate: never fail a sweep over it
        return {}
    out = {mkey(cfg, lv, tv, s): cells[(lv, tv)][0] for lv, tv, s in cfg.model_keys()}
    out.update({pkey(cfg, lv, tv, a, b): cells[(lv, tv)][1] for lv, tv, a, b in cfg.pair_keys()})
    return out


def epoch_shares(cfg: SweepConfig, facts=None) -> dict[str, float]:
    """Model job key -> the share of its estimated cost that is its epochs of training (the rest: the job's
    overhead, its evaluation and Hessian). The ETA scales the epochs a running job reports by it to the whole
    job. Empty when the model cannot be sized (the ETA then takes the epochs for the whole job)."""
    try:
        model_cost = _cost_model(cfg, facts)[0]
        shares = {(lv, tv): model_cost(lv, tv, epochs_only=True) / model_cost(lv, tv)
                  for lv in cfg.load.values for tv in cfg.temperature.values}
    except Exception:  # an estimate: never fail a sweep over it
        return {}
    return {mkey(cfg, lv, tv, s): shares[(lv, tv)] for lv, tv, s in cfg.model_keys()}


# The cost model: seconds at an assumed sustained rate. Wrong in absolute terms on any machine; what it must
# get roughly right is how jobs of one sweep compare (a wide model at batch 16 against a narrow one at 1024).
# Fitted to the 144 jobs of a `landscape run demo` on this project's 2-core CPU (docs/benchmarks.md, "Measurements
# behind constants"; benchmarks/eta.py replays a run's ETA): per training step a fixed cost dominates small
# models, larger matrix products run faster per flop than small ones (taken as one rate), and a curve step
# costs about twice a training step's fixed cost (it builds the curve point's weights from three models).
FLOPS_PER_SECOND = 18e9  # dense layers, fitted (a first guess of 5e9 overweighted wide models 4x)
STEP_OVERHEAD_S = 1.6e-3  # per SGD step: Python, autograd, optimizer, indexing (fitted; a guess of 2e-4 was 8x low)
CURVE_STEP_FACTOR = 2.0  # a curve training step's fixed cost, in training steps
JOB_OVERHEAD_S = 0.7  # per job: data, model build, writing the weights and parts (fitted)
HESSIAN_PRODUCTS = 50  # Hessian-vector products per model, typical (Lanczos + Hutchinson; capped at 100 + 100)


def cohort_cost(cfg: SweepConfig, table: str, facts=None):
    """cost(lv, tv, members): the estimated seconds of one cohort trial writing ``table`` ("models" or "pairs")
    with that many members of the cell: the per-step overhead once, the arithmetic once per member (one cohort
    step serves every member). None when the model cannot be sized."""
    try:
        model_cost, pair_cost = _cost_model(cfg, facts)
    except Exception:  # an estimate: never fail a sweep over it
        return None
    return model_cost if table == "models" else pair_cost


def _cost_model(cfg: SweepConfig, facts=None):
    """(model_cost(lv, tv, members=1, epochs_only=False), pair_cost(lv, tv, members=1)) for the cells of
    ``cfg``, in estimated seconds; members > 1: a cohort of that many members of the cell (the per-step
    overhead counted once); epochs_only: the model's epochs of training alone.
    ``facts``: a run_facts.RunFacts (None: measured from the config's code)."""
    if facts is None:
        from orchestrator.planning.run_facts import measure

        facts = measure(cfg)
    m, c = cfg.metrics, cfg.metrics.curve

    def cell(lv, tv):
        width, batch, n = cell_quantities(cfg, lv, tv, facts.train_size)  # what the knobs set in the cell
        return n, batch, facts.params(width)

    def sgd(epochs: int, n: int, batch: int, p: int, step_factor: float = 1.0, members: int = 1) -> float:
        # ~6 flops per parameter and example for a forward and backward pass.
        return epochs * max(1, n // batch) * (step_factor * STEP_OVERHEAD_S
                                              + members * 6.0 * batch * p / FLOPS_PER_SECOND)

    def evaluation(n: int, p: int) -> float:  # train and test set (~1.25 n), forward only
        return 2.0 * 1.25 * n * p / FLOPS_PER_SECOND

    def model_cost(lv, tv, members: int = 1, epochs_only: bool = False):
        n, batch, p = cell(lv, tv)
        epochs = sgd(cfg.training.epochs, n, batch, p, members=members)
        if epochs_only:
            return epochs
        hessian = HESSIAN_PRODUCTS * 12.0 * min(m.hessian.samples, n) * p / FLOPS_PER_SECOND
        return JOB_OVERHEAD_S + epochs + members * (evaluation(n, p) + hessian)

    def pair_cost(lv, tv, members: int = 1):
        n, _, p = cell(lv, tv)
        # Each t of the grid: BatchNorm statistics recomputed (a pass over the training set) and an evaluation.
        return (JOB_OVERHEAD_S + sgd(c.epochs, n, c.batch_size, p, CURVE_STEP_FACTOR, members)
                + members * c.points * (evaluation(n, p) + 2.0 * n * p / FLOPS_PER_SECOND))

    return model_cost, pair_cost
