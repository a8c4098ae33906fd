"""Pilot sweeps in one process, without Ray: every model and pair of a config, one after the other.

    python scripts/pilot.py CONFIG [--set KEY=VALUE ...] --out DIR [--no-pairs] [--threads 1]

Runs the same functions as `landscape run` (orchestrator.driver.sweep.cell_spec -> workloads.experiment), writes the
same tables into DIR (so `landscape analyze DIR` works on it), analyses it and prints the phase map and the
deciding metrics as text grids (docs/science.md quotes them). Also writes DIR/pilot_times.json: the CPU
seconds of every job, from which the wall time of `landscape run` on idle cores is estimated (sum / cores,
since the jobs are single-threaded), independent of how loaded the machine was while the pilot ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

GRIDS = [("phase", "s"), ("train_loss", ".3g"), ("train_loss_drop", ".2f"), ("mode_connectivity", ".2f"),
         ("cka", ".3f"), ("test_acc", ".3f"), ("log_hessian_top_eigenvalue", ".2f")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-pairs", action="store_true", help="train and measure the models only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as one Ray trial per CPU)")
    args = parser.parse_args(argv)

    import torch

    from analysis.api import analyze_run
    from analysis.plot_data import text_grid
    from analysis.tables import RunTables
    from orchestrator.config import load_config
    from orchestrator.rundir.provenance import provenance
    from orchestrator.planning.cells import cell_spec
    from orchestrator.planning.jobs import mkey, pkey
    from workloads.experiment import ModelSpec, PairSpec, measure_pair, train_and_measure

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.yaml"), "w") as fh:
        fh.write(cfg.to_yaml())
    prov = provenance(f"pilot-{cfg.name}", cfg.config_hash())
    tables = RunTables(args.out)
    times: dict[str, float] = {}
    states: dict[tuple, dict] = {}
    started = time.perf_counter()
    for lv in cfg.load.values:
        for tv in cfg.temperature.values:
            cell = cell_spec(cfg, lv, tv)
            for seed in cfg.seeds:
                cpu = time.process_time()
                outcome = train_and_measure(ModelSpec(cell, seed))
                times[mkey(cfg, lv, tv, seed)] = time.process_time() - cpu
                tables.write_part("models", mkey(cfg, lv, tv, seed), [{**prov, **outcome.row}],
                                  added=cell.added_metrics)  # metrics.extra columns, as the sweep writes them
                states[(lv, tv, seed)] = outcome.state_dict
            if args.no_pairs:
                continue
            for a, b in cfg.seed_pairs():
                if states[(lv, tv, a)] is None or states[(lv, tv, b)] is None:
                    continue
                cpu = time.process_time()
                outcome = measure_pair(PairSpec(cell, a, b), states[(lv, tv, a)], states[(lv, tv, b)])
                times[pkey(cfg, lv, tv, a, b)] = time.process_time() - cpu
                key = pkey(cfg, lv, tv, a, b)
                tables.write_part("curves", key, [{**prov, **r} for r in outcome.curve_rows])
                tables.write_part("pairs", key, [{**prov, **outcome.row}])
            print(f"  cell {lv:g} x {tv:g} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    with open(os.path.join(args.out, "pilot_times.json"), "w") as fh:
        json.dump(times, fh, indent=1)

    model_s = sum(v for k, v in times.items() if "__seed=" in k)
    pair_s = sum(v for k, v in times.items() if "__seeds=" in k)
    print(f"{cfg.name} {cfg.config_hash()}: {len(cfg.model_keys())} models ({model_s:.0f} CPU s), "
          f"{len(times) - len(cfg.model_keys())} pairs ({pair_s:.0f} CPU s); wall {time.perf_counter() - started:.0f} s")
    print(f"  estimated jobs' wall on 2 idle cores: {(model_s + pair_s) / 2:.0f} s (+ Ray start/stop and analysis)")
    if args.no_pairs:
        from analysis.aggregate import aggregate_cells

        cells = aggregate_cells(tables.read("models"), tables.read("pairs"))
        cells["phase"] = None
    else:
        cells = analyze_run(args.out).cells
    for column, fmt in GRIDS:
        if column in cells and cells[column].notna().any():
            print(f"\n{column}\n{text_grid(cells, column, fmt)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
