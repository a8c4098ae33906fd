"""Replay the adaptive-sweep policy (analysis/adaptive.py) on finished full-grid runs: what it would have cost,
and how much of the full map it would have got right.

    python benchmarks/adaptive.py [RUN_DIR ...] [--no-reference] [--step 3] [--starts 0] [--mc-stand-in]
                                  [--set NAME=VALUE ...] [--json OUT]

Without RUN_DIR (or in addition to them) the authors' released archive
(shared/reference/taxonomy-released/results.tar.gz, through analysis.reference's import into a temporary run
directory) is replayed. The run's full tables are the oracle: the policy sees only the models rows it asked for
and the pairs rows whose two seeds it asked for, wave after wave, until it asks for nothing more. The full map is
the run labelled by the same rules on all its rows (aggregate_cells + label_phases, as ``landscape analyze``).

Printed per start (a coarse-grid offset and a choice of starting seeds) and for the worst start per wave: model
trainings, pair jobs (CKA + L2 + curve in a live run), curve jobs (pairs with a mode connectivity), a
cost-weighted share, and the agreement of the policy's map (trained cells measured, the rest interpolated, all
labelled) with the full map, on the five labels and with IV-A/IV-B merged. The cost weight of a model is its
measured ``train_seconds`` when every model has one, else width^2 / batch size when the knobs are width and
batch_size (ResNet18 of width k costs ~k^2 FLOPs per sample and trains a fixed number of epochs, so
steps ~ 1 / batch size; the released archive has no timings), else none.

Pairs for a subset of seeds: the released archive has CKA and L2 for all 10 pairs of a cell's 5 runs but a
curve (mode connectivity) only for runs 0 and 1. Strictly replayed, a cell has a mode connectivity only once
seeds 0 and 1 are both trained, so the starting seeds must be {0, 1} and the only starts are the coarse offsets.
``--mc-stand-in`` instead lets the cell's one measured curve stand in for the curve of the first pair the policy
trains (train loss and CKA still come from the seeds it chose): more seed choices, but mc without seed noise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field, replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.adaptive import AdaptiveSettings, Grid, fill_map, next_wave  # noqa: E402
from analysis.aggregate import aggregate_cells  # noqa: E402
from analysis.phases import label_phases, mc_unit, rules_for_mc_unit  # noqa: E402
from analysis.tables import RunTables  # noqa: E402

# Where tests/analysis/test_released_metrics.py looks for it too: $LANDSCAPE_REFERENCE_ARCHIVE, else next to the checkout.
DEFAULT_ARCHIVE = os.environ.get("LANDSCAPE_REFERENCE_ARCHIVE") or os.path.join(
    os.path.dirname(ROOT), "shared", "reference", "taxonomy-released", "results.tar.gz")
MAX_WAVES = 100  # a policy that has not stopped by then is a bug; the replay says so rather than loop


@dataclass
class WaveRecord:
    wave: int
    counts: dict
    models: int
    pairs: int
    curves: int
    cost: float  # cost-weighted share of the full grid; NaN without weights
    agreement: float
    agreement_iv_merged: float


@dataclass
class Replay:
    offset: tuple[int, int]
    seeds: tuple[int, ...]
    waves: list[WaveRecord] = field(default_factory=list)
    full: dict = field(default_factory=dict)  # models, pairs, curves of the full grid
    disagree: list = field(default_factory=list)  # (load, temperature, policy label, full label) at the end

    @property
    def final(self) -> WaveRecord:
        return self.waves[-1]


def read_run(run_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    tables = RunTables(run_dir)
    return tables.scan("models").frame, tables.scan("pairs").frame


def full_map(models: pd.DataFrame, pairs: pd.DataFrame, settings: AdaptiveSettings) -> pd.DataFrame:
    """The run labelled by the same rules on all its rows, as `landscape analyze` labels it."""
    rules = rules_for_mc_unit(settings.rules, mc_unit(pairs))
    return label_phases(aggregate_cells(models, pairs), rules)


def cost_weights(models: pd.DataFrame, grid: Grid) -> tuple[dict | None, str]:
    """({(load, temperature, seed): weight}, what it is) or (None, why none)."""
    secs = pd.to_numeric(models.get("train_seconds"), errors="coerce") if "train_seconds" in models else None
    keys = list(zip(models["load_value"].astype(float), models["temperature_value"].astype(float),
                    models["seed"].astype(int)))
    if secs is not None and secs.notna().all() and (secs > 0).all():
        return dict(zip(keys, secs.astype(float))), "measured train_seconds"
    if grid.load_name == "width" and grid.temperature_name == "batch_size":
        return {k: k[0] ** 2 / k[1] for k in keys}, "width^2 / batch size (FLOPs ~ k^2 per sample, steps ~ 1/B)"
    return None, "no cost weight (no train_seconds, knobs not width x batch_size)"


def agreement(filled: pd.DataFrame, truth: pd.DataFrame, merge_iv: bool) -> tuple[float, list]:
    keys = ["load_value", "temperature_value"]
    both = filled[keys + ["phase"]].merge(truth[keys + ["phase"]], on=keys, suffixes=("", "_full"))

    def norm(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return "IV" if merge_iv and str(v).startswith("IV") else str(v)

    same = [norm(a) == norm(b) for a, b in zip(both["phase"], both["phase_full"])]
    wrong = [(r.load_value, r.temperature_value, r.phase, r.phase_full)
             for r, s in zip(both.itertuples(index=False), same) if not s]
    return float(np.mean(same)), wrong


def _with_cell_floats(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(_lv=df["load_value"].astype(float), _tv=df["temperature_value"].astype(float))


class Oracle:
    """The full tables, revealing the rows of the (cell, seed)s asked for."""

    def __init__(self, models: pd.DataFrame, pairs: pd.DataFrame, mc_stand_in: bool):
        self.models = _with_cell_floats(models)
        self.pairs = _with_cell_floats(pairs)
        self.mc_stand_in = mc_stand_in
        mc = pd.to_numeric(pairs["mode_connectivity"], errors="coerce")
        self.connected = self.pairs[mc.notna()]

    def reveal(self, asked: set, seed_rank: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
        mkeys = list(zip(self.models["_lv"], self.models["_tv"], self.models["seed"].astype(int)))
        models = self.models[[k in asked for k in mkeys]]
        pa = list(zip(self.pairs["_lv"], self.pairs["_tv"], self.pairs["seed_a"].astype(int)))
        pb = list(zip(self.pairs["_lv"], self.pairs["_tv"], self.pairs["seed_b"].astype(int)))
        pairs = self.pairs[[a in asked and b in asked for a, b in zip(pa, pb)]].copy()
        if self.mc_stand_in and len(pairs):
            pairs = self._stand_in(pairs, seed_rank)
        return models.drop(columns=["_lv", "_tv"]), pairs.drop(columns=["_lv", "_tv"])

    def _stand_in(self, pairs: pd.DataFrame, seed_rank: dict) -> pd.DataFrame:
        """The cell's measured curves move to its revealed pairs trained first (in the policy's seed order)."""
        cols = ["mode_connectivity", "t_star"]
        pairs[cols] = np.nan
        rank = [max(seed_rank[a], seed_rank[b]) * 1000 + min(seed_rank[a], seed_rank[b])
                for a, b in zip(pairs["seed_a"].astype(int), pairs["seed_b"].astype(int))]
        pairs = pairs.assign(_rank=rank).sort_values(["_lv", "_tv", "_rank"])
        for (lv, tv), idx in pairs.groupby(["_lv", "_tv"]).groups.items():
            measured = self.connected[(self.connected["_lv"] == lv) & (self.connected["_tv"] == tv)]
            k = min(len(measured), len(idx))
            pairs.loc[idx[:k], cols] = measured[cols].to_numpy()[:k]
        return pairs.drop(columns="_rank")


def replay(oracle: Oracle, truth: pd.DataFrame, grid: Grid, settings: AdaptiveSettings,
           weights: dict | None) -> Replay:
    rank = {s: i for i, s in enumerate(grid.seeds)}
    out = Replay(settings.coarse_offset, grid.seeds)
    full_pairs = oracle.pairs
    out.full = {"models": len(oracle.models), "pairs": len(full_pairs), "curves": len(oracle.connected)}
    total_weight = sum(weights.values()) if weights else math.nan
    asked: set = set()
    models = oracle.models.iloc[0:0].drop(columns=["_lv", "_tv"])
    pairs = oracle.pairs.iloc[0:0].drop(columns=["_lv", "_tv"])
    for number in range(1, MAX_WAVES + 1):
        wave = next_wave(settings, grid, models, pairs)
        if wave.done:
            break
        asked |= {(c.load_value, c.temperature_value, s) for c in wave.cells for s in c.seeds}
        models, pairs = oracle.reveal(asked, rank)
        filled = fill_map(grid, models, pairs, settings)
        agree, wrong = agreement(filled, truth, merge_iv=False)
        agree_iv, _ = agreement(filled, truth, merge_iv=True)
        cost = sum(weights[k] for k in asked if k in weights) / total_weight if weights else math.nan
        curves = int(pd.to_numeric(pairs["mode_connectivity"], errors="coerce").notna().sum())
        out.waves.append(WaveRecord(number, wave.counts(), len(models), len(pairs), curves, cost, agree, agree_iv))
        out.disagree = wrong
    else:
        raise RuntimeError(f"the policy asked for more than {MAX_WAVES} waves: it does not converge")
    return out


def seed_orders(grid: Grid, pairs: pd.DataFrame, start: int, stand_in: bool) -> list[tuple[int, ...]]:
    """Orders of the seeds (starting seeds first, the rest ascending) to replay. Strictly, only starting sets
    that contain a connected pair of every cell with a curve (the released archive: {0, 1})."""
    seeds = sorted(grid.seeds)
    combos = list(itertools.combinations(seeds, start))
    if not stand_in:
        mc = pd.to_numeric(pairs["mode_connectivity"], errors="coerce")
        conn = pairs[mc.notna()]
        per_cell = {}
        for lv, tv, a, b in zip(conn["load_value"], conn["temperature_value"], conn["seed_a"], conn["seed_b"]):
            per_cell.setdefault((float(lv), float(tv)), set()).add((int(a), int(b)))
        combos = [c for c in combos
                  if all(any(a in c and b in c for a, b in ps) for ps in per_cell.values())]
    return [tuple(c) + tuple(s for s in seeds if s not in c) for c in combos]


def starts(settings: AdaptiveSettings, orders: list, limit: int) -> list[tuple[tuple[int, int], tuple[int, ...]]]:
    """Every (coarse offset, seed order), offsets first; ``limit`` > 0 keeps that many, spread evenly."""
    offsets = list(itertools.product(range(settings.coarse_step), repeat=2))
    all_starts = [(o, s) for s in orders for o in offsets]
    if 0 < limit < len(all_starts):
        picks = np.linspace(0, len(all_starts) - 1, limit).round().astype(int)
        all_starts = [all_starts[i] for i in sorted(set(picks))]
    return all_starts


def pct(x: float) -> str:
    return "   n/a" if not math.isfinite(x) else f"{100 * x:5.1f}%"


def run_one(name: str, models: pd.DataFrame, pairs: pd.DataFrame, settings: AdaptiveSettings, limit: int,
            stand_in: bool, log=print) -> dict:
    grid = Grid.from_tables(models)
    truth = full_map(models, pairs, settings)
    weights, weight_doc = cost_weights(models, grid)
    oracle = Oracle(models, pairs, stand_in)
    orders = seed_orders(grid, pairs, settings.start_seeds, stand_in)
    if not orders:
        raise SystemExit(f"error: {name}: no choice of {settings.start_seeds} starting seeds holds a connected pair "
                         f"in every cell; use --mc-stand-in")
    chosen = starts(settings, orders, limit)
    log(f"== {name}: {grid.shape[0]} x {grid.shape[1]} cells, seeds {list(grid.seeds)}; full map "
        + ", ".join(f"{p}: {n}" for p, n in truth["phase"].value_counts().sort_index().items()))
    log(f"   settings: {json.dumps({k: v for k, v in settings.to_dict().items() if k != 'rules'})}")
    log(f"   cost weight: {weight_doc}; mc {'stand-in' if stand_in else 'strict'}; {len(chosen)} starts")
    log(f"   {'offset':>7} {'seeds':>15} {'waves':>5} {'models':>7} {'pairs':>7} {'curves':>7} {'cost':>7} "
        f"{'agree':>7} {'agree(IV)':>9}")
    results = []
    for offset, order in chosen:
        r = replay(oracle, truth, grid.with_seeds(order), replace(settings, coarse_offset=offset), weights)
        f = r.final
        log(f"   {str(offset):>7} {str(list(order[:settings.start_seeds])):>15} {len(r.waves):5d} "
            f"{pct(f.models / r.full['models'])} {pct(f.pairs / r.full['pairs'])} {pct(f.curves / r.full['curves'])} "
            f"{pct(f.cost)} {pct(f.agreement)} {pct(f.agreement_iv_merged):>9}")
        results.append(r)
    worst = min(results, key=lambda r: (r.final.agreement, -r.final.models))
    costliest = max(results, key=lambda r: r.final.models)
    log(f"   worst start {worst.offset} seeds {list(worst.seeds[:settings.start_seeds])}, per wave:")
    for w in worst.waves:
        log(f"     wave {w.wave:2d} {json.dumps(w.counts):45s} models {pct(w.models / worst.full['models'])} "
            f"curves {pct(w.curves / worst.full['curves'])} cost {pct(w.cost)} agree {pct(w.agreement)} "
            f"(IV merged {pct(w.agreement_iv_merged)})")
    if worst.disagree:
        log("     cells it gets wrong (load, temperature, policy, full): "
            + "; ".join(f"({lv:g}, {tv:g}, {a}, {b})" for lv, tv, a, b in worst.disagree))

    def span(values):
        return f"{pct(min(values))}..{pct(max(values))} (median {pct(float(np.median(values)))})"

    summary = {
        "name": name, "starts": len(results), "stand_in": stand_in, "cost_weight": weight_doc,
        "settings": settings.to_dict(),
        "models": [r.final.models / r.full["models"] for r in results],
        "pairs": [r.final.pairs / r.full["pairs"] for r in results],
        "curves": [r.final.curves / r.full["curves"] for r in results],
        "cost": [r.final.cost for r in results],
        "agreement": [r.final.agreement for r in results],
        "agreement_iv_merged": [r.final.agreement_iv_merged for r in results],
        "waves": [len(r.waves) for r in results],
        "offsets": [list(r.offset) for r in results],
        "seed_choices": [list(r.seeds[:settings.start_seeds]) for r in results],
        "worst": {"offset": list(worst.offset), "seeds": list(worst.seeds),
                  "waves": [vars(w) for w in worst.waves], "disagree": worst.disagree},
    }
    log(f"   over {len(results)} starts: models {span(summary['models'])}, pairs {span(summary['pairs'])}, "
        f"curves {span(summary['curves'])}, cost {span(summary['cost'])}")
    log(f"   agreement {span(summary['agreement'])}; IV-A/IV-B merged {span(summary['agreement_iv_merged'])}; "
        f"waves {min(summary['waves'])}..{max(summary['waves'])}")
    target = min(summary["agreement"]) >= 0.98 and costliest.final.models / costliest.full["models"] <= 0.40
    log(f"   issue #22 target (worst start >= 98% agreement at <= 40% of the model trainings): "
        f"{'met' if target else 'NOT met'}")
    summary["target_met"] = target
    return summary


def reference_tables(archive: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    from analysis.reference import import_reference

    with tempfile.TemporaryDirectory(prefix="adaptive-replay-") as tmp:
        import_reference(archive, os.path.join(tmp, "run"))
        return read_run(os.path.join(tmp, "run"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="*", help="finished full-grid run directories to replay")
    ap.add_argument("--archive", default=DEFAULT_ARCHIVE, help="the released results.tar.gz")
    ap.add_argument("--no-reference", action="store_true", help="replay only the RUN_DIRs")
    ap.add_argument("--step", type=int, default=AdaptiveSettings.coarse_step, help="coarse step")
    ap.add_argument("--starts", type=int, default=0, help="at most this many starts (0: all)")
    ap.add_argument("--mc-stand-in", action="store_true", help="see the module docstring")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="another AdaptiveSettings field, e.g. --set interpolation=nearest --set refine_iv=false")
    ap.add_argument("--json", help="write the summaries here")
    args = ap.parse_args(argv)
    try:
        extra = dict(s.partition("=")[::2] for s in args.set)
        settings = AdaptiveSettings.from_mapping({"coarse_step": args.step, **extra})
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = [] if args.no_reference else [("released archive (Yang et al.)", *reference_tables(args.archive))]
    runs += [(d, *read_run(d)) for d in args.run_dirs]
    summaries = [run_one(name, m, p, settings, args.starts, args.mc_stand_in) for name, m, p in runs]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summaries, fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
