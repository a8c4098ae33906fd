"""What the training history and the live view cost: the demo's model jobs with and without them, side by side.

    python benchmarks/history.py [--epochs N] [--repeats R] [--widths 32,64,128,256]

Each job is a model job of the built-in demo (MNIST-1D MLP, weight decay 1e-3, seed 0, its 60 epochs, its
Hessian settings), run as a Tune trial on a private local Ray in this one process, one trial at a time:
  with     what a sweep's model job now does: the test set evaluated at the epochs of training.eval_every
           (auto: 5), every epoch reported to Tune (orchestrator/history.epoch_reporter: a blocking
           tune.report each), the history part written (orchestrator/history.write_history)
  without  the job as before: no evaluation during training (workloads.cohort_train.eval_epochs replaced by an
           empty set inside this benchmark's own workers), no epoch reports, no history part
Both end with the same final tune.report. The variants alternate (with/without, then without/with) per
repeat and width, so a change of the machine's load falls on both; a first uncounted job warms the worker up. It prints each job's wall time (the
trainable's own, from building the data to the last write), its CPU time, and the ratios of the sums: the issue's budget is
<= 1.05. Timings on a machine shared with other work are only indicative: re-run on idle cores to quote them.
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

WEIGHT_DECAY = 1e-3  # a middle row of the demo's grid


def bench_job(config: dict) -> None:
    """The Tune trainable: one model job of the demo, config["job"] naming its width and its variant
    ("with" | "without")."""
    import torch
    from ray import tune

    import workloads.cohort_train as engine
    from analysis.tables import RunTables
    from orchestrator.planning.cells import cell_spec
    from orchestrator.config import load_config
    from orchestrator.worker.history import epoch_reporter, write_history
    from orchestrator.planning.jobs import mkey
    from workloads.experiment import ModelSpec, train_and_measure
    from workloads.settings import eval_epochs

    torch.set_num_threads(1)
    config = config["job"]
    cfg = load_config("demo", [f"training.epochs={config['epochs']}"], check_data=False)
    lv, tv, seed = config["load"], config["temperature"], 0
    key = mkey(cfg, lv, tv, seed)
    spec = ModelSpec(cell_spec(cfg, lv, tv), seed, "cpu")
    with_history = config["variant"] == "with"
    # The reference is the job before the history existed: no test evaluation during training at all.
    engine.eval_epochs = eval_epochs if with_history else (lambda epochs, every: frozenset())
    started, cpu_started = time.perf_counter(), time.process_time()
    if with_history:
        report = epoch_reporter(key)
        outcome = train_and_measure(spec, epoch_fn=report)
        write_history(RunTables(config["run_dir"]), key, {"run_id": "bench", "schema_version": 1}, spec.cell.keys(),
                      seed, outcome.history)
    else:
        outcome = train_and_measure(spec)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    tune.report({"variant": config["variant"], "width": lv, "wall_seconds": wall, "cpu_seconds": cpu,
                 "status": outcome.status,
                 "test_acc": outcome.row["test_acc"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60, help="training epochs per job (the demo's: 60)")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of (with, without) per width")
    parser.add_argument("--widths", default="32,64,128,256", help="demo widths to run")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix=f"bench-history-{uuid.uuid4().hex[:6]}-", dir="/tmp")
    os.environ.update({"RAY_TMPDIR": os.path.join(tmp, "ray"), "RAY_AUTH_MODE": "disabled"})
    os.makedirs(os.environ["RAY_TMPDIR"])
    from orchestrator.cluster.ray_env import init_ray

    import ray
    from ray import tune

    init_ray(None, object_store_mb=128, num_cpus=1)
    try:
        # A first job warms the worker up (imports, data generation) and is not counted.
        jobs = [{"variant": "warm-up", "load": 32.0, "temperature": WEIGHT_DECAY, "epochs": 1,
                 "run_dir": os.path.join(tmp, "run")}]
        for repeat in range(args.repeats):
            for i, width in enumerate(float(w) for w in args.widths.split(",")):
                order = ("with", "without") if (repeat + i) % 2 == 0 else ("without", "with")
                jobs += [{"variant": v, "load": width, "temperature": WEIGHT_DECAY, "epochs": args.epochs,
                          "run_dir": os.path.join(tmp, "run")} for v in order]
        tuner = tune.Tuner(
            bench_job,
            param_space={"job": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=os.path.join(tmp, "tune"), verbose=0),
        )
        results = tuner.fit()
        rows = [r.metrics for r in results if r.metrics.get("variant") != "warm-up"]
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    bad = [r for r in rows if r.get("status") != "ok"]
    if bad:
        raise SystemExit(f"{len(bad)} job(s) did not train: {bad[0]}")
    print(f"demo model jobs, weight decay {WEIGHT_DECAY:g}, {args.epochs} epochs, 1 thread, one job at a time")
    for measure in ("wall_seconds", "cpu_seconds"):
        print(f"\n{measure} (sums over {args.repeats} repeat(s); cpu = the worker process's CPU time, less "
              f"sensitive to other load)")
        print(f"{'width':>6} {'with':>9} {'without':>9} {'ratio':>6}")
        total = {"with": 0.0, "without": 0.0}
        for width in sorted({r["width"] for r in rows}):
            mine = {v: sum(r[measure] for r in rows if r["width"] == width and r["variant"] == v) for v in total}
            for v in total:
                total[v] += mine[v]
            print(f"{width:>6g} {mine['with']:>9.2f} {mine['without']:>9.2f} {mine['with'] / mine['without']:>6.3f}")
        print(f"total  {total['with']:>9.2f} {total['without']:>9.2f} {total['with'] / total['without']:>6.3f}"
              f"  (budget <= 1.05)")


if __name__ == "__main__":
    main()
