"""GPU benchmark in one command: ResNet18 training steps one model at a time vs cohorts, the rates behind the cost
estimates, and the paper grid's projected GPU-hours.

    python benchmarks/gpu.py [--budget-s 400] [--rates-out PATH] [--peak-tflops T] [--with-sweep] [--cpu-dry-run]

Needs only torch and numpy (no Ray, yaml, click, pyhessian, mnist1d, torchvision or sklearn: it imports
torch-only modules of workloads/ and orchestrator/planning/gpu_rates.py, lazily) and a CUDA GPU; the data are random
CIFAR-shaped tensors made on the GPU (step times do not depend on pixel values). On a machine without CUDA it
says so and exits 0. docs/benchmarks.md says how to run it and where its figures go.

  1. Training steps: ResNet18 k in {4, 16, 64} x batch {16, 128, 1024}, one model at a time (workloads.train.train,
     the sweeps' loop, on a training set without a test split: it then evaluates nothing) vs a cohort of 5
     (workloads.cohort_train.train_cohort, grouped backend, no test set): per-step time, images/s, TFLOP/s and
     peak memory. Each side the same way: one training call of two epochs of N steps, the first untimed (lazy
     initialisation, allocator), the second timed between the synchronised ends of the two; settings as the
     sweeps run them (fp32 with torch's default TF32 convolutions, cuDNN autotuning off).
  2. Rates: step time = fixed cost + FLOPs / rate fitted to step 1's points, one at a time and per cohort step
     separately; written at once to benchmarks/gpu_rates.json (--rates-out), which `landscape validate` and
     orchestrator/planning/estimate.py then use instead of the assumed A10G figures.
  3. The paper grid (paper-width-batch: 910 models, 910 pairs) in GPU-hours on this GPU: with its cohorts,
     without, and from the assumed rates, through orchestrator/planning/gpu_rates.py's formula (the one estimate.py uses).
  4. Evaluation, timed apart: the 10,000-image test split, one model (workloads.train.evaluate) vs a cohort
     (workloads.cohort_train.evaluate_cohort), per width.
  5. Memory of the paper's largest requests: the widest width of each GPU share at batch 1024, as the cohort
     of 1 / share members a sweep forms there, against the A10G (24 GB) share it holds.
  6. Variants against the plain step, both sides, at k=4 batch 16 (launch-bound) and k=64 batch 128 (compute-
     bound): bf16 autocast, channels_last, cuDNN autotuning; then the host synchronisations of 64 cohort steps;
     last, at k=4 batch 16, CUDA graphs (torch.compile mode="reduce-overhead": compilation and graph recording
     are two untimed epochs). The ratio to plain is printed (> 1: the variant is faster).
  7. (--with-sweep only; needs Ray and the installed project, else skipped with a note) the CUDA path of every
     stage (training, Hessian, curve) and a reduced paper sweep on a private local Ray, four trials per GPU.

A time budget (--budget-s) bounds the run: a measurement whose expected time no longer fits is skipped with a
note (one that runs past the budget's end is stopped), so the rates, the projection and the summary are always
reached. Exit status 1 only when a plain step failed with an error (an out-of-memory is reported as a finding).

--cpu-dry-run runs the same logic on the CPU with tiny sizes (ResNet18 k in {1, 2} on 8x8 images; no
compilation); its figures mean nothing, it tests the script (tests/project/test_gpu_benchmark.py).
(Over 400 lines: one script for one GPU session, since a GPU is lent rarely and briefly.)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import math
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

A10G_BYTES = 24 * 1024**3  # cluster.yaml's g5 workers
CIFAR_RESIDENT_BYTES = (50000 + 10000) * 3 * 32 * 32 * 4  # a trial keeps CIFAR-10 on its GPU (fp32)

# paper-width-batch's grid (orchestrator/configs/paper-width-batch.yaml), kept here because the GPU machine has
# no yaml; tests/project/test_gpu_benchmark.py checks that it equals the built-in config and that the projection equals
# orchestrator/planning/estimate.py's estimate of it.
PAPER_GRID = {
    "config": "paper-width-batch", "model": "resnet18", "input_shape": (3, 32, 32), "classes": 10,
    "train_size": 50000, "test_size": 10000,
    "widths": (1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128),
    "batches": (16, 24, 32, 44, 64, 92, 128, 180, 256, 364, 512, 724, 1024),
    "seeds": 5, "seed_pairs": 5, "epochs": 100,
    "hessian_samples": 1000, "hessian_eigen_max_iter": 100, "hessian_trace_max_probes": 100,
    "curve_epochs": 50, "curve_batch": 128, "curve_points": 9,
    "gpu_share": 0.25, "gpu_share_by_width": {23: 0.5, 32: 0.5, 45: 0.5, 64: 1.0, 91: 1.0, 128: 1.0},
}

PLAIN = "plain"
VARIANTS = ("bf16", "channels_last", "cudnn.benchmark", "CUDA graphs")


@dataclasses.dataclass
class Sizes:
    """What each step uses; the dry run shrinks everything."""

    device: str = "cuda"
    image_shape: tuple = (3, 32, 32)
    widths: tuple = (4, 16, 64)
    batches: tuple = (16, 128, 1024)
    members: int = 5  # a paper cell's seeds
    max_steps: int = 40  # timed steps per measurement: min(max_steps, step_images // batch), at least min_steps
    min_steps: int = 10
    step_images: int = 16384
    eval_images: int = 10000  # CIFAR-10's test split
    variant_cases: tuple = ((4, 16), (64, 128))
    graph_cases: tuple = ((4, 16),)  # CUDA graphs only where launches dominate (each compile costs ~1 min)
    memory_cases: tuple = ((128, 1024, 1, 1.0), (45, 1024, 2, 0.5), (16, 1024, 4, 0.25))  # k, B, members, share
    guess_s: float = 6.0  # expected seconds of one measurement (warm-up included), for the budget
    compile_guess_s: float = 120.0
    reserve_s: float = 15.0  # kept for the rates, the projection and the summary


def dry_sizes() -> Sizes:
    return Sizes(device="cpu", image_shape=(3, 8, 8), widths=(1, 2), batches=(4, 8), members=2, max_steps=3,
                 min_steps=2, step_images=24, eval_images=32, variant_cases=((1, 4),),
                 graph_cases=(), memory_cases=((2, 8, 2, 0.5),), guess_s=1.0, compile_guess_s=30.0, reserve_s=3.0)


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


class OverBudget(Exception):
    """Raised by the budget's alarm in whatever measurement runs past the budget's end."""


class Budget:
    """Wall-clock budget: a measurement runs only when its expected time still fits before the reserve."""

    def __init__(self, seconds: float, reserve_s: float):
        self.deadline = time.monotonic() + seconds
        self.reserve_s = reserve_s
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @contextlib.contextmanager
    def hard_stop(self):
        """Interrupt a measurement that runs past the budget's end (SIGALRM, main thread, POSIX): it is reported
        as stopped and the run goes on to its summary."""
        if not hasattr(signal, "SIGALRM"):
            yield
            return

        def stop(signum, frame):
            raise OverBudget("stopped at the end of the budget")

        previous = signal.signal(signal.SIGALRM, stop)
        signal.alarm(max(1, math.ceil(self.left())))
        try:
            yield
        except OverBudget:  # outside a measurement (which reports it itself): the rest of this block is skipped
            self.skipped.append("the rest of a step, stopped at the end of the budget")
            print("  stopped at the end of the budget", flush=True)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    def allows(self, what: str, guess_s: float) -> bool:
        left = self.left() - self.reserve_s
        if left >= guess_s:
            return True
        self.skipped.append(what)
        print(f"  skipped (budget): {what}: {max(0.0, left):.0f} s left before the summary's reserve, it needs "
              f"~{guess_s:.0f} s", flush=True)
        return False


@dataclasses.dataclass
class Timing:
    width: int
    batch: int
    members: int  # 1: one model at a time
    variant: str
    step_s: float | None = None  # seconds per training step (all members)
    peak_bytes: float | None = None  # peak memory allocated by the measurement, the data excepted
    flops_per_step: float = 0.0  # 3 forward FLOPs per image, all members
    error: str | None = None

    @property
    def side(self) -> str:
        return "one at a time" if self.members == 1 else f"cohort of {self.members}"

    @property
    def images_per_s(self) -> float | None:
        return self.members * self.batch / self.step_s if self.step_s else None


# ---------------------------------------------------------------------------------------------------------
# Timed training steps


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def random_data(sizes: Sizes, n: int):
    """n random CIFAR-shaped images with labels, on the device; the test split empty (train() then evaluates
    nothing), for the training steps."""
    import torch

    from workloads.data import Dataset

    gen = torch.Generator(device=sizes.device).manual_seed(0)
    x = torch.randn(n, *sizes.image_shape, generator=gen, device=sizes.device)
    y = torch.randint(0, 10, (n,), generator=gen, device=sizes.device)
    return Dataset("random-cifar-shaped", x, y, x[:0], y[:0], 10, {"train_size": n})


def _part(data, n: int):
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


@contextlib.contextmanager
def _variant_context(variant: str, device: str):
    """bf16 autocast around the one-at-a-time loop (the cohort engine has its own), cuDNN autotuning on."""
    import torch

    cudnn = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = variant == "cudnn.benchmark" or cudnn
    try:
        with torch.autocast(device, dtype=torch.bfloat16) if variant == "bf16" else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cudnn.benchmark = cudnn


def _one_at_a_time(sizes: Sizes, width: int, batch: int, variant: str):
    """run(data, epochs, epoch_fn): one ResNet18 trained with workloads.train.train (no test split: no evaluation)."""
    import torch

    from workloads.models import seeded_model
    from workloads.train import TrainConfig, train

    model = seeded_model("resnet18", 0, width=width, num_classes=10, input_shape=sizes.image_shape)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    if variant == "CUDA graphs":
        model = torch.compile(model, mode="reduce-overhead")

    def run(data, epochs: int, epoch_fn=None):
        config = TrainConfig(epochs=epochs, batch_size=batch, lr=0.01, device=sizes.device)
        with _variant_context(variant, sizes.device):
            result = train(model, data, config, epoch_fn=epoch_fn)
        if result.status != "ok":
            raise RuntimeError(result.error)

    return run


def _cohort(sizes: Sizes, width: int, batch: int, members: int, variant: str):
    """run(data, epochs, epoch_fn): a cohort of ``members`` ResNet18 trained with workloads.cohort_train.train_cohort
    (no test set: no evaluation)."""
    import torch

    from workloads.cohort_net import build_cohort_net
    from workloads.cohort_train import Execution, train_cohort
    from workloads.models import seeded_model
    from workloads.train import TrainConfig

    models = [seeded_model("resnet18", s, width=width, num_classes=10, input_shape=sizes.image_shape)
              for s in range(members)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models], "grouped", sizes.device)
    if variant == "channels_last":  # the stacked (M, ...) 5-D weights cannot be channels_last: the folded inputs
        folded = net.inputs       # are, and cuDNN then runs the convolutions NHWC (it follows either operand)
        net.inputs = lambda x, index: folded(x, index).contiguous(memory_format=torch.channels_last)
    execution = Execution(backend="grouped", precision="bf16" if variant == "bf16" else "fp32",
                          compile="reduce-overhead" if variant == "CUDA graphs" else "off")

    def run(data, epochs: int, epoch_fn=None):
        configs = [TrainConfig(epochs=epochs, batch_size=batch, lr=0.01, seed=s, device=sizes.device)
                   for s in range(members)]
        with _variant_context("cudnn.benchmark" if variant == "cudnn.benchmark" else PLAIN, sizes.device):
            labels = data.train_y.expand(members, -1)  # every member on the same labels
            result = train_cohort(net, data.train_x, labels, configs, execution=execution, epoch_fn=epoch_fn)
        if any(s != "ok" for s in result.statuses):
            raise RuntimeError(next(e for e in result.errors if e))

    return run


def timed_steps(sizes: Sizes, batch: int) -> int:
    return max(sizes.min_steps, min(sizes.max_steps, sizes.step_images // batch))


def measure_steps(sizes: Sizes, data, width: int, batch: int, members: int, variant: str = PLAIN) -> Timing:
    """Seconds per training step: one training call of 1 + W epochs of timed_steps() steps each, the first W
    untimed (lazy initialisation, allocator; compiled: compilation, then CUDA graph recording, W = 2), the last
    timed between the ends of its neighbours (epoch_fn, after a synchronisation): one call, because the cohort
    engine compiles its step anew in every call. An out-of-memory is a finding."""
    import torch

    from orchestrator.planning.gpu_rates import forward_flops
    from workloads.train import TrainingOOMError

    timing = Timing(width, batch, members, variant)
    timing.flops_per_step = 3 * forward_flops("resnet18", width, sizes.image_shape, 10, ()) * batch * members
    steps = timed_steps(sizes, batch)
    warm_epochs = 2 if variant == "CUDA graphs" else 1
    cuda = sizes.device == "cuda"
    ends: list[float] = []

    def epoch_end(_entries) -> None:
        _sync(sizes.device)
        ends.append(time.perf_counter())

    try:
        if cuda:
            torch.cuda.empty_cache()
            _sync(sizes.device)
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        run = (_one_at_a_time(sizes, width, batch, variant) if members == 1
               else _cohort(sizes, width, batch, members, variant))
        run(_part(data, batch * steps), warm_epochs + 1, epoch_end)
        if len(ends) != warm_epochs + 1:
            raise RuntimeError(f"{len(ends)} of {warm_epochs + 1} epochs reported their end")
        timing.step_s = (ends[-1] - ends[-2]) / steps
        if cuda:
            timing.peak_bytes = torch.cuda.max_memory_allocated() - base
    except (torch.cuda.OutOfMemoryError, TrainingOOMError):
        timing.error = "does not fit (out of memory)"
    except OverBudget as exc:
        timing.error = str(exc)
    except Exception as exc:  # a failed measurement is reported, and the benchmark goes on to its summary
        timing.error = f"FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    finally:
        run = None
        if cuda:
            torch.cuda.empty_cache()
    return timing


def describe(t: Timing, peak: float | None, alone: Timing | None = None, plain: Timing | None = None) -> str:
    head = f"  k={t.width:<3} batch {t.batch:<5} {t.side:<14} {t.variant:<15}: "
    if t.error:
        return head + t.error
    text = (f"{t.step_s * 1e3:8.2f} ms/step, {t.images_per_s:>9,.0f} images/s, "
            f"{t.flops_per_step / t.step_s / 1e12:6.2f} TFLOP/s")
    if peak:
        text += f" (MFU {t.flops_per_step / t.step_s / peak:.1%})"
    if t.peak_bytes is not None:
        text += f", peak {t.peak_bytes / 2**30:.2f} GiB"
    if alone is not None and alone.step_s:
        text += f", x{t.images_per_s / alone.images_per_s:.2f} images/s vs one at a time"
    if plain is not None and plain.step_s:
        text += f", x{plain.step_s / t.step_s:.2f} vs plain"
    return head + text


def grid_order(sizes: Sizes) -> list[tuple[int, int]]:
    """(width, batch) cells, the two that anchor the rates first (the most launch-bound, smallest width and batch,
    and the most compute-bound, largest of both), so that a short budget still yields rates."""
    cells = [(w, b) for w in sizes.widths for b in sizes.batches]
    first = [(min(sizes.widths), min(sizes.batches)), (max(sizes.widths), max(sizes.batches))]
    return first + [c for c in cells if c not in first]


def training_steps(sizes: Sizes, data, budget: Budget, peak: float | None) -> list[Timing]:
    """Step 1: every (width, batch), one at a time and as a cohort, plain."""
    out = []
    for width, batch in grid_order(sizes):
        alone = None
        for members in (1, sizes.members):
            side = "one at a time" if members == 1 else f"a cohort of {members}"
            if not budget.allows(f"k={width} batch {batch} {side}", sizes.guess_s):
                continue
            t = measure_steps(sizes, data, width, batch, members)
            print(describe(t, peak, alone if members > 1 else None), flush=True)
            alone = t if members == 1 else alone
            out.append(t)
    return out


def variants(sizes: Sizes, data, budget: Budget, plain: list[Timing], peak: float | None,
             compiled: bool) -> list[Timing]:
    """Step 6: each variant against the plain step of the same (width, batch, side); compiled: CUDA graphs only
    (run last: a compilation takes minutes and a failed graph capture can leave CUDA unusable), else the others."""
    out = []
    cases = sizes.graph_cases if compiled else sizes.variant_cases
    for width, batch in cases:
        for variant in ("CUDA graphs",) if compiled else VARIANTS[:-1]:
            for members in (sizes.members, 1):
                base = next((p for p in plain if (p.width, p.batch, p.members) == (width, batch, members)), None)
                guess = sizes.compile_guess_s if compiled else sizes.guess_s
                side = "one at a time" if members == 1 else f"a cohort of {members}"
                if base is None or base.error:
                    print(f"  k={width} batch {batch} {side} {variant}: no plain measurement to compare with")
                    continue
                if not budget.allows(f"{variant} at k={width} batch {batch} {side}", guess):
                    continue
                t = measure_steps(sizes, data, width, batch, members, variant)
                print(describe(t, peak, plain=base), flush=True)
                out.append(t)
    return out


# ---------------------------------------------------------------------------------------------------------
# Evaluation, timed apart


def evaluation(sizes: Sizes, budget: Budget) -> list[dict]:
    """Step 4: seconds to evaluate the test split, per model, one at a time vs a cohort (after a warm-up)."""
    import torch

    from workloads.cohort_net import build_cohort_net
    from workloads.cohort_train import evaluate_cohort
    from workloads.models import seeded_model
    from workloads.train import evaluate

    gen = torch.Generator(device=sizes.device).manual_seed(1)
    x = torch.randn(sizes.eval_images, *sizes.image_shape, generator=gen, device=sizes.device)
    y = torch.randint(0, 10, (sizes.eval_images,), generator=gen, device=sizes.device)
    rows = []
    for width in sizes.widths:
        if not budget.allows(f"evaluation at k={width}", sizes.guess_s):
            continue
        models = [seeded_model("resnet18", s, width=width, num_classes=10, input_shape=sizes.image_shape)
                  for s in range(sizes.members)]
        alone = models[0].to(sizes.device)
        net = build_cohort_net(models[0], [m.state_dict() for m in models], "grouped", sizes.device)
        labels = y.expand(sizes.members, -1)  # every member on the same labels
        seconds = {}
        try:
            for side, call in (("one at a time", lambda: evaluate(alone, x, y)),
                               (f"cohort of {sizes.members}", lambda: evaluate_cohort(net, x, labels))):
                call()
                _sync(sizes.device)
                started = time.perf_counter()
                call()
                _sync(sizes.device)
                seconds[side] = time.perf_counter() - started
        except Exception as exc:  # reported; the benchmark goes on to its summary
            why = str(exc) if isinstance(exc, OverBudget) else f"FAILED: {type(exc).__name__}: {str(exc)[:200]}"
            print(f"  k={width:<3} evaluation {' '.join(why.split())}")
            continue
        per_model = [seconds["one at a time"], seconds[f"cohort of {sizes.members}"] / sizes.members]
        print(f"  k={width:<3} evaluating {sizes.eval_images:,} images: {per_model[0]:.3f} s per model one at a time, "
              f"{per_model[1]:.3f} s per model in a cohort of {sizes.members} (x{per_model[0] / per_model[1]:.2f})",
              flush=True)
        rows.append({"width": width, "alone_s": per_model[0], "cohort_s_per_model": per_model[1]})
        del models, alone, net
        if sizes.device == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------------------
# Memory of the largest requests


def memory(sizes: Sizes, budget: Budget) -> list[dict]:
    """Step 5: peak memory of two training steps (after two warm-up steps) of the cohort a sweep forms at each
    case, plus the resident dataset, against the A10G share the cohort holds."""
    rows = []
    for width, batch, members, share in sizes.memory_cases:
        if not budget.allows(f"memory at k={width} batch {batch}", 2 * sizes.guess_s):
            continue
        small = dataclasses.replace(sizes, max_steps=2, min_steps=2)
        data = random_data(sizes, batch * 2)
        t = measure_steps(small, data, width, batch, members)
        del data
        held = min(1.0, share * members)
        allowed = A10G_BYTES * held
        need = None if t.peak_bytes is None else t.peak_bytes + CIFAR_RESIDENT_BYTES
        fits = need is not None and need <= allowed
        shown = t.error or ("peak n/a (no CUDA)" if need is None else f"{need / 2**30:.1f} GiB with CIFAR-10 resident")
        side = "one model" if members == 1 else f"a cohort of {members}"
        print(f"  k={width:<3} batch {batch} ({side}, GPU share {share:g} each): {shown}; A10G share {held:g} = "
              f"{allowed / 2**30:.0f} GiB: {'fits' if fits else 'DOES NOT FIT'}", flush=True)
        rows.append({"width": width, "batch": batch, "members": members, "need": need, "allowed": allowed,
                     "fits": fits, "error": t.error})
    return rows


def host_syncs(sizes: Sizes, steps: int = 64) -> int | None:
    """Synchronising CUDA calls while a cohort of 2 (ResNet18 k=4, batch 16) trains ``steps`` steps: the
    divergence checks every 32 steps and the epoch's bookkeeping (one per step would be a regression)."""
    if sizes.device != "cuda":
        return None
    import warnings

    import torch

    data = random_data(sizes, 16 * steps)
    run = _cohort(sizes, 4, 16, 2, PLAIN)
    run(_part(data, 32), 1)  # lazy initialisation outside the count
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run(data, 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------------------
# Rates and the paper grid's projection


def fit_rates(points: list[Timing]) -> tuple[float, float, str] | None:
    """(sustained FLOP/s, fixed seconds per step, how) from step times: step = fixed + FLOPs / rate, least squares
    on relative errors; when that gives a non-positive term (noise, too few points): the best FLOP/s of any
    point and the shortest step (the old anchors). None without two usable points."""
    import numpy as np

    good = [p for p in points if p.step_s and not p.error]
    if len(good) < 2 or len({p.flops_per_step for p in good}) < 2:
        return None
    t = np.array([p.step_s for p in good])
    w = np.array([p.flops_per_step for p in good])
    (fixed, inverse_rate), *_ = np.linalg.lstsq(np.stack([1 / t, w / t], axis=1), np.ones_like(t), rcond=None)
    if fixed > 0 and inverse_rate > 0:
        worst = float(np.max(np.abs((fixed + w * inverse_rate) / t - 1)))
        return 1 / float(inverse_rate), float(fixed), f"fitted to {len(good)} points (worst error {worst:.0%})"
    return float(np.max(w / t)), float(np.min(t)), f"anchors (the fit gave a non-positive term on {len(good)} points)"


def grid_share(width: int) -> float:
    return PAPER_GRID["gpu_share_by_width"].get(width, PAPER_GRID["gpu_share"])


def project_paper_grid(basis, cohorts: bool = True, packed: bool = True) -> tuple[float, float]:
    """(training + metrics, curves) GPU-hours of PAPER_GRID at ``basis``: orchestrator/planning/estimate.py's arithmetic
    through the same orchestrator/gpu_rates.member_job_seconds. cohorts: members = 1 / GPU share (the member cap
    a sweep's cohorts fill: every cell has 5 seeds and a width's pairs share their curve's steps); packed False:
    every trial charged a whole GPU's fixed cost per step (no overlap between packed trials credited)."""
    from orchestrator.planning.gpu_rates import forward_flops, member_job_seconds

    g = PAPER_GRID
    n, test = g["train_size"], g["test_size"]
    model_s = pair_s = 0.0
    for width in g["widths"]:
        share = grid_share(width) if packed else 1.0
        model_members = min(round(1 / grid_share(width)), g["seeds"]) if cohorts else 1
        pair_members = round(1 / grid_share(width)) if cohorts else 1
        fwd = forward_flops(g["model"], width, g["input_shape"], g["classes"], ())
        for batch in g["batches"]:
            steps = g["epochs"] * (n // batch)
            other = fwd * (n + test) + 6 * fwd * min(g["hessian_samples"], n) * (
                g["hessian_eigen_max_iter"] + g["hessian_trace_max_probes"])
            model_s += g["seeds"] * member_job_seconds(basis, 3 * fwd * batch * steps, other, steps, share,
                                                       model_members)
            curve_steps = g["curve_epochs"] * (n // g["curve_batch"])
            pair_s += g["seed_pairs"] * member_job_seconds(basis, 3 * fwd * g["curve_batch"] * curve_steps,
                                                           g["curve_points"] * fwd * (2 * n + test), curve_steps,
                                                           share, pair_members)
    return model_s / 3600, pair_s / 3600


def measured_basis(device_name: str, timings: list[Timing], members: int):
    """(GpuBasis from step 1's plain points, lines saying how) or (None, lines) when too few were measured."""
    from orchestrator.planning.gpu_rates import CohortRates, GpuBasis

    plain = [t for t in timings if t.variant == PLAIN]
    alone = fit_rates([t for t in plain if t.members == 1])
    together = fit_rates([t for t in plain if t.members == members])
    if alone is None:
        return None, ["  too few one-at-a-time steps were measured to fit rates: no rates"]
    lines = [f"  one at a time: {alone[0] / 1e12:.3g} TFLOP/s sustained, {alone[1] * 1e3:.2f} ms fixed per step "
             f"({alone[2]})"]
    cohort = None
    if together is not None:
        cohort = CohortRates(members, together[0], together[1])
        lines.append(f"  cohort of {members}: {together[0] / 1e12:.3g} TFLOP/s sustained, {together[1] * 1e3:.2f} ms "
                     f"fixed per cohort step ({together[2]})")
    else:
        lines.append("  too few cohort steps were measured: cohorts are charged the one-at-a-time rates")
    name = f"{device_name}, measured {time.strftime('%Y-%m-%d', time.gmtime())} by benchmarks/gpu.py"
    return GpuBasis(name=name, sustained_flops=alone[0], step_overhead_s=alone[1], cohort=cohort), lines


def projection(basis) -> list[str]:
    """Step 3's lines: the paper grid with cohorts, without, without packing credit, and at the assumed rates."""
    from orchestrator.planning.gpu_rates import DEFAULT_GPU

    g = PAPER_GRID
    models = len(g["widths"]) * len(g["batches"]) * g["seeds"]
    pairs = len(g["widths"]) * len(g["batches"]) * g["seed_pairs"]

    def hours(b, **kw) -> str:
        m, p = project_paper_grid(b, **kw)
        return f"~{m + p:,.0f} GPU-hours ({m:,.0f} training + metrics, {p:,.0f} curves)"

    lines = [f"  {g['config']} ({models} models, {pairs} pairs, {g['epochs']} epochs, ResNet18 on CIFAR-10 shapes):"]
    if basis is not None:
        lines += [f"  with its cohorts (execution.cohort auto), measured rates: {hours(basis)} on {basis.name}",
                  f"  cohorts off, packed trials overlapping their fixed cost (assumed): {hours(basis, cohorts=False)}",
                  f"  cohorts off, each trial's fixed cost charged in full:             "
                  f"{hours(basis, cohorts=False, packed=False)}"]
    lines.append(f"  assumed A10G rates (what `landscape validate` prints without a rates file): {hours(DEFAULT_GPU)}")
    return lines


# ---------------------------------------------------------------------------------------------------------
# 7. (--with-sweep) the CUDA path of every stage and a packed sweep on Ray: needs the installed project

SWEEP_NEEDS = ("ray", "yaml", "click", "pandas", "pyarrow")


def missing_for_sweep() -> list[str]:
    return [name for name in SWEEP_NEEDS if importlib.util.find_spec(name) is None]


def with_sweep(dry_run: bool, keep: str | None, epochs: int | None) -> dict:
    """Step 7 through benchmarks/gpu_sweep.py (imported only here: it needs Ray and yaml)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gpu_sweep

    return gpu_sweep.run(dry_run, keep, epochs)


# ---------------------------------------------------------------------------------------------------------

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from NVIDIA's datasheets, matched by substring of the
# device name in this order; the plain steps are fp32 (TF32 convolutions), so their MFU against this is low.
BF16_DENSE_PEAK = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for fragment, peak in BF16_DENSE_PEAK:
        if fragment in device_name:
            return peak
    return None


def summary(members: int, device_name: str, timings: list[Timing], extra: list[Timing], evals: list[dict],
            mem: list[dict], syncs: int | None, rate_lines: list[str], projected: list[str], rates_note: str,
            budget: Budget, started: float, sweep: dict | None) -> None:
    section("Summary (for docs/benchmarks.md)")
    print(f"  device: {device_name}")
    by_key = {(t.width, t.batch, t.members, t.variant): t for t in timings + extra}
    for t in timings:
        if t.members == 1:
            cohort = by_key.get((t.width, t.batch, members, PLAIN))
            one = t.error or f"{t.step_s * 1e3:.2f} ms/step"
            other = "not measured" if cohort is None else cohort.error or f"{cohort.step_s * 1e3:.2f} ms/step"
            gain = (f", x{cohort.images_per_s / t.images_per_s:.2f} images/s"
                    if cohort is not None and cohort.step_s and t.step_s else "")
            print(f"  k={t.width:<3} batch {t.batch:<5}: one at a time {one}; cohort of {members} {other}{gain}")
    for t in extra:
        base = by_key.get((t.width, t.batch, t.members, PLAIN))
        ratio = t.error or (f"x{base.step_s / t.step_s:.2f} vs plain" if base and base.step_s else "no plain")
        print(f"  variant {t.variant} at k={t.width} batch {t.batch}, {t.side}: {ratio}")
    for e in evals:
        print(f"  evaluation k={e['width']}: {e['alone_s']:.3f} s per model alone, {e['cohort_s_per_model']:.3f} s "
              f"per model in a cohort (timed apart from the steps)")
    for m in mem:
        need = m["error"] or ("n/a" if m["need"] is None else f"{m['need'] / 2**30:.1f} GiB")
        print(f"  memory k={m['width']} batch {m['batch']} x{m['members']}: {need} "
              f"({'fits' if m['fits'] else 'does NOT fit'} {m['allowed'] / 2**30:.0f} GiB of an A10G)")
    print(f"  cohort host synchronisations in 64 steps: {'n/a (no CUDA)' if syncs is None else syncs}")
    for line in rate_lines + projected:
        print(line)
    print(f"  {rates_note}")
    if sweep is not None:
        print(f"  with-sweep: {sweep.get('note') or sweep}")
    if budget.skipped:
        print(f"  skipped for the budget ({len(budget.skipped)}): {'; '.join(budget.skipped)}")
    print(f"  total {time.perf_counter() - started:.0f} s")


def write_rates_file(basis, rates_out: str | None, device: str, device_name: str) -> str:
    """Write the measured rates (on a GPU by default to benchmarks/gpu_rates.json); returns what happened."""
    from orchestrator.planning.gpu_rates import MEASURED_RATES_PATH, write_rates

    rates_out = rates_out or (MEASURED_RATES_PATH if device == "cuda" else None)
    if basis is None:
        return "rates NOT written (too few measurements): estimates stay on the assumed A10G figures"
    if not rates_out:
        return "rates not written (dry run without --rates-out)"
    write_rates(rates_out, device_name, basis.sustained_flops, basis.step_overhead_s,
                time.strftime("%Y-%m-%d", time.gmtime()), basis.cohort)
    return f"rates written to {rates_out}: `landscape validate` estimates from them from now on"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=400.0,
                        help="wall-clock budget in seconds; measurements that no longer fit are skipped (default 400)")
    parser.add_argument("--rates-out", default=None, metavar="PATH",
                        help="where the fitted rates are written for orchestrator/planning/estimate.py (default on a GPU: "
                             "benchmarks/gpu_rates.json; the dry run writes only when given)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of this GPU for the MFU (default: datasheet table)")
    parser.add_argument("--with-sweep", action="store_true",
                        help="also the CUDA path of every stage and a packed sweep on Ray (needs Ray and yaml)")
    parser.add_argument("--epochs", type=int, default=None, help="--with-sweep: epochs per model (default 3)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="--with-sweep: keep the sweep's run directory")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="test the script on the CPU with tiny sizes (figures mean nothing)")
    args = parser.parse_args(argv)

    import torch

    if args.cpu_dry_run:
        sizes = dry_sizes()
        torch.set_num_threads(1)  # tiny steps: threads only contend (CI machines are small and shared)
        device_name = "CPU dry run (figures mean nothing)"
        print("CPU DRY RUN: tiny sizes, no compilation; the figures mean nothing")
    elif not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): nothing to benchmark. "
              "Run this on a machine with an NVIDIA GPU (or --cpu-dry-run to test the script).")
        return 0
    else:
        sizes = Sizes()
        device_name = torch.cuda.get_device_name(0)
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s); "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}; TF32 convolutions "
              f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}, TF32 matmul "
              f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}")
    started = time.perf_counter()
    budget = Budget(args.budget_s, sizes.reserve_s)
    print(f"budget {args.budget_s:.0f} s (steps that no longer fit are skipped with a note)")
    peak = peak_flops(device_name, args.peak_tflops)
    timings, evals, extra, mem, syncs = [], [], [], [], None
    data = None
    with budget.hard_stop():
        section(f"1. Training steps, no evaluation: one at a time vs a cohort of {sizes.members} (ResNet18, fp32)")
        data = random_data(sizes, max(b * timed_steps(sizes, b) for b in sizes.batches))
        timings = training_steps(sizes, data, budget, peak)

    # The rates and the projection come right after the steps they are fitted to, outside the budget's alarm:
    # written before anything slower (compilation) can run out of time.
    section("2. Rates for orchestrator/planning/estimate.py")
    basis, rate_lines = measured_basis(device_name, timings, sizes.members)
    rates_note = write_rates_file(basis, args.rates_out, sizes.device, device_name)
    for line in rate_lines + [f"  {rates_note}"]:
        print(line)
    section("3. Projection: the paper grid in GPU-hours on this device")
    projected = projection(basis)
    for line in projected:
        print(line, flush=True)

    with budget.hard_stop():
        section("4. Evaluation of the test split, timed apart")
        evals = evaluation(sizes, budget)
        if sizes.memory_cases:
            section("5. Memory of the largest requests (paper-width-batch, as cohorts)")
            mem = memory(sizes, budget)
        section("6. Variants against the plain step (ratio > 1: the variant is faster)")
        if data is not None:
            extra = variants(sizes, data, budget, timings, peak, compiled=False)
        if budget.allows("host synchronisation count", sizes.guess_s):
            try:
                syncs = host_syncs(sizes)
            except (RuntimeError, ValueError) as exc:  # reported; the summary is still reached
                print(f"  host synchronisation count FAILED: {type(exc).__name__}: {str(exc)[:200]}")
            print(f"  host synchronisations in 64 cohort steps: {'n/a (no CUDA)' if syncs is None else syncs}")
        if data is not None and sizes.graph_cases:
            extra += variants(sizes, data, budget, timings, peak, compiled=True)
        data = None

    sweep = None
    if args.with_sweep:
        section("7. CUDA path of every stage and a packed sweep on Ray (--with-sweep)")
        missing = missing_for_sweep()
        if missing:
            sweep = {"ok": True, "note": f"skipped: needs {', '.join(missing)}, not installed here"}
            print(f"  {sweep['note']}")
        else:
            if sizes.device == "cuda":
                torch.cuda.empty_cache()  # this process's cached blocks would otherwise be missing to the trials
            sweep = with_sweep(args.cpu_dry_run, args.keep, args.epochs)

    summary(sizes.members, device_name, timings, extra, evals, mem, syncs, rate_lines, projected, rates_note, budget,
            started, sweep)
    # A failed plain step is a failure of the benchmark; a variant's (e.g. no compiler for torch.compile on this
    # machine) is a finding, printed above.
    failed = [t for t in timings if t.error and t.error.startswith("FAILED")]
    return 1 if failed or (sweep is not None and not sweep.get("ok")) else 0


if __name__ == "__main__":
    sys.exit(main())
