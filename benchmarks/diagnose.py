"""What `landscape diagnose` costs for the demo's model sizes, with its default settings (the demo's metrics).

    python benchmarks/diagnose.py [--widths 8,256] [--checkpoints 2,3] [--threads 1] [--epochs 20]

Trains max(--checkpoints) MLPs 40-w-w-10 per width on MNIST-1D (batch 64, lr 0.05, no weight decay, --epochs
epochs: diagnose's cost does not depend on how well they are trained, beyond the Hessian's iteration counts),
then runs the real command, `landscape diagnose CKPT... --model mlp --width W --data mnist1d --json`, in a fresh
process for every (width, number of checkpoints, threads) and prints its wall time (imports included) with the
run's own split: per-model metrics (evaluation + Hessian) and per-pair (Bezier curve + CKA + L2). The issue's
target is under a minute on 2 cores. With --threads 1,2 the thread counts run side by side and the ratio is
printed (2 threads on a busy machine can be many times slower for these sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def train_checkpoints(folder: str, width: int, count: int, epochs: int) -> list[str]:
    import torch

    from workloads.data import load_dataset
    from workloads.models import seeded_model
    from workloads.train import TrainConfig, train

    torch.set_num_threads(1)
    data = load_dataset("mnist1d")
    paths = []
    for seed in range(count):
        model = seeded_model("mlp", seed, width=width, num_classes=10, input_shape=data.input_shape)
        result = train(model, data, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, weight_decay=0.0, seed=seed))
        paths.append(os.path.join(folder, f"w{width}-seed{seed}.pt"))
        torch.save(result.model.state_dict(), paths[-1])
    return paths


def landscape_cmd() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "landscape")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "orchestrator.cli.main"]


def timed_diagnose(paths: list[str], width: int, threads: int) -> tuple[float, dict]:
    """(wall seconds of the command, its --json result)."""
    cmd = [*landscape_cmd(), "diagnose", *paths, "--model", "mlp", "--width", str(width), "--data", "mnist1d",
           "--threads", str(threads), "--device", "cpu", "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"diagnose failed: {proc.stderr.strip()}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=_ints, default=[8, 256], help="MLP widths (the demo spans 8..256)")
    parser.add_argument("--checkpoints", type=_ints, default=[2, 3], help="numbers of checkpoints to diagnose")
    parser.add_argument("--threads", type=_ints, default=[1], help="torch threads, e.g. 1,2 to compare")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the benchmark's models")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-diagnose-") as folder:
        for width in args.widths:
            paths = train_checkpoints(folder, width, max(args.checkpoints), args.epochs)
            for count in args.checkpoints:
                walls = {}
                for threads in args.threads:
                    wall, result = timed_diagnose(paths[:count], width, threads)
                    walls[threads] = wall
                    models = sum(m["metrics_seconds"] for m in result["models"])
                    pairs = sum(p["seconds"] for p in result["pairs"])
                    print(f"width {width:>4}, {count} checkpoints, {threads} thread(s): {wall:6.1f} s wall "
                          f"(models {models:5.1f} s, {len(result['pairs'])} pairs {pairs:5.1f} s, rest: imports, "
                          f"data, loading) -> phase {result['phase']}")
                if len(walls) > 1:
                    base = args.threads[0]
                    ratios = ", ".join(f"{t} threads / {base}: {walls[t] / walls[base]:.2f}" for t in args.threads[1:])
                    print(f"    {ratios}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
