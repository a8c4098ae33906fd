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

DEFAULT_GPU is an A10G (AWS g5), the GPU of cluster.yaml's small workers, with figures NOT measured in this
project (no GPU was available when it was written): 12 TFLOP/s sustained for ResNet18 training (about 40% of
the A10G's 31 TFLOP/s fp32 peak, with cuDNN's TF32 convolutions) and 4 ms per SGD step of fixed cost (about
200 kernel launches per ResNet18 step). benchmarks/gpu.py measures both on a real GPU: put its figures here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from orchestrator.cells import cell_quantities
from orchestrator.config import SweepConfig, token_inputs, workload_facts
from workloads.dataset_facts import DATASET_FACTS

DEFAULT_TEST_SIZE = 10000  # examples, for a dataset whose test size is not known without loading it


@dataclass(frozen=True)
class GpuBasis:
    name: str
    sustained_flops: float  # FLOP/s a training step sustains on a whole GPU
    step_overhead_s: float  # seconds of fixed cost per optimizer step (launches, Python), hidden when packed


DEFAULT_GPU = GpuBasis(name="A10G (AWS g5), assumed figures", sustained_flops=12e12, step_overhead_s=0.004)


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


def estimate_gpu_hours(cfg: SweepConfig, basis: GpuBasis = DEFAULT_GPU) -> Estimate:
    """GPU-hours of the whole grid of ``cfg`` (every model and every pair, none done yet), run on GPUs."""
    cfg = cfg.with_gpus_available(True)  # resources.gpu: auto -> its GPU share
    _, shape, classes = workload_facts(cfg.workload)
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
            width, batch, n = cell_quantities(cfg, lv, tv)
            fwd = forward_flops(cfg.workload.model, width, tuple(shape), classes, args, tokens)
            steps = cfg.training.epochs * (n // batch)
            flops = 3 * fwd * batch * steps + fwd * (n + test)
            flops += 6 * fwd * min(m.hessian.samples, n) * (m.hessian.eigen_max_iter + m.hessian.trace_max_probes)
            model_s += n_seeds * (flops / basis.sustained_flops + steps * basis.step_overhead_s * share_model)
            curve_steps = c.epochs * (n // c.batch_size)
            pflops = 3 * fwd * c.batch_size * curve_steps + c.points * fwd * (2 * n + test)
            pair_s += n_pairs * (pflops / basis.sustained_flops + curve_steps * basis.step_overhead_s * share_pair)
    return Estimate(gpu_hours=(model_s + pair_s) / 3600, model_gpu_hours=model_s / 3600, pair_gpu_hours=pair_s / 3600,
                    models=len(cfg.model_keys()), pairs=len(cfg.pair_keys()), basis=basis)
