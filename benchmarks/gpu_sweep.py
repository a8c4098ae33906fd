"""benchmarks/gpu.py --with-sweep: the CUDA path of every stage and a reduced paper sweep packed four trials per GPU
on a private local Ray, while nvidia-smi samples the utilisation. Imported only with --with-sweep, after checking
that Ray and yaml are installed (the GPU machine's bare image has neither): it needs the installed project.

  a. CUDA path: one ResNet18 (k=16) trained, evaluated and its Hessian measured with
     workloads.experiment.train_and_measure on cuda, then a pair (Bezier curve, CKA, L2) with measure_pair;
     every number must be finite and the work must have allocated GPU memory.
  b. A reduced paper sweep through the orchestrator (ResNet18 k in {4, 16} x batch {128, 512} x seeds {0, 1}: 8
     models and 4 pairs, a few epochs, gpu 0.25 = four trials per GPU): models/hour, pairs/hour, trials at once,
     mean and peak GPU utilisation.
The dry run uses sklearn's digits with an MLP and a Ray-declared (fake) GPU; its figures mean nothing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid

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
    device: str = "cuda"
    workload: dict = dataclasses.field(default_factory=lambda: dict(SWEEP["workload"]))
    widths: tuple = (4, 16)  # the packed sweep's load values
    batches: tuple = (128, 512)  # the packed sweep's temperature values
    path_width: int = 16
    sweep_epochs: int = 3
    fake_gpus: int | None = None  # declare this many GPUs to Ray (dry run); None = Ray detects the real ones


def dry_sizes() -> Sizes:
    return Sizes(device="cpu", workload={"dataset": "digits", "model": "mlp", "model_args": {"depth": 2}},
                 widths=(8, 16), batches=(32,), path_width=8, sweep_epochs=1, fake_gpus=1)


def finite(*values) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in values)


def run(dry_run: bool, keep: str | None, epochs: int | None) -> dict:
    """Both steps; {"ok": ..., "note": one line for the summary}."""
    sizes = dry_sizes() if dry_run else Sizes()
    if epochs:
        sizes.sweep_epochs = epochs
    print("  a. CUDA path: training, metrics, Hessian, curve")
    path = cuda_path(sizes)
    print("  b. reduced paper sweep, four trials per GPU")
    sweep = packed_sweep(sizes, keep)
    note = (f"CUDA path {'ok' if path['ok'] else 'FAILED'}; packed sweep {sweep['models_per_hour']:.0f} models/hour, "
            f"{sweep['pairs_per_hour']:.0f} pairs/hour, {sweep['at_once']} trials at once, GPU utilisation "
            f"{sweep['utilisation']}")
    return {"ok": path["ok"] and sweep["ok"], "note": note}


def cuda_path(sizes: Sizes) -> dict:
    import torch

    from orchestrator.config import parse_config
    from orchestrator.planning.cells import cell_spec
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
    from orchestrator.cluster import ray_env, resources
    from orchestrator.rundir import storage
    from orchestrator.config import parse_config
    from orchestrator.driver.sweep import run_sweep

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
        for line in resources.describe_capacity(cfg, plan):
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
