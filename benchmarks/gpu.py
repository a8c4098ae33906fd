"""GPU benchmark: the CUDA path of every stage, the figures behind the cost estimates, a packed paper sweep.

    python benchmarks/gpu.py [--epochs N] [--keep DIR] [--peak-tflops T] [--skip-sweep]

Needs nothing beyond the installed project and a CUDA GPU; runs offline on "synthetic-cifar" (CIFAR-10's
shapes and sizes, NOT real data: workloads/data.py). On a machine without CUDA it says so and exits 0.

  1. CUDA path: one ResNet18 (k=16) trained, evaluated and its Hessian measured with
     workloads.experiment.train_and_measure on cuda, then a pair (Bezier curve, CKA, L2) with measure_pair;
     every number must be finite and the work must have allocated GPU memory.
  2. Calibration of orchestrator/estimate.py: the sustained FLOP/s of training ResNet18 k=64 at batch 128
     (compute-bound), and the fixed cost per SGD step from k=1 at batch 16 (launch-bound), both through
     workloads.train.train, the loop the sweeps use; written to benchmarks/gpu_rates.json (--rates-out), which
     estimate.py then uses instead of its assumed A10G figures.
  3. Memory: peak GPU memory of training steps at the largest batch for the widest width of each GPU share
     that paper-width-batch requests, against a 24 GB A10G's share (cluster.yaml's small workers).
  4. Cohorts (workloads/cohort_train.py): images/s and model FLOP utilisation (MFU: 3 x forward FLOPs per
     image x images/s over the GPU's dense bf16 peak, the convention of docs/perf_anchors.md) of training
     ResNet18 k in {4, 16, 64} at batch {16, 128, 1024}, one model at a time (workloads.train.train) vs a
     cohort of 5 (the seeds of a paper cell); at batch 128 also the torch.func backend and bf16, and at
     k=4, batch 16 a compiled cohort (CUDA graphs). cuDNN autotuning is on for both sides in this step.
     Also the host synchronisations of 64 cohort steps, counted by torch.cuda.set_sync_debug_mode (the
     divergence checks every 32 steps and the per-epoch bookkeeping; one per step would be a regression).
  5. A reduced paper sweep through the orchestrator (ResNet18 k in {4, 16} x batch {128, 512} x seeds
     {0, 1}: 8 models and 4 pairs, a few epochs, gpu 0.25 = four trials per GPU) on a private local Ray with
     this machine's GPUs, while nvidia-smi samples the utilisation every second: models/hour, pairs/hour,
     trials at once, mean and peak GPU utilisation.
It ends with a block of figures for the README (and the two calibration numbers for estimate.py).

--cpu-dry-run runs the same script logic on the CPU with a Ray-declared (fake) GPU and tiny stand-ins
(sklearn digits with an MLP for the sweep stages, a small random CIFAR-shaped set for the timed ResNet
steps: a CPU needs ~20 s just to evaluate a ResNet18 on CIFAR's 10000 test images), so the script itself is
tested on machines without a GPU (tests/test_gpu_benchmark.py); its figures mean nothing.
(Over 400 lines: one script for one GPU session, since a GPU is lent rarely and briefly.)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

A10G_BYTES = 24 * 1024**3  # cluster.yaml's g5 workers
SWEEP = {
    "name": "gpu-bench",
    "description": "benchmarks/gpu.py: reduced paper-width-batch on synthetic-cifar (NOT real data)",
    "workload": {"dataset": "synthetic-cifar", "model": "resnet18"},
    "load": {"name": "width", "values": [4, 16]},
    "temperature": {"name": "batch_size", "values": [128, 512]},
    "seeds": [0, 1],
    "training": {"epochs": 3, "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4},
    "metrics": {"hessian_samples": 1000, "hessian_eigen_max_iter": 100, "hessian_trace_max_probes": 100,
                "cka_probes": 768, "curve": {"epochs": 2, "lr": 0.01, "batch_size": 128, "points": 11}},
    "resources": {"cpu": 1, "gpu": 0.25},
    "run": {"max_failures": 0},
}


@dataclasses.dataclass
class Sizes:
    """What each step uses; the dry run shrinks everything."""

    device: str = "cuda"
    workload: dict = dataclasses.field(default_factory=lambda: dict(SWEEP["workload"]))  # steps 1 and 4
    widths: tuple = (4, 16)  # the packed sweep's load values
    batches: tuple = (128, 512)  # the packed sweep's temperature values
    small_data: bool = False  # step 2 on a small random CIFAR-shaped set instead of synthetic-cifar
    path_width: int = 16
    compute_width: int = 64
    compute_batch: int = 128
    overhead_width: int = 1
    overhead_batch: int = 16
    timed_steps: int = 60
    memory_cases: tuple = ((128, 1024, 1.0), (45, 1024, 0.5), (16, 1024, 0.25))  # (k, batch, GPU share)
    sweep_epochs: int = 3
    fake_gpus: int | None = None  # declare this many GPUs to Ray (dry run); None = Ray detects the real ones
    cohort_widths: tuple = (4, 16, 64)  # step 4
    cohort_batches: tuple = (16, 128, 1024)
    cohort_size: int = 5
    cohort_steps: int = 20  # timed SGD steps per measurement (after an untimed warm-up)
    variant_batch: int = 128  # the batch at which the torch.func backend and bf16 are measured too
    compiled_case: tuple | None = (4, 16)  # (k, batch) of the compiled-cohort measurement; None: skip


def dry_sizes() -> Sizes:
    return Sizes(device="cpu", workload={"dataset": "digits", "model": "mlp", "model_args": {"depth": 2}},
                 widths=(8, 16), batches=(32,), small_data=True, path_width=8, compute_width=2, compute_batch=32,
                 overhead_width=1, overhead_batch=16, timed_steps=5, memory_cases=(), sweep_epochs=1, fake_gpus=1,
                 cohort_widths=(2,), cohort_batches=(16, 32), cohort_size=2, cohort_steps=3, variant_batch=32,
                 compiled_case=None)


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def finite(*values) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


# ---------------------------------------------------------------------------------------------------------
# 1. The CUDA path of training, Hessian and curves


def cuda_path(sizes: Sizes) -> dict:
    import torch

    from orchestrator.config import parse_config
    from orchestrator.cells import cell_spec
    from workloads.experiment import ModelSpec, PairSpec, measure_pair, train_and_measure

    raw = {**SWEEP, "load": {"name": "width", "values": [sizes.path_width]},
           "temperature": {"name": "batch_size", "values": [sizes.batches[0]]},
           "training": {**SWEEP["training"], "epochs": 1},
           "metrics": {**SWEEP["metrics"], "hessian_eigen_max_iter": 20, "hessian_trace_max_probes": 10,
                       "curve": {**SWEEP["metrics"]["curve"], "epochs": 1, "points": 5}}}
    raw["workload"] = {**sizes.workload, "train_fraction": 0.2}  # a fifth of the data: this step checks, not times
    cfg = parse_config(raw)
    cell = cell_spec(cfg, sizes.path_width, sizes.batches[0])
    if sizes.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    outcomes = [train_and_measure(ModelSpec(cell, seed, sizes.device)) for seed in (0, 1)]
    trained = time.perf_counter()
    pair = measure_pair(PairSpec(cell, 0, 1, sizes.device), outcomes[0].state_dict, outcomes[1].state_dict)
    done = time.perf_counter()
    row = outcomes[0].row
    checks = {
        "training + metrics on the device": row["device"] == sizes.device and row["status"] == "ok",
        "losses and accuracies finite": finite(row["train_loss"], row["test_loss"], row["train_acc"], row["test_acc"]),
        "Hessian finite": finite(row["hessian_top_eigenvalue"], row["hessian_trace"]),
        "curve, CKA and L2 finite": pair.row["status"] == "ok" and finite(pair.row["mode_connectivity"],
                                                                         pair.row["cka"], pair.row["l2_distance"]),
        "curve points": len(pair.curve_rows) == 5,
    }
    peak = torch.cuda.max_memory_allocated() if sizes.device == "cuda" else 0
    if sizes.device == "cuda":
        checks["GPU memory was used"] = peak > 0
    for name, ok in checks.items():
        print(f"  {'ok ' if ok else 'BAD'} {name}")
    print(f"  2 models in {trained - started:.1f} s (lambda_max {row['hessian_top_eigenvalue']:.3g}, trace "
          f"{row['hessian_trace']:.3g}, {row['hessian_eigen_iterations']} HVPs), 1 pair in {done - trained:.1f} s "
          f"(mc {pair.row['mode_connectivity']:+.2f}), peak GPU memory {peak / 2**20:.0f} MiB")
    return {"ok": all(checks.values()), "checks": checks}


# ---------------------------------------------------------------------------------------------------------
# 2. Calibration: sustained FLOP/s and the fixed cost of a step, through the sweeps' own training loop


def _timed_training(sizes: Sizes, width: int, batch: int) -> tuple[float, int]:
    """(seconds per SGD step, steps) of workloads.train.train on a slice of synthetic-cifar."""
    import torch

    from workloads.data import load_dataset, subsample_train
    from workloads.models import seeded_model
    from workloads.train import TrainConfig, train

    data = _bench_data(sizes)
    steps = sizes.timed_steps
    fraction = min(1.0, batch * steps / data.train_size)
    part = subsample_train(data, fraction, seed=0)
    model = seeded_model("resnet18", 0, width=width, num_classes=10, input_shape=(3, 32, 32))
    config = TrainConfig(epochs=1, batch_size=batch, lr=0.01, device=sizes.device)
    warm = subsample_train(data, min(1.0, batch * 5 / data.train_size), seed=1)
    train(model, warm, config)  # cuDNN autotuning, allocator warm-up, lazy initialisation
    if sizes.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = train(model, part, config)
    if sizes.device == "cuda":
        torch.cuda.synchronize()
    taken = part.train_size // batch
    assert result.status == "ok", result.error
    return (time.perf_counter() - started) / taken, taken


_DATA = {}


def _bench_data(sizes: Sizes):
    """synthetic-cifar, or for the dry run 2000 random CIFAR-shaped images (made here, not registered)."""
    if "d" not in _DATA:
        if sizes.small_data:
            import torch

            from workloads.data import Dataset

            gen = torch.Generator().manual_seed(0)
            x, y = torch.randn(2000, 3, 32, 32, generator=gen), torch.arange(2000) % 10
            _DATA["d"] = Dataset("random-cifar-shaped", x, y, x[:200], y[:200], 10, {"train_size": 2000})
        else:
            from workloads.data import load_dataset

            _DATA["d"] = load_dataset("synthetic-cifar")
    return _DATA["d"]


def calibration(sizes: Sizes) -> dict:
    from orchestrator.estimate import DEFAULT_GPU, forward_flops

    per_step, steps = _timed_training(sizes, sizes.compute_width, sizes.compute_batch)
    fwd = forward_flops("resnet18", sizes.compute_width, (3, 32, 32), 10, ())
    rate = 3 * fwd * sizes.compute_batch / per_step
    print(f"  ResNet18 k={sizes.compute_width} batch {sizes.compute_batch}: {per_step * 1e3:.1f} ms/step over "
          f"{steps} steps -> {rate / 1e12:.3g} TFLOP/s sustained (estimate.py assumes "
          f"{DEFAULT_GPU.sustained_flops / 1e12:g})")
    overhead, steps = _timed_training(sizes, sizes.overhead_width, sizes.overhead_batch)
    print(f"  ResNet18 k={sizes.overhead_width} batch {sizes.overhead_batch}: {overhead * 1e3:.2f} ms/step over "
          f"{steps} steps = the fixed cost per step (estimate.py assumes {DEFAULT_GPU.step_overhead_s * 1e3:g} ms)")
    return {"sustained_flops": rate, "step_overhead_s": overhead}


# ---------------------------------------------------------------------------------------------------------
# 3. Memory of the largest requests


def memory(sizes: Sizes) -> list[dict]:
    import torch

    from workloads.models import seeded_model
    from workloads.train import TrainConfig, train

    data = _bench_data(sizes)
    out = []
    resident = (data.train_x.numel() + data.test_x.numel()) * 4  # a trial keeps its dataset on the GPU
    for width, batch, share in sizes.memory_cases:
        from workloads.data import subsample_train

        part = subsample_train(data, min(1.0, batch * 3 / data.train_size), seed=0)
        model = seeded_model("resnet18", 0, width=width, num_classes=10, input_shape=(3, 32, 32))
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            train(model, part, TrainConfig(epochs=1, batch_size=batch, lr=0.01, device="cuda"))
            peak = torch.cuda.max_memory_allocated() - (part.train_x.numel() + part.test_x.numel()) * 4 + resident
            error = None
        except Exception as exc:  # an OOM on this GPU is a finding, not a crash of the benchmark
            peak, error = float("nan"), f"{type(exc).__name__}: {str(exc)[:120]}"
        del model
        budget = A10G_BYTES * share
        fits = error is None and peak <= budget
        print(f"  k={width:<3} batch {batch}: peak {peak / 2**30:.1f} GiB with the full dataset resident "
              f"(A10G share {share:g} = {budget / 2**30:.0f} GiB): {'fits' if fits else 'DOES NOT FIT'}"
              + (f" ({error})" if error else ""))
        out.append({"width": width, "batch": batch, "share": share, "peak": peak, "fits": fits})
    return out


# ---------------------------------------------------------------------------------------------------------
# 4. Cohorts vs one model at a time

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from NVIDIA's datasheets, matched by substring of the
# device name in this order; other devices print rates without a utilisation unless --peak-tflops is given.
BF16_DENSE_PEAK = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for fragment, peak in BF16_DENSE_PEAK:
        if fragment in device_name:
            return peak
    return None


def _cohort_variants(sizes: Sizes, width: int, batch: int) -> list[tuple[str, object]]:
    """(label, Execution or None for one model at a time) measured at (width, batch)."""
    from workloads.cohort_train import Execution

    out = [("one at a time", None), (f"cohort of {sizes.cohort_size}", Execution(backend="grouped"))]
    if batch == sizes.variant_batch:
        out += [("cohort, torch.func", Execution(backend="vmap")),
                ("cohort, bf16", Execution(backend="grouped", precision="bf16"))]
    if sizes.compiled_case == (width, batch):
        out.append(("cohort, compiled (CUDA graphs)", Execution(backend="grouped", compile="reduce-overhead")))
    return out


def _images_per_second(sizes: Sizes, part, width: int, batch: int, execution) -> float:
    """Training images per second: one model (execution None) or a cohort of sizes.cohort_size."""
    import torch

    from workloads.cohort_net import build_cohort_net
    from workloads.cohort_train import train_cohort
    from workloads.models import seeded_model
    from workloads.train import TrainConfig, train

    members = 1 if execution is None else sizes.cohort_size
    models = [seeded_model("resnet18", s, width=width, num_classes=10, input_shape=(3, 32, 32))
              for s in range(members)]
    configs = [TrainConfig(epochs=1, batch_size=batch, lr=0.01, seed=s, device=sizes.device) for s in range(members)]
    warm = dataclasses.replace(part, train_x=part.train_x[:batch * 3], train_y=part.train_y[:batch * 3])

    def run(data):
        if execution is None:
            train(models[0], data, configs[0])
        else:
            net = build_cohort_net(models[0], [m.state_dict() for m in models], execution.backend, sizes.device)
            train_cohort(net, data.train_x, data.train_y, configs, execution=execution)

    run(warm if execution is None or execution.compile == "off" else part)  # autotuning, compilation
    if sizes.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(part)
    if sizes.device == "cuda":
        torch.cuda.synchronize()
    return members * batch * (part.train_size // batch) / (time.perf_counter() - started)


def host_syncs(sizes: Sizes, steps: int = 64) -> int | None:
    """Synchronising CUDA calls made while a cohort of 2 (ResNet18 k=4, batch 16) trains ``steps`` steps."""
    if sizes.device != "cuda":
        return None
    import warnings

    import torch

    from workloads.cohort_net import build_cohort_net
    from workloads.cohort_train import train_cohort
    from workloads.models import seeded_model
    from workloads.train import TrainConfig

    data = _bench_data(sizes).to(sizes.device)
    x, y = data.train_x[:16 * steps], data.train_y[:16 * steps]
    models = [seeded_model("resnet18", s, width=4, num_classes=10, input_shape=(3, 32, 32)) for s in (0, 1)]
    configs = [TrainConfig(epochs=1, batch_size=16, lr=0.01, seed=s, device="cuda") for s in (0, 1)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models], "grouped", "cuda")
    train_cohort(net, x[:32], y[:32], configs)  # lazy initialisation outside the count
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_cohort(net, x, y, configs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def cohorts(sizes: Sizes, peak: float | None) -> list[dict]:
    import torch

    from orchestrator.estimate import forward_flops
    from workloads.train import TrainingOOMError

    data = _bench_data(sizes).to(sizes.device)  # resident on the device, as a cohort trial keeps it
    cudnn = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    rows = []
    try:
        for width in sizes.cohort_widths:
            flops = 3 * forward_flops("resnet18", width, (3, 32, 32), 10, ())  # per training image
            for batch in sizes.cohort_batches:
                n = min(data.train_size, batch * sizes.cohort_steps)
                part = dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
                alone = None
                for label, execution in _cohort_variants(sizes, width, batch):
                    try:
                        rate, error = _images_per_second(sizes, part, width, batch, execution), None
                    except (torch.cuda.OutOfMemoryError, TrainingOOMError) as exc:
                        rate, error = None, f"does not fit ({type(exc).__name__})"
                    if sizes.device == "cuda":
                        torch.cuda.empty_cache()
                    alone = rate if execution is None else alone
                    mfu = f", MFU {rate * flops / peak:.1%}" if rate and peak else ""
                    gain = f", x{rate / alone:.2f} one at a time" if rate and alone and execution is not None else ""
                    shown = error or f"{rate:,.0f} images/s{mfu}{gain}"
                    print(f"  ResNet18 k={width:<3} batch {batch:<5} {label:<31}: {shown}", flush=True)
                    rows.append({"width": width, "batch": batch, "variant": label, "images_per_s": rate,
                                 "mfu": rate * flops / peak if rate and peak else None, "error": error})
    finally:
        torch.backends.cudnn.benchmark = cudnn
    return rows


# ---------------------------------------------------------------------------------------------------------
# 5. A reduced paper sweep, packed four to a GPU, with utilisation sampled


class GpuSampler:
    """nvidia-smi every second in a thread: utilisation (%) and memory used (MiB) per GPU."""

    def __init__(self):
        self.samples: list[list[tuple[float, float]]] = []
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                text = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                      timeout=10).stdout
                rows = [tuple(float(v) for v in line.split(",")) for line in text.strip().splitlines() if line]
                if rows:
                    self.samples.append(rows)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(1.0)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join(timeout=15)

    def summary(self) -> str:
        if not self.available:
            return "unavailable (no nvidia-smi)"
        if not self.samples:
            return "no samples"
        util = [u for rows in self.samples for u, _ in rows]
        mem = [m for rows in self.samples for _, m in rows]
        return (f"mean {statistics.mean(util):.0f}%, peak {max(util):.0f}% over {len(self.samples)} samples; "
                f"memory up to {max(mem):.0f} MiB")


def packed_sweep(sizes: Sizes, keep: str | None) -> dict:
    from analysis.tables import RunTables
    from orchestrator import ray_env, resources, storage
    from orchestrator.config import parse_config
    from orchestrator.sweep import run_sweep

    raw = {**SWEEP, "workload": sizes.workload, "load": {"name": "width", "values": list(sizes.widths)},
           "temperature": {"name": "batch_size", "values": list(sizes.batches)},
           "training": {**SWEEP["training"], "epochs": sizes.sweep_epochs}}
    cfg = parse_config(raw)
    run_dir = keep or tempfile.mkdtemp(prefix="gpu-bench-")
    ray_tmp = os.path.join("/tmp", f"ray-gpub-{uuid.uuid4().hex[:6]}")
    os.makedirs(ray_tmp)
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=ray_tmp)
    os.environ.pop("RAY_ADDRESS", None)
    cpus = os.cpu_count() or 1
    if sizes.fake_gpus:
        cpus = max(cpus, 4)  # room for four quarter-GPU trials of 1 CPU each in the dry run
    ray_env.init_ray(None, object_store_mb=256, num_cpus=cpus, num_gpus=sizes.fake_gpus)
    try:
        import ray

        plan = resources.check_resources(cfg)
        for line in resources.describe_plan(cfg, plan):
            print(f"  {line}")
        storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
        info, _ = storage.ensure_run_info(run_dir, cfg.name)
        with GpuSampler() as sampler:
            summary = run_sweep(cfg, run_dir, run_id=info["run_id"], resources=plan)
        ray.shutdown()
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    models = RunTables(run_dir).read("models")
    pairs = RunTables(run_dir).read("pairs")
    hours = summary.seconds / 3600
    ok_models, ok_pairs = int((models.status == "ok").sum()), int((pairs.status == "ok").sum())
    devices = sorted(set(models.device.dropna()) | set(pairs.device.dropna()))
    at_once = min(plan["trials_at_once"].values())
    print(f"  {ok_models}/{len(cfg.model_keys())} models and {ok_pairs}/{len(cfg.pair_keys())} pairs ok in "
          f"{summary.seconds:.0f} s, {at_once} trials at once; devices: {', '.join(devices)}")
    print(f"  {ok_models / hours:.0f} models/hour, {ok_pairs / hours:.0f} pairs/hour "
          f"({sizes.sweep_epochs} epochs each, {cfg.workload.model} on {cfg.workload.dataset})")
    print(f"  GPU utilisation: {sampler.summary()}")
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"ok": ok_models == len(cfg.model_keys()) and ok_pairs == len(cfg.pair_keys()),
            "models_per_hour": ok_models / hours, "pairs_per_hour": ok_pairs / hours, "seconds": summary.seconds,
            "at_once": at_once, "devices": devices, "utilisation": sampler.summary()}


# ---------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model of the packed sweep (default 3)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep the packed sweep's run directory here")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of this GPU for the utilisation (default: datasheet table)")
    parser.add_argument("--skip-sweep", action="store_true", help="leave out step 5 (the packed sweep on Ray)")
    parser.add_argument("--rates-out", default=None, metavar="PATH",
                        help="where step 2's rates are written for orchestrator/estimate.py (default on a GPU: "
                             "benchmarks/gpu_rates.json; the dry run writes only when given)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="test the script on the CPU with tiny sizes and a fake GPU (figures mean nothing)")
    args = parser.parse_args(argv)

    import torch

    if args.cpu_dry_run:
        sizes = dry_sizes()
    elif not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): nothing to benchmark. "
              "Run this on a machine with an NVIDIA GPU (or --cpu-dry-run to test the script).")
        return 0
    else:
        sizes = Sizes()
    if args.epochs:
        sizes.sweep_epochs = args.epochs
    if sizes.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s); "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print("CPU DRY RUN: tiny sizes, a fake GPU declared to Ray; the figures mean nothing")
    started = time.perf_counter()
    section("1. CUDA path: training, metrics, Hessian, curve")
    path = cuda_path(sizes)
    section("2. Calibration of orchestrator/estimate.py")
    calib = calibration(sizes)
    from orchestrator.estimate import MEASURED_RATES_PATH, write_measured_rates

    rates_out = args.rates_out or (MEASURED_RATES_PATH if sizes.device == "cuda" else None)
    if rates_out:
        name = torch.cuda.get_device_name(0) if sizes.device == "cuda" else "CPU dry run (figures mean nothing)"
        write_measured_rates(rates_out, name, calib["sustained_flops"], calib["step_overhead_s"],
                             time.strftime("%Y-%m-%d", time.gmtime()))
        print(f"  rates written to {rates_out}: `landscape validate` estimates from them from now on")
    mem = []
    if sizes.memory_cases:
        section("3. Memory of the largest requests (paper-width-batch)")
        mem = memory(sizes)
    section(f"4. Cohorts vs one at a time (ResNet18, {sizes.cohort_steps} timed steps each)")
    device_name = torch.cuda.get_device_name(0) if sizes.device == "cuda" else "CPU dry run"
    peak = peak_flops(device_name, args.peak_tflops)
    print(f"  utilisation against a dense bf16 peak of {peak / 1e12:g} TFLOP/s" if peak
          else "  no known peak for this device: rates only (--peak-tflops sets one)")
    cohort_rows = cohorts(sizes, peak)
    syncs = host_syncs(sizes)
    print(f"  host synchronisations in 64 cohort steps: {'n/a (no CUDA)' if syncs is None else syncs}")
    sweep = {"ok": True, "skipped": True}
    if not args.skip_sweep:
        section("5. Reduced paper sweep, four trials per GPU")
        if sizes.device == "cuda":
            _DATA.clear()
            torch.cuda.empty_cache()  # this process's cached blocks would otherwise be missing to the trials
        sweep = packed_sweep(sizes, args.keep)

    section("Summary (for the README)")
    print(f"  device: {torch.cuda.get_device_name(0) if sizes.device == 'cuda' else 'CPU dry run'}")
    print(f"  CUDA path: {'ok' if path['ok'] else 'FAILED'}")
    print(f"  sustained {calib['sustained_flops'] / 1e12:.3g} TFLOP/s (ResNet18 k={sizes.compute_width}, batch "
          f"{sizes.compute_batch}); fixed cost {calib['step_overhead_s'] * 1e3:.2f} ms/step "
          f"-> orchestrator/estimate.py DEFAULT_GPU")
    for m in mem:
        print(f"  memory k={m['width']} batch {m['batch']}: {m['peak'] / 2**30:.1f} GiB "
              f"({'fits' if m['fits'] else 'does NOT fit'} {m['share']:g} of an A10G)")
    print(f"  cohort host synchronisations in 64 steps: {'n/a' if syncs is None else syncs}")
    for r in cohort_rows:
        mfu = f" (MFU {r['mfu']:.1%})" if r["mfu"] is not None else ""
        shown = r["error"] or f"{r['images_per_s']:,.0f} images/s{mfu}"
        print(f"  cohort step: ResNet18 k={r['width']} batch {r['batch']} {r['variant']}: {shown}")
    if not sweep.get("skipped"):
        print(f"  packed sweep: {sweep['models_per_hour']:.0f} models/hour, {sweep['pairs_per_hour']:.0f} pairs/hour, "
              f"{sweep['at_once']} trials at once, GPU utilisation {sweep['utilisation']}")
    print(f"  total {time.perf_counter() - started:.0f} s")
    cohorts_ok = all(r["images_per_s"] or r["error"] for r in cohort_rows)
    return 0 if path["ok"] and sweep["ok"] and cohorts_ok else 1


if __name__ == "__main__":
    sys.exit(main())
