"""GPU-hours of a sweep, estimated from its config before anything runs.

The basis (one place, with units): the work of every job is counted in floating-point operations from the
model's measured forward cost (torch's FLOP counter on the meta device: no weights are allocated) and in
optimizer steps; a GPU is modelled by a sustained rate and a fixed cost per step.

    job GPU-seconds = FLOPs / sustained rate  +  steps * step overhead * GPU share

FLOPs do not shrink when trials share a GPU; the fixed cost per step (kernel launches, Python) is latency
that packed trials overlap, so a trial holding a quarter GPU is charged a quarter of it.

    model job: training   3 * forward * batch * steps   (forward + backward = 3 forwards)
               evaluation forward * (train + test examples)
               Hessian    6 * forward * points * (eigen cap + trace cap)   (a Hessian-vector product costs
                          about two gradients; the caps bound the Lanczos/Hutchinson iterations from above)
    pair job:  curve      3 * forward * curve batch * curve steps
               per t      forward * (2 * train + test examples)   (BatchNorm statistics pass + evaluation)

Cohorts (execution.cohort, orchestrator/planning/cohorts.py) change the fixed-cost term, and with measured cohort rates
also the training rate: orchestrator/planning/gpu_rates.py member_job_seconds (one formula, shared with
benchmarks/gpu.py's projection of the paper grid). Unmeasured, a cohort member is charged exactly what a packed
trial is (no gain credited); measured, the cohort's own sustained rate and fixed cost per step apply.

The rates (orchestrator/planning/gpu_rates.py, which describes the file): measured ones when a measurement file exists
(MEASURED_RATES_PATH, or the file that $LANDSCAPE_GPU_RATES names), written by ``benchmarks/gpu.py`` on a GPU
machine; else DEFAULT_GPU, an A10G with assumed figures, marked "assumed" in the output.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.planning import gpu_rates
from orchestrator.planning.cells import cell_quantities
from orchestrator.config import ConfigError, SweepConfig, token_inputs, workload_facts
from orchestrator.planning.gpu_rates import DEFAULT_GPU, GpuBasis, forward_flops, member_job_seconds, rates_path, read_rates
from workloads.dataset_facts import DATASET_FACTS

DEFAULT_TEST_SIZE = 10000  # examples, for a dataset whose test size is not known without loading it


class RatesFileError(ConfigError):
    """A measurement file that cannot be used; the message names it and the fix."""


def measured_basis(path: str | None = None) -> GpuBasis | None:
    """The GpuBasis of a measurement file (orchestrator/planning/gpu_rates.py), None when there is none; RatesFileError
    (a ConfigError: the CLI prints it as one line) when it is not one."""
    try:
        return read_rates(path or rates_path())
    except gpu_rates.RatesFileError as exc:
        raise RatesFileError(str(exc)) from None


def default_basis() -> GpuBasis:
    """The measured rates when a measurement file exists, else DEFAULT_GPU (assumed)."""
    return measured_basis() or DEFAULT_GPU


@dataclass
class Estimate:
    gpu_hours: float
    model_gpu_hours: float
    pair_gpu_hours: float
    models: int
    pairs: int
    basis: GpuBasis

    def summary(self) -> str:
        return (f"~{self.gpu_hours:,.0f} GPU-hours ({self.model_gpu_hours:,.0f} training + metrics, "
                f"{self.pair_gpu_hours:,.0f} curves) on {self.basis.name}: "
                f"{self.basis.sustained_flops / 1e12:g} TFLOP/s sustained, "
                f"{self.basis.step_overhead_s * 1e3:g} ms per step" + self._cohort_rates())

    def _cohort_rates(self) -> str:
        c = self.basis.cohort
        if c is None:
            return ""
        return (f"; a cohort of {c.members}: {c.sustained_flops / 1e12:g} TFLOP/s, {c.step_overhead_s * 1e3:g} ms "
                f"per step")


def _members_by_cell(groups: list[list[tuple]]) -> dict:
    """(load, temperature) -> the size of the cohort its first member is in."""
    out = {}
    for group in groups:
        for key in group:
            out.setdefault((key[0], key[1]), len(group))
    return out


def estimate_gpu_hours(cfg: SweepConfig, basis: GpuBasis | None = None) -> Estimate:
    """GPU-hours of the whole grid of ``cfg`` (every model and every pair, none done yet), run on GPUs, with
    its cohorts (execution.cohort); ``basis`` defaults to the measured rates, else the assumed ones."""
    from orchestrator.planning.cohorts import model_cohorts, pair_cohorts

    basis = basis or default_basis()
    cfg = cfg.with_gpus_available(True)  # resources.gpu: auto -> its GPU share
    model_members = _members_by_cell(model_cohorts(cfg, cfg.model_keys()))
    pair_members = _members_by_cell(pair_cohorts(cfg, cfg.pair_keys()))
    full, shape, classes = workload_facts(cfg.workload)
    tokens = token_inputs(cfg.workload)
    facts = DATASET_FACTS.get(cfg.workload.dataset)
    test = facts.test_size if facts else DEFAULT_TEST_SIZE
    args = tuple(sorted(cfg.workload.model_args.items()))
    m, c = cfg.metrics, cfg.metrics.curve
    n_seeds, n_pairs = len(cfg.seeds), len(cfg.seed_pairs())
    model_s = pair_s = 0.0
    for lv in cfg.load.values:
        share_model = cfg.trial_gpu(lv) or 1.0  # a CPU request is charged as a whole GPU: the estimate is for GPUs
        share_pair = cfg.pair_resources(lv)["gpu"] or 1.0
        for tv in cfg.temperature.values:
            width, batch, n = cell_quantities(cfg, lv, tv, full)
            fwd = forward_flops(cfg.workload.model, width, tuple(shape), classes, args, tokens)
            steps = cfg.training.epochs * (n // batch)
            other = fwd * (n + test) + 6 * fwd * min(m.hessian.samples, n) * (
                m.hessian.eigen_max_iter + m.hessian.trace_max_probes)
            model_s += n_seeds * member_job_seconds(basis, 3 * fwd * batch * steps, other, steps, share_model,
                                                    model_members[(lv, tv)])
            if n_pairs:
                curve_steps = c.epochs * (n // c.batch_size)
                pair_s += n_pairs * member_job_seconds(basis, 3 * fwd * c.batch_size * curve_steps,
                                                       c.points * fwd * (2 * n + test), curve_steps, share_pair,
                                                       pair_members[(lv, tv)])
    return Estimate(gpu_hours=(model_s + pair_s) / 3600, model_gpu_hours=model_s / 3600, pair_gpu_hours=pair_s / 3600,
                    models=len(cfg.model_keys()), pairs=len(cfg.pair_keys()), basis=basis)
