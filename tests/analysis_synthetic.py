"""A hand-designed run at the scale of the CPU demo (4 widths x 4 batch sizes x 3 seeds) for analysis tests.

Every cell's metrics are chosen so that its phase under the default rules is known by construction
(``EXPECTED_PHASES``), with a train-loss floor of ~0.01 nats (a small model, not a CIFAR ResNet's 1e-3):

    batch 16  :  I    II    II    II          (hot: high train loss; small width poorly connected)
    batch 32  :  I    I     II    II
    batch 64  :  III  III   IV-A  IV-B        (cool: train loss at the floor)
    batch 128 :  III  IV-A  IV-B  IV-B
               w8    w16   w32   w64

Threshold by hand: floor = 5 % quantile of the 16 cell means (about the smallest, 0.0100) -> sharp above
0.100 nats. Phase-IV CKA {0.60, 0.80, 0.55, 0.85, 0.90}: median 0.80 -> IV-B at >= 0.80.
"""

from __future__ import annotations

import itertools

from analysis.tables import RunTables, model_key, pair_key

WIDTHS = [8, 16, 32, 64]
BATCHES = [16, 32, 64, 128]
SEEDS = [0, 1, 2]

# (width, batch) -> (train loss, mode connectivity pp, CKA, test accuracy)
CELLS = {
    (8, 16): (1.00, -8.0, 0.40, 0.40),
    (16, 16): (0.60, 2.0, 0.50, 0.50),
    (32, 16): (0.55, 2.5, 0.52, 0.52),
    (64, 16): (0.50, 3.0, 0.55, 0.55),
    (8, 32): (0.90, -7.0, 0.42, 0.42),
    (16, 32): (0.40, -5.0, 0.48, 0.55),
    (32, 32): (0.30, 1.0, 0.56, 0.58),
    (64, 32): (0.25, 1.5, 0.58, 0.60),
    (8, 64): (0.030, -6.0, 0.45, 0.50),
    (16, 64): (0.025, -4.0, 0.50, 0.56),
    (32, 64): (0.012, 0.0, 0.60, 0.62),
    (64, 64): (0.011, 0.1, 0.80, 0.66),
    (8, 128): (0.040, -9.0, 0.44, 0.48),
    (16, 128): (0.010, -0.2, 0.55, 0.60),
    (32, 128): (0.010, 0.0, 0.85, 0.68),
    (64, 128): (0.010, 0.0, 0.90, 0.70),
}
EXPECTED_PHASES = {
    (8, 16): "I",
    (16, 16): "II",
    (32, 16): "II",
    (64, 16): "II",
    (8, 32): "I",
    (16, 32): "I",
    (32, 32): "II",
    (64, 32): "II",
    (8, 64): "III",
    (16, 64): "III",
    (32, 64): "IV-A",
    (64, 64): "IV-B",
    (8, 128): "III",
    (16, 128): "IV-A",
    (32, 128): "IV-B",
    (64, 128): "IV-B",
}
# The training curve: the hot row had levelled off (SGD noise), the next one was still falling (too few steps).
LOSS_DROP = {16: 0.0, 32: 0.2, 64: 0.01, 128: 0.01}
# Per-seed multipliers: mean 1, so the cell means are exactly the CELLS values.
SEED_FACTOR = {0: 0.9, 1: 1.0, 2: 1.1}
# Per-pair offsets of mc and CKA: mean 0.
PAIR_OFFSET = {(0, 1): -0.1, (0, 2): 0.0, (1, 2): 0.1}
CURVE_TS = [0.0, 0.25, 0.5, 0.75, 1.0]

COMMON = {
    "run_id": "synthetic-demo",
    "config_hash": "0123456789abcdef",
    "package_version": "test",
    "library_versions": "{}",
}


def cell_id(width, batch):
    return {
        "load_name": "width",
        "load_value": float(width),
        "temperature_name": "batch_size",
        "temperature_value": float(batch),
    }


def write_synthetic_run(run_dir: str, *, drop=(), temperature_name: str = "batch_size", only=None,
                        config_hash: str | None = None, pairs_of_dropped: bool = True) -> RunTables:
    """Write the run; ``drop`` lists (width, batch, seed) models to leave out (to make cells incomplete);
    ``only`` restricts it to the given (width, batch) cells; ``config_hash``: the rows' (default COMMON's);
    ``pairs_of_dropped``: False leaves out the pairs of a dropped seed too (a seed never trained, as
    in an adaptive run's cell at its starting seeds), True keeps them (a model whose row was lost)."""
    tables = RunTables(run_dir)
    common = {**COMMON, "config_hash": config_hash or COMMON["config_hash"]}
    for (w, b), (loss, mc, cka, acc) in CELLS.items():
        if only is not None and (w, b) not in only:
            continue
        cell = {**cell_id(w, b), "temperature_name": temperature_name}
        for s in SEEDS:
            if (w, b, s) in drop:
                continue
            f = SEED_FACTOR[s]
            row = {
                **common,
                **cell,
                "seed": s,
                "status": "ok",
                "train_loss": loss * f,
                "train_acc": 1 - loss / 3,
                "test_loss": 1.5 - acc,
                "test_acc": acc + (f - 1) / 100,
                "hessian_top_eigenvalue": 50 * loss * f + 1,
                "hessian_trace": 400 * loss * f + 20,
                "train_loss_drop": LOSS_DROP[b],
            }
            tables.write_part("models", model_key("width", w, temperature_name, b, s), [row])
        for a, c in itertools.combinations(SEEDS, 2):
            if not pairs_of_dropped and ((w, b, a) in drop or (w, b, c) in drop):
                continue
            off = PAIR_OFFSET[(a, c)]
            row = {
                **common,
                **cell,
                "seed_a": a,
                "seed_b": c,
                "status": "ok",
                "mode_connectivity": mc + off,
                "t_star": 0.5,
                "cka": cka + off / 10,
                "cka_status": "ok",
                "l2_distance": 10.0 * w**0.5,
            }
            tables.write_part("pairs", pair_key("width", w, temperature_name, b, a, c), [row])
        # One stored curve per cell: a bump of height -mc at t = 0.5 on endpoints at 2 % error.
        curve = [
            {
                **common,
                **cell,
                "seed_a": 0,
                "seed_b": 1,
                "t": t,
                "train_error": 2.0 - (mc - 0.1) * (t == 0.5),
                "train_loss": 0.1,
                "test_error": 30.0,
                "test_loss": 1.0,
            }
            for t in CURVE_TS
        ]
        tables.write_part("curves", pair_key("width", w, temperature_name, b, 0, 1), curve)
    return tables


# ------------------------------------------------------------------------------------------------------------
# Labelled cell tables with a known layout, for the claims (analysis.claims reads labelled cells only)

# Paper Fig. 2 in miniature: hot on top (batch 16), width to the right.
FIG2_WIDTHS = [8, 16, 32, 64, 128]
FIG2_BATCHES = [16, 32, 64, 128, 256]
FIG2_LAYOUT = [
    "I    I    II   II   II",
    "I    I    II   II   II",
    "III  III  IV-B IV-B IV-B",
    "III  III  IV-A IV-B IV-B",
    "III  III  IV-A IV-A IV-A",
]
# Per phase: (train loss, mc pp, CKA, test accuracy, log lambda_max, log trace); test accuracy and CKA rise with
# width inside a phase (+0.01 per column), so that CKA and accuracy rise together in phase IV.
FIG2_VALUES = {
    "I": (0.9, -6.0, 0.40, 0.40, 4.0, 6.0),
    "II": (0.5, 2.0, 0.50, 0.55, 4.2, 6.2),
    "III": (0.012, -5.0, 0.50, 0.60, 1.5, 3.5),
    "IV-A": (0.010, 0.0, 0.62, 0.70, 1.4, 3.4),
    "IV-B": (0.010, 0.0, 0.80, 0.80, 1.0, 3.0),
}


def labelled_cells(layout, widths, temps, values, *, load_name="width", temperature_name="batch_size"):
    """A labelled cells table (as analysis.phases.label_phases returns) from a text layout of phases.

    layout: one string per temperature (in the order of ``temps``), phases separated by spaces, one per width.
    values: phase -> (train loss, mc, CKA, test acc, log lambda_max, log trace); test accuracy and CKA get
    +0.01 per width index. Every cell has 3 seeds (test_acc_std 0.002).
    """
    import pandas as pd

    rows = []
    for i, line in enumerate(layout):
        for j, phase in enumerate(line.split()):
            loss, mc, cka, acc, lam, trace = values[phase]
            rows.append({
                "load_name": load_name, "load_value": float(widths[j]), "temperature_name": temperature_name,
                "temperature_value": float(temps[i]), "train_loss": loss, "mode_connectivity": mc,
                "cka": cka + 0.01 * j, "test_acc": acc + 0.01 * j, "test_acc_std": 0.002, "test_acc_n": 3,
                "log_hessian_top_eigenvalue": lam, "log_hessian_trace": trace, "phase": phase,
                "sharpness_class": "sharp" if phase in ("I", "II") else "flat",
                "connectivity_class": "poor" if phase in ("I", "III") else "well", "connectivity_threshold": 1.0,
                "train_loss_drop": 0.0, "complete": True, "members_missing": None, "phase_reason": "",
            })
    return pd.DataFrame(rows)


def fig2_cells():
    return labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, FIG2_VALUES)


# ------------------------------------------------------------------------------------------------------------
# Per-seed tables of a text layout, for the bootstrap (analysis.bootstrap resamples the seeds of these rows)

# Offsets with mean 0 and sample standard deviation 1 over 5 seeds: a cell's test accuracy over its seeds is
# exactly its value +- spread x these, so its standard error is spread / sqrt(5).
UNIT_OFFSETS = (-1.2649110640673518, -0.6324555320336759, 0.0, 0.6324555320336759, 1.2649110640673518)


def layout_tables(layout, widths, temps, values, *, acc_spread=0.0, acc=None, temperature_name="batch_size"):
    """(models, pairs) DataFrames of 5 seeds per cell of a text layout (as ``labelled_cells``), every pair of
    seeds measured. Every metric is the same for every seed (labels cannot flip with seeds) except test accuracy,
    which is spread by ``acc_spread`` x UNIT_OFFSETS; ``acc`` {(width, temperature): mean} replaces cells' means."""
    import math

    import pandas as pd

    models, pairs = [], []
    seeds = range(len(UNIT_OFFSETS))
    for i, line in enumerate(layout):
        for j, phase in enumerate(line.split()):
            loss, mc, cka, mean_acc, lam, trace = values[phase]
            cell = {"load_name": "width", "load_value": float(widths[j]), "temperature_name": temperature_name,
                    "temperature_value": float(temps[i])}
            mean_acc = (acc or {}).get((widths[j], temps[i]), mean_acc + 0.01 * j)
            for s in seeds:
                models.append({**cell, "seed": s, "status": "ok", "train_loss": loss, "train_acc": 1 - loss / 3,
                               "test_loss": 1.5 - mean_acc, "test_acc": mean_acc + acc_spread * UNIT_OFFSETS[s],
                               "hessian_top_eigenvalue": math.exp(lam), "hessian_trace": math.exp(trace)})
            for a, b in itertools.combinations(seeds, 2):
                pairs.append({**cell, "seed_a": a, "seed_b": b, "status": "ok", "mode_connectivity": mc,
                              "cka": cka + 0.01 * j, "l2_distance": 10.0})
    return pd.DataFrame(models), pd.DataFrame(pairs)
