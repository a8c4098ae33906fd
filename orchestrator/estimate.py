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

Cohorts (execution.cohort, orchestrator/cohorts.py) change the fixed-cost term: one step serves the M members
of a cohort, and a cohort trial holds its trial's GPU share once per member (up to one GPU), so each member is
charged  steps * step overhead * min(1, share * M) / M.  Their FLOPs are the same. On GPUs a cohort has at
most 1 / share members (orchestrator/cohorts.py member_cap), so this equals a packed trial's charge: the
estimate already assumes that packed trials overlap their launch latency, which a cohort makes true (packed
trials only time-slice their CUDA contexts); until benchmarks/gpu.py has measured both, the estimate does not
credit cohorts with more.

The rates: measured ones when a measurement file exists (MEASURED_RATES_PATH, or the file that
$LANDSCAPE_GPU_RATES names), written by ``benchmarks/gpu.py`` step 2 on a GPU machine; else DEFAULT_GPU, an
A10G (AWS g5), the GPU of cluster.yaml's small workers, with figures NOT measured in this project: 12 TFLOP/s
sustained for ResNet18 training (about 40% of the A10G's 31 TFLOP/s fp32 peak, with cuDNN's TF32 convolutions)
and 4 ms per SGD step of fixed cost (about 200 kernel launches per ResNet18 step), marked "assumed" in the output.
The file is JSON:
    {"format": "landscape-gpu-rates", "version": 1, "device": "NVIDIA A10G", "measured_at": "2026-12-01",
     "sustained_flops": 1.2e13, "step_overhead_s": 0.004, "source": "benchmarks/gpu.py"}
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass

from orchestrator.cells import cell_quantities
from orchestrator.config import ConfigError, SweepConfig, token_inputs, workload_facts
from workloads.dataset_facts import DATASET_FACTS

DEFAULT_TEST_SIZE = 10000  # examples, for a dataset whose test size is not known without loading it


@dataclass(frozen=True)
class GpuBasis:
    name: str
    sustained_flops: float  # FLOP/s a training step sustains on a whole GPU
    step_overhead_s: float  # seconds of fixed cost per optimizer step (launches, Python), hidden when packed


DEFAULT_GPU = GpuBasis(name="A10G (AWS g5), assumed figures", sustained_flops=12e12, step_overhead_s=0.004)

RATES_FORMAT, RATES_VERSION = "landscape-gpu-rates", 1
MEASURED_RATES_ENV = "LANDSCAPE_GPU_RATES"
MEASURED_RATES_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                                   "gpu_rates.json")


class RatesFileError(ConfigError):
    """A measurement file that cannot be used; the message names it and the fix."""


def rates_path() -> str:
    return os.environ.get(MEASURED_RATES_ENV) or MEASURED_RATES_PATH


def measured_basis(path: str | None = None) -> GpuBasis | None:
    """The GpuBasis of a measurement file (see the module doc), None when there is none; RatesFileError when it
    is not one (read as JSON: nothing in it is executed)."""
    path = path or rates_path()
    if not os.path.exists(path):
        return None
    fix = f"rerun benchmarks/gpu.py on a GPU machine, or remove {path} to use the assumed A10G figures"
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise RatesFileError(f"GPU rates file {path} is not readable JSON ({str(exc)[:120]}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != RATES_FORMAT or data.get("version") != RATES_VERSION:
        raise RatesFileError(f"GPU rates file {path} is not a {RATES_FORMAT} version {RATES_VERSION} file; {fix}")
    for key in ("sustained_flops", "step_overhead_s"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise RatesFileError(f"GPU rates file {path}: {key} must be a positive number, got {value!r}; {fix}")
    name = f"{str(data.get('device', 'GPU'))[:80]}, measured {str(data.get('measured_at', '?'))[:32]} by benchmarks/gpu.py"
    return GpuBasis(name=name, sustained_flops=float(data["sustained_flops"]),
                    step_overhead_s=float(data["step_overhead_s"]))


def write_measured_rates(path: str, device: str, sustained_flops: float, step_overhead_s: float,
                         measured_at: str) -> None:
    """Write a measurement file (benchmarks/gpu.py), atomically."""
    data = {"format": RATES_FORMAT, "version": RATES_VERSION, "device": device, "measured_at": measured_at,
            "sustained_flops": float(sustained_flops), "step_overhead_s": float(step_overhead_s),
            "source": "benchmarks/gpu.py"}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


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
                f"{self.basis.step_overhead_s * 1e3:g} ms per step")


@functools.lru_cache(maxsize=256)
def forward_flops(model: str, width: int, input_shape: tuple, num_classes: int, model_args: tuple,
                  tokens: bool = False) -> float:
    """FLOPs of one example's forward pass (2 per multiply-add), counted on the meta device (``tokens``: the
    input is integer tokens). A user's model whose forward cannot run there (it reads tensor values) is counted
    as 2 FLOPs per parameter, a dense network's forward cost per example."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from workloads.models import count_parameters, shape_model

    net = shape_model(model, width=width, num_classes=num_classes, input_shape=input_shape, **dict(model_args))
    device = next(iter(net.parameters()), torch.empty(0, device="meta")).device
    x = torch.zeros(1, *input_shape, dtype=torch.int64 if tokens else torch.float32, device=device)
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(x)
    except Exception:
        from workloads.models import MODELS

        if model in MODELS:
            raise
        return 2.0 * count_parameters(net)
    return float(counter.get_total_flops())


def _members_by_cell(cfg: SweepConfig, groups: list[list[tuple]]) -> dict:
    """(load, temperature) -> the size of the cohort its first member is in."""
    out = {}
    for group in groups:
        for key in group:
            out.setdefault((key[0], key[1]), len(group))
    return out


def _overhead_share(share: float, members: int) -> float:
    """The fixed-cost share charged to one member of a cohort of ``members`` (see the module doc)."""
    return min(1.0, share * members) / members if share < 1 else share / members


def estimate_gpu_hours(cfg: SweepConfig, basis: GpuBasis | None = None) -> Estimate:
    """GPU-hours of the whole grid of ``cfg`` (every model and every pair, none done yet), run on GPUs, with
    its cohorts (execution.cohort); ``basis`` defaults to the measured rates, else the assumed ones."""
    from orchestrator.cohorts import model_cohorts, pair_cohorts

    basis = basis or default_basis()
    cfg = cfg.with_gpus_available(True)  # resources.gpu: auto -> its GPU share
    model_members = _members_by_cell(cfg, model_cohorts(cfg, cfg.model_keys()))
    pair_members = _members_by_cell(cfg, pair_cohorts(cfg, cfg.pair_keys()))
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
            flops = 3 * fwd * batch * steps + fwd * (n + test)
            flops += 6 * fwd * min(m.hessian.samples, n) * (m.hessian.eigen_max_iter + m.hessian.trace_max_probes)
            overhead = steps * basis.step_overhead_s * _overhead_share(share_model, model_members[(lv, tv)])
            model_s += n_seeds * (flops / basis.sustained_flops + overhead)
            curve_steps = c.epochs * (n // c.batch_size)
            pflops = 3 * fwd * c.batch_size * curve_steps + c.points * fwd * (2 * n + test)
            if n_pairs:
                share = _overhead_share(share_pair, pair_members[(lv, tv)])
                pair_s += n_pairs * (pflops / basis.sustained_flops + curve_steps * basis.step_overhead_s * share)
    return Estimate(gpu_hours=(model_s + pair_s) / 3600, model_gpu_hours=model_s / 3600, pair_gpu_hours=pair_s / 3600,
                    models=len(cfg.model_keys()), pairs=len(cfg.pair_keys()), basis=basis)
