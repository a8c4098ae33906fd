"""What the seed bootstrap costs inside `landscape analyze`: time per draw on a demo-sized run and, when the
authors' released archive is there, on its 210 cells.

    python benchmarks/bootstrap.py [--draws D] [--released ARCHIVE]

For each table it times, with D draws (default 200, analyze's default): resampling and re-aggregating the seeds
(analysis.bootstrap.resample_cells), labelling every draw (analysis.phases.label_phases) and re-checking the claims
on every draw (analysis.claims.evaluate_claims with and without the draws), and prints the seconds per draw of
each step and in all. The demo-sized run is the demo's shape (tests/analysis_synthetic.py's layout at the demo's
4 widths x 7 temperatures x 3 seeds, all pairs); the shared machine's load is printed beside, since the times
scale with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pandas as pd  # noqa: E402

from analysis.aggregate import aggregate_cells  # noqa: E402
from analysis.bootstrap import DEFAULT_DRAWS, resample_cells  # noqa: E402
from analysis.claims import RunFacts, evaluate_claims  # noqa: E402
from analysis.phases import label_phases  # noqa: E402
from tests.analysis_synthetic import FIG2_VALUES  # noqa: E402

DEFAULT_ARCHIVE = "/work/shared/reference/taxonomy-released/results.tar.gz"
# The demo's grid: 4 widths x 7 weight decays (hot on top) x 3 seeds, with the demo's phase layout
# (docs/gallery.md); seed-to-seed spread of the demo's order (test accuracy 0.005, train loss 10 %).
DEMO_LAYOUT = ["II II II II", "II II II II", "I II II II", "I I I IV-B", "I III III IV-B", "I III III IV-A",
               "I III III IV-A"]
DEMO_WIDTHS = [32, 64, 128, 256]
DEMO_TEMPS = [0.016, 0.008, 0.004, 0.002, 0.001, 0.0005, 0.00025]
SEED_OFFSETS = (-1.0, 0.0, 1.0)


def demo_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(models, pairs) of a demo-sized run with seed noise in every metric."""
    import itertools
    import math

    models, pairs = [], []
    for i, line in enumerate(DEMO_LAYOUT):
        for j, phase in enumerate(line.split()):
            loss, mc, cka, acc, lam, trace = FIG2_VALUES[phase]
            cell = {"load_name": "width", "load_value": float(DEMO_WIDTHS[j]), "temperature_name": "weight_decay",
                    "temperature_value": DEMO_TEMPS[i]}
            for s, z in enumerate(SEED_OFFSETS):
                models.append({**cell, "seed": s, "status": "ok", "train_loss": loss * (1 + 0.1 * z),
                               "train_acc": 0.9, "test_loss": 1.0, "test_acc": acc + 0.01 * j + 0.005 * z,
                               "hessian_top_eigenvalue": math.exp(lam + 0.1 * z), "hessian_trace": math.exp(trace)})
            for a, b in itertools.combinations(range(len(SEED_OFFSETS)), 2):
                z = SEED_OFFSETS[a] + SEED_OFFSETS[b]
                pairs.append({**cell, "seed_a": a, "seed_b": b, "status": "ok", "mode_connectivity": mc + 0.3 * z,
                              "cka": cka + 0.01 * j + 0.01 * z, "l2_distance": 10.0})
    return pd.DataFrame(models), pd.DataFrame(pairs)


def released_tables(archive: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    if not os.path.exists(archive):
        return None
    from analysis.reference import import_reference
    from analysis.tables import RunTables

    out = os.path.join(tempfile.mkdtemp(prefix="bootstrap-bench-"), "released")
    import_reference(archive, out)
    tables = RunTables(out)
    return tables.read("models"), tables.read("pairs")


def time_bootstrap(models: pd.DataFrame, pairs: pd.DataFrame, draws: int) -> dict[str, float]:
    """Seconds of each step for ``draws`` draws; also the claims on the run's means alone (the cost before)."""
    cells = aggregate_cells(models, pairs)
    labelled = label_phases(cells)
    facts = RunFacts.of(labelled, models)
    t0 = time.perf_counter()
    resampled = resample_cells(models, pairs, cells, draws=draws)
    t1 = time.perf_counter()
    relabelled = [label_phases(d) for d in resampled]
    t2 = time.perf_counter()
    evaluate_claims(labelled, facts, draws=relabelled)
    t3 = time.perf_counter()
    evaluate_claims(labelled, facts)
    t4 = time.perf_counter()
    return {"cells": len(cells), "resample": t1 - t0, "label": t2 - t1, "claims": t3 - t2, "claims_alone": t4 - t3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=DEFAULT_DRAWS)
    parser.add_argument("--released", default=DEFAULT_ARCHIVE)
    args = parser.parse_args(argv)
    print(f"1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (times scale with it)")
    runs = {"demo-sized": demo_tables()}
    released = released_tables(args.released)
    if released is not None:
        runs["released (210 cells, 5 seeds)"] = released
    for name, (models, pairs) in runs.items():
        t = time_bootstrap(models, pairs, args.draws)
        total = t["resample"] + t["label"] + t["claims"]
        print(f"{name}: {t['cells']} cells, {args.draws} draws: {total:.2f} s in all, "
              f"{1000 * total / args.draws:.1f} ms per draw (resample {1000 * t['resample'] / args.draws:.1f}, "
              f"label {1000 * t['label'] / args.draws:.1f}, claims {1000 * t['claims'] / args.draws:.1f}); "
              f"claims on the means alone {1000 * t['claims_alone']:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
