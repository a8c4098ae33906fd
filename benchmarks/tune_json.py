"""What Tune's JSON logger costs a sweep (should it be on by default? #23 item 2): the same sweep with and
without it, side by side in one process, and the logger's own cost per report of a large cohort.

    python benchmarks/tune_json.py [--config smoke] [--epochs 20] [--repeats 3] [--keep DIR]

1. The sweep: CONFIG (default: the built-in smoke grid, 8 models in cohorts and 4 pairs, here with EPOCHS epochs
   so that every trial reports many times) run through orchestrator.driver.sweep.run_sweep on one private local Ray
   started once by this process, REPEATS times each way, alternating which goes first (a change of the
   machine's load falls on both): ``logging: []`` (the default now) and ``logging: [json]`` (Tune's
   JsonLoggerCallback: params.json, params.pkl and one result.json line per report per trial). It prints
   each sweep's wall time (run_sweep's own: Tune's start and end included, Ray's start-up not) and the ratio
   of the sums, json / none.
2. The logger alone, driver side (Tune's callbacks run in the driver's event loop, between results): the
   reports of one cohort trial of MEMBERS models (default 21, the demo's largest) for 60 epochs, as the sweep
   makes them (orchestrator.worker.history.epoch_result with every member's label) and its final result, fed to
   JsonLoggerCallback; it prints the milliseconds per report and the bytes written per trial.
Timings on a machine shared with other work are indicative only: re-run on idle cores to quote them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def one_sweep(cfg, run_dir: str) -> float:
    from orchestrator.cluster.resources import check_resources
    from orchestrator.driver.sweep import run_sweep

    summary = run_sweep(cfg, run_dir, run_id=uuid.uuid4().hex[:12], resources=check_resources(cfg, node_types=[]))
    done = len(summary.plan_after.models_done), len(summary.plan_after.pairs_done)
    if summary.plan_after.models_todo or summary.plan_after.pairs_todo:
        raise SystemExit(f"error: the sweep in {run_dir} did not finish ({done} done)")
    return summary.seconds


def sweeps(config: str, epochs: int, repeats: int, root: str) -> None:
    from orchestrator.cluster import ray_env
    from orchestrator.config import load_config

    base = load_config(config, [f"training.epochs={epochs}"])
    variants = {"none": load_config(config, [f"training.epochs={epochs}", "logging=[]"]),
                "json": load_config(config, [f"training.epochs={epochs}", "logging=[json]"])}
    ray_env.apply_hygiene_env()
    ray_env.init_ray(None, object_store_mb=base.run.object_store_mb)
    try:
        one_sweep(variants["none"], os.path.join(root, "warm-up"))  # workers, imports, data: not counted
        seconds = {name: [] for name in variants}
        for r in range(repeats):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                s = one_sweep(variants[name], os.path.join(root, f"{name}-{r}"))
                seconds[name].append(s)
                print(f"  sweep {r + 1}/{repeats} logging={name:4s} {s:6.2f} s", flush=True)
    finally:
        import ray

        ray.shutdown()
    total = {name: sum(values) for name, values in seconds.items()}
    print(f"{config}, {epochs} epochs, {repeats} sweeps each: none {total['none']:.2f} s, json {total['json']:.2f} s, "
          f"ratio json/none {total['json'] / total['none']:.3f}")


def logger_alone(members: int, epochs: int, root: str) -> None:
    from ray.tune.logger import JsonLoggerCallback

    from orchestrator.worker.history import epoch_result

    class Trial:  # what JsonLoggerCallback reads of a trial
        def __init__(self, path):
            self.local_path, self.config, self.evaluated_params = path, {"kind": "model"}, {}
            self.checkpoint = None
            os.makedirs(path, exist_ok=True)

        def init_local_path(self):
            os.makedirs(self.local_path, exist_ok=True)

    labels = [f"seed_{m}" for m in range(members)]
    entry = {"epoch": 0, "lr": 0.1, "train_loss": 1.2345678, "train_acc": 0.5432, "seconds": 0.25,
             "test_loss": 1.3456789, "test_acc": 0.4321}
    reports = [epoch_result("models-0", [{**entry, "epoch": e, "member": m} for m in range(members)], labels)
               for e in range(epochs)]
    final = {"kind": "model", "key": "models-0", "status": "ok",
             "members": [{"key": f"k{m}", "status": "ok", "test_acc": 0.5, "hessian_trace": 10.0}
                         for m in range(members)],
             **{f"{label}/{name}": 0.5 for label in labels for name in ("test_acc", "hessian_top_eigenvalue")}}
    trials = 20
    callback = JsonLoggerCallback()
    started = time.perf_counter()
    for t in range(trials):
        trial = Trial(os.path.join(root, f"trial-{t}"))
        callback.log_trial_start(trial)
        for i, result in enumerate(reports + [final]):
            callback.log_trial_result(i + 1, trial, {**result, "training_iteration": i + 1, "config": trial.config})
        callback.log_trial_end(trial)
    seconds = time.perf_counter() - started
    size = sum(os.path.getsize(os.path.join(root, "trial-0", f)) for f in os.listdir(os.path.join(root, "trial-0")))
    per_report = seconds / (trials * (epochs + 1)) * 1e3
    print(f"JsonLoggerCallback alone: a cohort of {members} models, {epochs} epochs: {per_report:.3f} ms per report "
          f"(driver), {size / 1024:.0f} KiB per trial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="smoke")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=21)
    parser.add_argument("--keep", default=None, help="keep the run directories here")
    args = parser.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="tune-json-")
    try:
        logger_alone(args.members, 60, os.path.join(root, "logger"))
        sweeps(args.config, args.epochs, args.repeats, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
