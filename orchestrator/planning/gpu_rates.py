"""The GPU a cost estimate assumes (its rates: measured by benchmarks/gpu.py, else assumed), and what one job
costs on it. Kept apart from orchestrator/planning/estimate.py, which walks a sweep config, because benchmarks/gpu.py
imports this module on a bare GPU machine (torch, numpy, pandas, pyarrow only: no yaml, no click, no Ray).

A GPU is modelled by a sustained rate and a fixed cost per optimizer step (kernel launches, Python):

    job GPU-seconds = training FLOPs / training rate  +  other FLOPs / sustained rate  +  steps * fixed cost

    one model at a time   training rate = sustained rate; fixed cost = step overhead * GPU share (packed trials
                          are assumed to overlap their launch latency: NOT measured, see docs/benchmarks.md)
    a cohort of M         when measured (the rates file's "cohort" section): training rate = the cohort's
                          sustained rate (its grouped kernels do not run at the plain rate), fixed cost = the
                          cohort step's fixed cost * min(1, share * M) / M (one step serves M members, and a
                          cohort holds its trial's share once per member, up to one GPU). Not measured: the
                          plain rates with the fixed cost split the same way, i.e. exactly a packed trial's
                          charge on GPUs (member cap 1 / share), so no gain is credited to cohorts unmeasured.

"Other FLOPs" (evaluation, Hessian-vector products, curve evaluations) are charged at the plain rate.

The rates file (MEASURED_RATES_PATH, or the file $LANDSCAPE_GPU_RATES names) is JSON, read as data only:
    {"format": "landscape-gpu-rates", "version": 1, "device": "NVIDIA H100 80GB HBM3", "measured_at": "2026-12-07",
     "sustained_flops": 1.2e14, "step_overhead_s": 0.006, "source": "benchmarks/gpu.py",
     "cohort": {"members": 5, "sustained_flops": 1.1e14, "step_overhead_s": 0.007}}    <- optional
sustained_flops: FLOP/s of a training step on a whole GPU (3 forwards per example); step_overhead_s: seconds
of fixed cost per step; "cohort": the same for one step of a cohort of ``members`` (FLOPs of all members).
Without a file: DEFAULT_GPU, an A10G (AWS g5, cluster.yaml's small workers) with figures NOT measured in this
project: 12 TFLOP/s sustained (about 40% of its 31 TFLOP/s fp32 peak with cuDNN's TF32 convolutions) and 4 ms
per step (about 200 kernel launches per ResNet18 step), marked "assumed" in the output.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass

RATES_FORMAT, RATES_VERSION = "landscape-gpu-rates", 1
MEASURED_RATES_ENV = "LANDSCAPE_GPU_RATES"
MEASURED_RATES_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                                   "gpu_rates.json")


@dataclass(frozen=True)
class CohortRates:
    members: int  # the cohort size they were measured at
    sustained_flops: float  # FLOP/s of a cohort training step (all members' FLOPs) on a whole GPU
    step_overhead_s: float  # seconds of fixed cost per cohort step (serves every member)


@dataclass(frozen=True)
class GpuBasis:
    name: str
    sustained_flops: float  # FLOP/s a training step sustains on a whole GPU
    step_overhead_s: float  # seconds of fixed cost per optimizer step (launches, Python), hidden when packed
    cohort: CohortRates | None = None  # measured cohort rates; None: cohorts are charged the plain rates


DEFAULT_GPU = GpuBasis(name="A10G (AWS g5), assumed figures", sustained_flops=12e12, step_overhead_s=0.004)


class RatesFileError(ValueError):
    """A measurement file that cannot be used; the message names it and the fix."""


def rates_path() -> str:
    return os.environ.get(MEASURED_RATES_ENV) or MEASURED_RATES_PATH


def _positive(data: dict, key: str, where: str, fix: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RatesFileError(f"GPU rates file {where}: {key} must be a positive number, got {value!r}; {fix}")
    return float(value)


def read_rates(path: str) -> GpuBasis | None:
    """The GpuBasis of the measurement file ``path``, None when there is none; RatesFileError when it is not one
    (read as JSON: nothing in it is executed)."""
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
    sustained, overhead = (_positive(data, key, path, fix) for key in ("sustained_flops", "step_overhead_s"))
    cohort = None
    if data.get("cohort") is not None:
        section = data["cohort"]
        if not isinstance(section, dict):
            raise RatesFileError(f"GPU rates file {path}: cohort must be an object, got {section!r:.60}; {fix}")
        members = section.get("members")
        if isinstance(members, bool) or not isinstance(members, int) or members < 2:
            raise RatesFileError(f"GPU rates file {path}: cohort.members must be an integer >= 2, got "
                                 f"{members!r:.40}; {fix}")
        cohort = CohortRates(members, *(_positive(section, key, f"{path} cohort", fix)
                                        for key in ("sustained_flops", "step_overhead_s")))
    name = (f"{str(data.get('device', 'GPU'))[:80]}, measured {str(data.get('measured_at', '?'))[:32]} by "
            f"benchmarks/gpu.py")
    return GpuBasis(name=name, sustained_flops=sustained, step_overhead_s=overhead, cohort=cohort)


def write_rates(path: str, device: str, sustained_flops: float, step_overhead_s: float, measured_at: str,
                cohort: CohortRates | None = None) -> None:
    """Write a measurement file (benchmarks/gpu.py), atomically."""
    data = {"format": RATES_FORMAT, "version": RATES_VERSION, "device": device, "measured_at": measured_at,
            "sustained_flops": float(sustained_flops), "step_overhead_s": float(step_overhead_s),
            "source": "benchmarks/gpu.py"}
    if cohort is not None:
        data["cohort"] = {"members": int(cohort.members), "sustained_flops": float(cohort.sustained_flops),
                          "step_overhead_s": float(cohort.step_overhead_s)}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def member_job_seconds(basis: GpuBasis, train_flops: float, other_flops: float, steps: int, share: float,
                       members: int) -> float:
    """GPU-seconds of one job (a model or a pair) that trains ``steps`` steps of ``train_flops`` in all and does
    ``other_flops`` besides, in a cohort of ``members`` (1: alone) of trials holding ``share`` of a GPU each
    (see the module doc)."""
    held = min(1.0, share * members) / members if share < 1 else share / members
    if members > 1 and basis.cohort is not None:
        rate, overhead = basis.cohort.sustained_flops, basis.cohort.step_overhead_s
    else:
        rate, overhead = basis.sustained_flops, basis.step_overhead_s
    return train_flops / rate + other_flops / basis.sustained_flops + steps * overhead * held


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
