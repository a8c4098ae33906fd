"""What a training checkpoint costs against an epoch: the demo's largest cohort, in one process.

    python benchmarks/checkpoint_cost.py [CONFIG] [--set KEY=VALUE ...] [--epochs 4] [--threads 1]

The cohort is the one the sweep would form of the config's widest cell row (orchestrator.planning.cohorts.model_cohorts;
the demo: 21 models). It is trained for --epochs epochs as a sweep's worker trains it (workloads.cohort_train),
writing its checkpoint after every epoch through the sweep's own writer (orchestrator.worker.trainable.checkpoint_writer
into a temporary run directory); which setting triggers a checkpoint does not change what one costs. Per epoch:
  epoch       the training steps of the epoch (its history's ``seconds``)
  checkpoint  from the end of the epoch's bookkeeping (epoch_fn) to the written file: the CPU copy of the cohort
              (workloads.cohort_checkpoint.checkpoint_state), torch.save and the atomic write
The medians, their ratio, and what one checkpoint every ``training.checkpoint_minutes`` (5, the default; 1 and
15 too) adds to a training, as a percentage: checkpoint / (interval + checkpoint).
Timings taken while other processes load the machine are noisy; the ratio is what this script is for.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def largest_cohort(cfg) -> list[tuple]:
    """The keys of the cohort the sweep forms for the widest load value (ties: the first)."""
    from orchestrator.planning.cohorts import model_cohorts

    cohorts = model_cohorts(cfg, cfg.model_keys())
    return max(cohorts, key=lambda keys: (max(k[0] for k in keys), len(keys)))


def measure(cfg, keys: list[tuple], run_dir: str) -> tuple[list[float], list[float], int]:
    """(epoch seconds, checkpoint seconds, checkpoint bytes) of training the cohort ``keys``."""
    import torch

    from orchestrator.rundir import storage
    from orchestrator.planning.cells import cell_spec
    from orchestrator.planning.jobs import cohort_id, mkey
    from orchestrator.worker.job_io import checkpoint_writer
    from workloads.cohort_experiment import member_datasets, member_key
    from workloads.cohort_net import build_cohort_net
    from workloads.cohort_train import train_cohort
    from workloads.specs import ModelSpec

    specs = [ModelSpec(cell_spec(cfg, lv, tv), seed, "cpu") for lv, tv, seed in keys]
    cells = [s.cell for s in specs]
    datasets = member_datasets(cells)
    models = [cell.build_model(s.seed, ds) for cell, s, ds in zip(cells, specs, datasets)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    configs = [cell.train_config(s.seed, "cpu") for cell, s in zip(cells, specs)]
    train_y = torch.stack([ds.train_y for ds in datasets])
    ckpt = storage.checkpoint_uri(run_dir, cohort_id("models", [mkey(cfg, *k) for k in keys]))
    write = checkpoint_writer(cfg, ckpt, {}, [mkey(cfg, *k) for k in keys])
    assert write is not None, "checkpoints are off in this config (training.checkpoint_every and _minutes 0)"
    epoch_done, costs = [0.0], []

    def epoch_fn(entries):
        epoch_done[0] = time.perf_counter()

    def checkpoint_fn(state):
        write(state)
        costs.append(time.perf_counter() - epoch_done[0])

    result = train_cohort(net, datasets[0].train_x, train_y, configs, checkpoint_fn=checkpoint_fn,
                          members=[member_key(s) for s in specs], epoch_fn=epoch_fn)
    epochs = [entry["seconds"] for entry in result.histories[0]]
    return epochs, costs, os.path.getsize(ckpt)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="demo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=4, help="epochs trained (the first is left out: warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a trial has 1 CPU by default)")
    args = parser.parse_args(argv)

    import torch

    from orchestrator.config import load_config

    torch.set_num_threads(args.threads)
    # Checkpoints after every epoch, whatever the config says: each one is timed; a time-triggered one is the same.
    cfg = load_config(args.config, args.set + [f"training.epochs={args.epochs}", "training.checkpoint_every=1"])
    keys = largest_cohort(cfg)
    print(f"{cfg.name}: a cohort of {len(keys)} models (width {keys[0][0]:g}, {cfg.workload.model} on "
          f"{cfg.workload.dataset}), {args.epochs} epochs, {args.threads} thread(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="ckpt-cost-") as run_dir:
        epochs, costs, size = measure(cfg, keys, run_dir)
    epoch, cost = statistics.median(epochs[1:] or epochs), statistics.median(costs[1:] or costs)
    print(f"  epoch (training steps)  median {epoch:.3f} s   {', '.join(f'{s:.3f}' for s in epochs)}")
    print(f"  checkpoint ({size / 1e6:.1f} MB)  median {cost:.3f} s   {', '.join(f'{s:.3f}' for s in costs)}")
    print(f"  checkpoint / epoch = {cost / epoch:.3f}")
    for minutes in (1, 5, 15):
        print(f"  one checkpoint every {minutes:>2} min adds {100 * cost / (60 * minutes + cost):.3f}% to a training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
