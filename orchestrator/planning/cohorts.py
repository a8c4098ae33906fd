"""Which missing models train together, and which pairs have their curves trained together: the cohorts of a
sweep round (``execution.cohort``), their ids, and what a cohort trial asks of the cluster.

A cohort is formed from the keys a round still has to compute (a resume or a grown grid never retrains a done
model to fill a cohort). Who may share one is the engine's rule (workloads/cohort_experiment.py
``model_cohort_key`` / ``pair_cohort_key``: one architecture, the same training inputs and step counts), and
in the sweep also the same resources (members of loads with other ``*_by_load`` requests never share a trial).

    execution.cohort: auto   every cohort that can share one, then, with S trials running at once (``slots``,
                             known when the run starts), the costliest cohort split into equal parts while
                             that shortens the estimated wall time of these trials: the longer of the longest
                             cohort and their total cost over S (orchestrator/planning/cost.py's cohort_cost: the per-step
                             overhead once per cohort, the arithmetic per member). One 90-model cohort would
                             train on one of two CPUs while the other idles; the demo's width-256 cohort
                             alone was the critical path. Without slots (validate, estimate) nothing is
                             split. Not modelled: smaller cohorts let pair cohorts start sooner
                      N      at most N members
                      off    cohorts of one: one model or pair per trial (the same job, engine and rows)

Plug-in models (user code) form cohorts as the built-ins do: the engine picks its backend from the model
(workloads/cohort_net.py resolve_backend). A cohort's id names its members (orchestrator/planning/jobs.py cohort_id).

On GPUs a cohort has at most 1 / (its trial's GPU share) members (``member_cap``): it then holds at most the
one GPU that many packed trials would have shared, and about their memory (a load whose trials need a whole
GPU, such as the paper's widest ResNets at batch 1024, trains one model per trial).

Resources of a cohort trial: the CPUs of one trial of its load (a cohort's gain is that one step serves M
members; its per-step work is serial Python and small kernels, so two one-thread cohorts on two cores beat
one two-thread cohort, and the node caps a trial anyway); GPUs: the trial's share once per member, up to
one whole GPU (a request of one GPU or more is kept as it is).
"""

from __future__ import annotations

import dataclasses
import math

from orchestrator.config import SweepConfig
from orchestrator.planning.jobs import model_job, pair_job


def _resource_group(cfg: SweepConfig, load_value) -> tuple:
    """What decides a load's requests, before ``resources.gpu: auto`` is decided: equal groups, equal requests."""
    r = cfg.resources
    by_cpu = {float(k): float(v) for k, v in r.cpu_by_load.items()}
    by_gpu = {float(k): float(v) for k, v in r.gpu_by_load.items()}
    return by_cpu.get(float(load_value)), by_gpu.get(float(load_value))


def for_the_model(cfg: SweepConfig, one_member_reason: str) -> tuple[SweepConfig, str | None]:
    """``cfg`` with cohorts of one member when its model needs them (``one_member_reason``: run_facts'
    ``trains_one_member_per_cohort``, e.g. a model drawing random numbers in its forward pass), and the note
    that says so; else ``cfg`` unchanged and None. Decided once, before the cohorts are printed and formed."""
    if not one_member_reason or not cfg.execution.cohorts:
        return cfg, None
    note = (f"{one_member_reason}: each cohort of {cfg.workload.model} has one member (the plain backend, as with "
            f"execution.cohort: off)")
    return dataclasses.replace(cfg, execution=dataclasses.replace(cfg.execution, cohort="off")), note


def member_cap(cfg: SweepConfig, gpu_share: float | None) -> int | None:
    """Members per cohort at most: execution.cohort's cap, and on GPUs 1 / the trial's share (a cohort holds at
    most the one GPU that many packed trials would have shared, so its memory is about theirs: a load whose
    trials need a whole GPU gets no cohorts). ``gpu_share`` None: not decided yet (resources.gpu: auto)."""
    cap = cfg.execution.cohort_cap
    if gpu_share is not None and gpu_share > 0:
        by_gpu = max(1, int(1.0 / gpu_share + 1e-9))
        cap = by_gpu if cap is None else min(cap, by_gpu)
    return cap


def fill_slots(cfg: SweepConfig, cohorts: list[list[tuple]], table: str, slots: int | None) -> list[list[tuple]]:
    """Auto's ``cohorts`` (keys (load, temperature, ...) of one cell shape each, of the jobs writing ``table``)
    split into equal parts while that shortens their estimated wall time on ``slots`` trials at once: the longer
    of the longest cohort and their total cost over the slots (each part pays the per-step overhead again).
    Unchanged for an explicit N, or without slots."""
    if cfg.execution.cohort_cap is not None or not slots or slots <= 1 or not cohorts:
        return cohorts
    from orchestrator.planning.cost import cohort_cost

    price = cohort_cost(cfg, table) or (lambda lv, tv, members: float(members))  # unknown: count members
    parts = [1] * len(cohorts)

    def part_cost(i: int, n_parts: int) -> float:
        group = cohorts[i]
        return price(group[0][0], group[0][1], math.ceil(len(group) / n_parts))

    def wall(split: list[int]) -> float:
        costs = [part_cost(i, k) for i, k in enumerate(split)]
        return max(max(costs), sum(c * k for c, k in zip(costs, split)) / int(slots))

    while True:
        splittable = [i for i, g in enumerate(cohorts) if math.ceil(len(g) / parts[i]) > 1]
        if not splittable:
            break
        i = max(splittable, key=lambda i: part_cost(i, parts[i]))
        more = parts[:i] + [parts[i] + 1] + parts[i + 1:]
        while more[i] < len(cohorts[i]) and math.ceil(len(cohorts[i]) / more[i]) == math.ceil(
                len(cohorts[i]) / parts[i]):
            more[i] += 1  # the next count that changes the part size
        if not wall(more) < wall(parts):
            break
        parts = more
    out = []
    for group, k in zip(cohorts, parts):
        size = math.ceil(len(group) / k)
        out += [group[n:n + size] for n in range(0, len(group), size)]
    return out


def _grouped(cfg: SweepConfig, todo: list, spec_of, plan, gpu_of) -> list[list]:
    """``todo`` split into cohorts by ``plan`` (the engine's planner) within each resource group, at most
    ``member_cap`` members each, in the order of first appearance (the plan's cost order: longest cells first).
    gpu_of(load value): the GPUs of one job there, or None while resources.gpu is auto."""
    groups: dict[tuple, list] = {}
    for key in todo:
        groups.setdefault(_resource_group(cfg, key[0]), []).append(key)
    cohorts = []
    for keys in groups.values():
        specs = [spec_of(k) for k in keys]
        by_spec = {id(s): k for s, k in zip(specs, keys)}
        cap = member_cap(cfg, gpu_of(keys[0][0]))
        cohorts += [[by_spec[id(s)] for s in group] for group in plan(specs, cap)]
    order = {k: i for i, k in enumerate(todo)}
    return sorted(cohorts, key=lambda group: order[group[0]])


def _cohorts_of(cfg: SweepConfig, todo: list, table: str, spec_class, plan, gpu_of, slots: int | None
                ) -> list[list[tuple]]:
    """``todo`` keys (load, temperature, *seeds) as cohorts by ``plan``; each key's spec is spec_class(cell,
    *seeds), with one CellSpec per cell."""
    from orchestrator.planning.cells import cell_spec

    cells: dict = {}

    def spec_of(key):
        if (key[0], key[1]) not in cells:
            cells[(key[0], key[1])] = cell_spec(cfg, key[0], key[1])
        return spec_class(cells[(key[0], key[1])], *(int(s) for s in key[2:]))

    return fill_slots(cfg, _grouped(cfg, list(todo), spec_of, plan, gpu_of), table, slots)


def model_cohorts(cfg: SweepConfig, todo: list, slots: int | None = None) -> list[list[tuple]]:
    """The model keys ``todo`` [(load, temperature, seed)] as cohorts (lists of keys); cohorts of one when off.
    slots: trials that run at once (auto fills them, see the module doc); None: unknown."""
    if not cfg.execution.cohorts:  # before importing torch: cohorts of one need no planning
        return [[k] for k in todo]
    from workloads.cohort_experiment import plan_model_cohorts
    from workloads.specs import ModelSpec

    return _cohorts_of(cfg, todo, "models", ModelSpec, plan_model_cohorts,
                       lambda lv: None if cfg.gpu_is_auto else cfg.trial_gpu(lv), slots)


def pair_cohorts(cfg: SweepConfig, todo: list, slots: int | None = None) -> list[list[tuple]]:
    """The pair keys ``todo`` [(load, temperature, seed_a, seed_b)] as cohorts; cohorts of one when off."""
    if not cfg.execution.cohorts:  # before importing torch: cohorts of one need no planning
        return [[k] for k in todo]
    from workloads.cohort_experiment import plan_pair_cohorts
    from workloads.specs import PairSpec

    return _cohorts_of(cfg, todo, "pairs", PairSpec, plan_pair_cohorts,
                       lambda lv: None if cfg.gpu_is_auto else cfg.pair_resources(lv)["gpu"], slots)


def order_for_pairs(model_groups: list[list[tuple]], pair_groups: list[list[tuple]]) -> list[list[tuple]]:
    """The model cohorts reordered so that those a pair cohort needs run one after the other, the pair cohorts
    in the order of their first model cohort (the cost order otherwise kept): a pair cohort then becomes ready
    while the other models still train (with batch size as the temperature a width's curves share a cohort,
    its cells' trainings do not, and in cost order they are spread over the whole sweep)."""
    where = {key: i for i, group in enumerate(model_groups) for key in group}
    rank = list(range(len(model_groups)))
    for pairs in pair_groups:
        needs = {where[(lv, tv, s)] for lv, tv, a, b in pairs for s in (a, b) if (lv, tv, s) in where}
        if needs:
            first = min(needs)
            for i in needs:
                rank[i] = min(rank[i], first)
    order = sorted(range(len(model_groups)), key=lambda i: (rank[i], i))
    return [model_groups[i] for i in order]


def model_jobs(cfg: SweepConfig, cohorts: list[list[tuple]]) -> list[dict]:
    """One model job per cohort."""
    return [model_job(cfg, group) for group in cohorts]


def pair_jobs_of(cfg: SweepConfig, pairs: list[tuple]) -> list[dict]:
    """The job of a pair cohort's pairs whose models are all ok (the others are resolved without a job)."""
    return [pair_job(cfg, pairs)] if pairs else []


def cohort_request(request: dict, members: int) -> dict:
    """A cohort trial's {"cpu", "gpu"} from one trial's request (see the module doc)."""
    gpu = float(request["gpu"])
    if 0 < gpu < 1:
        gpu = min(1.0, gpu * max(1, int(members)))
    return {"cpu": float(request["cpu"]), "gpu": gpu}


def _sizes(groups: list[list]) -> str:
    sizes = sorted({len(g) for g in groups})
    return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"


def describe_cohorts(cfg: SweepConfig, models_todo: list, pairs_todo: list, slots: int | None = None) -> str:
    """One line for `validate` and `run`: how many trials train the models and measure the pairs, and how many
    members each has, e.g. "cohorts (execution.cohort: auto): 4 training trials of 21 models each, 4 pair trials
    of 21 pairs each". slots: the trials at once (run); None (validate): auto is described unsplit."""
    if not cfg.execution.cohorts:
        return (f"cohorts: off (execution.cohort): {len(models_todo)} training trials and {len(pairs_todo)} pair "
                f"trials of one model or pair each")
    parts = []
    for groups, noun, what in ((model_cohorts(cfg, models_todo, slots), "training", "models"),
                               (pair_cohorts(cfg, pairs_todo, slots), "pair", "pairs")):
        if groups:
            parts.append(f"{len(groups)} {noun} trial{'s' if len(groups) != 1 else ''} of {_sizes(groups)} {what} each")
    gpu = " (each asks for its GPU share once per member, up to one GPU)" if not cfg.gpu_is_auto and any(
        0 < cfg.trial_gpu(lv) < 1 for lv in cfg.load.values) else ""
    split = (" before auto splits them to fill the trials that run at once" if slots is None
             and cfg.execution.cohort_cap is None else "")
    return (f"cohorts (execution.cohort: {cfg.execution.cohort}): {', '.join(parts) or 'nothing to do'}{split}"
            f"{gpu}")
