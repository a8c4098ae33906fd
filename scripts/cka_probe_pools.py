"""CKA of a finished run's saved models, measured again on several probe sets: how the choice of probes moves the
load trend (docs/science.md, pilot G4b). Reads RUN_DIR/config.yaml and RUN_DIR/models/*.pt (state dicts, loaded
with weights_only=True); trains nothing, writes nothing.

    python scripts/cka_probe_pools.py RUN_DIR

Probe sets (each of metrics.cka_probes inputs, seed metrics.cka_probe_seed):
    train-mixup   mixup of the cell's own training inputs (the authors'; with train_fraction as the load, each
                  column's own subset)
    all-mixup     mixup of the whole training set, before any subset (the same for every column)
    test-mixup    mixup of the test inputs
    test-points   the test inputs themselves, unmixed (metrics.cka_probe_pool: test, cka_probe_maker: points)
Prints each set's CKA grid and the Spearman correlation of CKA with the load per temperature row.
"""

from __future__ import annotations

import itertools
import os
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    run = argv[0]
    import pandas as pd
    import torch

    from analysis.claims import row_trends
    from analysis.plot_data import text_grid
    from orchestrator.planning.cells import cell_spec
    from orchestrator.config.run_config import load_run_config
    from workloads.data import load_dataset
    from workloads.cohort_experiment import load_trained
    from workloads.metrics.cka import cka_or_reason, softmax_outputs
    from workloads.metrics.probes import mixup_probes, sample_points

    torch.set_num_threads(1)
    cfg = load_run_config(run)
    n, seed = cfg.metrics.cka.probes, cfg.metrics.cka.probe_seed
    rows = []
    for lv, tv in itertools.product(cfg.load.values, cfg.temperature.values):
        cell = cell_spec(cfg, lv, tv)
        data = cell.data()
        whole = load_dataset(cell.dataset, cell.data_root, seed=cell.data_seed, args=cell.workload.dataset_args)
        probe_sets = {"train-mixup": mixup_probes(data.train_x, n, seed),
                      "all-mixup": mixup_probes(whole.train_x, n, seed),
                      "test-mixup": mixup_probes(data.test_x, n, seed),
                      "test-points": sample_points(data.test_x, min(n, data.test_x.shape[0]), seed)}
        models = {}
        for s in cfg.seeds:
            path = os.path.join(run, "models", f"{cfg.load.name}={lv:g}__{cfg.temperature.name}={tv:g}__seed={s}.pt")
            models[s] = load_trained(cell, s, torch.load(path, weights_only=True), data, "cpu")
        for name, probes in probe_sets.items():
            outs = {s: softmax_outputs(m, probes) for s, m in models.items()}
            values = [cka_or_reason(outs[a], outs[b])[0] for a, b in cfg.seed_pairs()]
            values = [v for v in values if v is not None]
            rows.append({"probes": name, "load_name": cfg.load.name, "load_value": float(lv),
                         "temperature_name": cfg.temperature.name, "temperature_value": float(tv),
                         "cka": sum(values) / len(values) if values else float("nan")})
    table = pd.DataFrame(rows)
    for name, cells in table.groupby("probes", sort=False):
        trends = row_trends(cells, "cka")
        rising = sum(1 for r in trends.values() if r > 0)
        print(f"{name}: CKA rises with {cfg.load.name} in {rising} of {len(trends)} rows; Spearman by row {trends}")
        print(text_grid(cells.assign(cka=cells["cka"].round(3)), "cka"), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
