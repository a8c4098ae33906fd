"""Seed noise of a run's verdicts: a seeded bootstrap over the seeds of every cell.

    resample_cells(models, pairs, cells, *, draws, seed, metrics) -> list[pd.DataFrame] | None
    labelled_draws(models, pairs, cells, rules, *, draws, seed, metrics) -> (draws or None, why none)
    phase_confidence(cells, labelled_draws) -> (confidence, runner_up)

A label given by fewer than 80 % of the draws is drawn as uncertain on the phase map
(analysis.plot_data.UNCERTAIN_BELOW).

A cell's mean over its seeds is one estimate; another set of seeds would give another. Each draw resamples the
seeds of every cell **with replacement, independently per cell** (the cells are separate trainings: a seed of one
cell shares nothing but its number with the same seed of another cell), and re-aggregates the cell:

- a model counts once per time its seed was drawn;
- a pair goes with its two seeds: the pair (a, b) counts ``count(a) x count(b)`` times, so a pair whose seeds were
  not both drawn drops out. A seed drawn twice makes no pair with itself: two copies of one model are not two
  trained models, and their "mode connectivity" (0) and "CKA" (1) would be measurements of nothing;
- a draw that leaves a cell without any measured pair for a pair metric the cell has (e.g. the authors connect
  one pair per cell for mode connectivity: a draw without both of its seeds has no mc) takes that metric, and
  only that one, from a redrawn set of seeds that keeps a measured pair: the run would not have been analysed
  without the metric, and a phase left undecided by the resampling is not seed noise. The per-model metrics keep
  the draw as it was, so that the redraws (which favour the connected pair's seeds) do not bias them. With 3
  seeds and all pairs measured, 1 draw in 9 (a single seed drawn three times) is redrawn for its pair metrics.

The caller labels every draw with the run's phase rules and re-evaluates the claims on it (analysis.api), so each
verdict and each label gets the frequency with which it survives another set of seeds. Draws are seeded
(``numpy.random.default_rng(seed)``, cells in the table's order): the same tables give the same draws.

A cell with fewer than two seeds cannot be resampled and keeps its values in every draw. When no cell has two
seeds (one-seed runs, tables without per-seed rows), ``resample_cells`` returns None: "no seeds to resample".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.aggregate import CELL_COLUMNS, numeric_column
from analysis.phases import PhaseRules, label_phases
from workloads.metric_specs import BUILTINS, MetricSet

# A few hundred draws resolve p near the verdict thresholds (0.1, 0.9) to about +-0.02; seconds for a demo.
DEFAULT_DRAWS = 200
DEFAULT_SEED = 0
# Redraw budget per cell: candidate draws made at once, as a multiple of the draws wanted.
_CANDIDATES_PER_DRAW = 8
NO_PHASE = "none"  # runner-up label of a cell that some draws leave without a phase


def resample_cells(models: pd.DataFrame, pairs: pd.DataFrame, cells: pd.DataFrame, *, draws: int = DEFAULT_DRAWS,
                   seed: int = DEFAULT_SEED, metrics: MetricSet = BUILTINS) -> list[pd.DataFrame] | None:
    """``draws`` copies of ``cells`` (analysis.aggregate.aggregate_cells of ``models`` and ``pairs``, unlabelled or
    labelled) with every metric's mean, std and count (and the log-of-mean columns) recomputed on resampled seeds;
    None when there is nothing to resample (``draws`` < 1 or no cell with two seeds)."""
    if draws < 1:
        return None
    rng = np.random.default_rng(seed)
    model_specs, pair_specs = metrics.per("model"), metrics.per("pair")
    model_groups = _groups(models[models["status"].fillna("failed") == "ok"]) if len(models) else {}
    pair_groups = _groups(pairs[pairs["status"].fillna("failed") == "ok"]) if len(pairs) else {}
    columns: dict[str, np.ndarray] = {}
    resampled_any = False
    for i, key in enumerate(cells[CELL_COLUMNS].itertuples(index=False, name=None)):
        m = model_groups.get(key, models.iloc[0:0])
        m = m[m["seed"].notna()]  # a row without a seed cannot be drawn by its seed
        p = pair_groups.get(key, pairs.iloc[0:0])
        p = p[p["seed_a"].notna() & p["seed_b"].notna()]
        seeds = np.array(sorted({int(s) for s in m["seed"]} | {int(s) for s in p["seed_a"]}
                                | {int(s) for s in p["seed_b"]}), dtype=int)
        if seeds.size < 2:
            continue
        a = np.searchsorted(seeds, p["seed_a"].to_numpy(dtype=int))
        b = np.searchsorted(seeds, p["seed_b"].to_numpy(dtype=int))
        counts = _draw_counts(rng, seeds.size, draws)
        resampled_any = True
        model_w = counts[:, np.searchsorted(seeds, m["seed"].to_numpy(dtype=int))]
        for specs, frame in ((model_specs, m), (pair_specs, p)):
            for spec in specs:
                values = numeric_column(frame, spec.name)
                if frame is m:
                    weights = model_w
                else:
                    kept = _keeping_a_pair(rng, counts, a, b, np.isfinite(values) & (a != b))
                    weights = kept[:, a] * kept[:, b] * (a != b)
                mean, std, n = _weighted_stats(values, weights)
                for col, v in ((spec.name, mean), (f"{spec.name}_std", std), (f"{spec.name}_n", n)):
                    if col in cells.columns:
                        columns.setdefault(col, _repeat(cells[col], draws))[:, i] = v
                if spec.log_name and spec.log_name in cells.columns:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        logged = np.where(mean > 0, np.log(np.where(mean > 0, mean, 1.0)), math.nan)
                    columns.setdefault(spec.log_name, _repeat(cells[spec.log_name], draws))[:, i] = logged
    if not resampled_any:
        return None
    base = {c: cells[c].to_numpy() for c in cells.columns}
    return [pd.DataFrame({**base, **{col: values[d] for col, values in columns.items()}}, index=cells.index)
            for d in range(draws)]


def labelled_draws(models: pd.DataFrame, pairs: pd.DataFrame, cells: pd.DataFrame, rules: PhaseRules, *,
                   draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED,
                   metrics: MetricSet = BUILTINS) -> tuple[list[pd.DataFrame] | None, str]:
    """(the resampled cells, each labelled with ``rules``, or None; why there are none, in words)."""
    if draws < 1:
        return None, "resampling switched off"
    resampled = resample_cells(models, pairs, cells, draws=draws, seed=seed, metrics=metrics)
    if resampled is None:
        return None, "no seeds to resample: no cell has two seeds"
    return [label_phases(d, rules) for d in resampled], ""


def phase_confidence(cells: pd.DataFrame, labelled_draws: list[pd.DataFrame] | None) -> tuple[list, list]:
    """Per cell of ``cells`` (labelled), (the fraction of draws giving it its own label, the most frequent other
    label or None when every draw agrees); a cell without a phase counts as the label ``NO_PHASE``. Without draws:
    NaN and None for every cell."""
    if not labelled_draws:
        return [math.nan] * len(cells), [None] * len(cells)
    own = [_label(p) for p in cells["phase"]]
    per_draw = np.array([[_label(p) for p in d["phase"]] for d in labelled_draws], dtype=object)  # (draws, cells)
    confidence, runner_up = [], []
    for i, label in enumerate(own):
        values, counts = np.unique(per_draw[:, i].astype(str), return_counts=True)
        tally = dict(zip(values, counts))
        confidence.append(float(tally.get(label, 0)) / len(labelled_draws))
        others = sorted(((c, v) for v, c in tally.items() if v != label), key=lambda t: (-t[0], t[1]))
        runner_up.append(others[0][1] if others else None)
    return confidence, runner_up


def _label(phase) -> str:
    return phase if isinstance(phase, str) else NO_PHASE


def _groups(df: pd.DataFrame) -> dict:
    return {k: g for k, g in df.groupby(CELL_COLUMNS, sort=False)} if len(df) else {}


def _repeat(column: pd.Series, draws: int) -> np.ndarray:
    """(draws, n_cells) copies of a cells column: cells that are not resampled keep their value in every draw."""
    return np.tile(pd.to_numeric(column, errors="coerce").to_numpy(dtype=float), (draws, 1))


def _draw_counts(rng, n_seeds: int, draws: int) -> np.ndarray:
    """(draws, n_seeds) how often each seed is drawn: n_seeds draws with replacement, per bootstrap draw."""
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=draws)


def _keeping_a_pair(rng, counts: np.ndarray, a: np.ndarray, b: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """``counts`` with each draw that keeps none of the ``measured`` pairs (both seeds drawn) replaced by a fresh
    draw that keeps one; unchanged when nothing is measured (the metric stays NaN, as on the run's means)."""
    if not measured.any():
        return counts

    def keeps(c: np.ndarray) -> np.ndarray:
        return ((c[:, a] > 0) & (c[:, b] > 0) & measured).any(axis=1)

    out = counts.copy()
    lost = np.flatnonzero(~keeps(counts))
    while lost.size:  # each try keeps a pair with probability >= 2 / n_seeds^2: a few rounds at most
        fresh = _draw_counts(rng, counts.shape[1], lost.size * _CANDIDATES_PER_DRAW)
        fresh = fresh[keeps(fresh)][:lost.size]
        out[lost[:len(fresh)]] = fresh
        lost = lost[len(fresh):]
    return out


def _weighted_stats(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw, (mean, sample std (ddof=1; NaN below two values), count) of the finite ``values`` (members,)
    counted ``weights`` (draws, members) times: aggregate's _stats on the resampled multiset."""
    finite = np.isfinite(values)
    w = weights * finite
    v = np.where(finite, values, 0.0)
    n = w.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w @ v) / n
        # Two-pass (around the mean): the one-pass sum of squares loses precision when the spread is tiny.
        var = np.einsum("dm,dm->d", w, (v[None, :] - mean[:, None]) ** 2) / (n - 1)
    mean = np.where(n > 0, mean, math.nan)
    std = np.where(n > 1, np.sqrt(np.maximum(var, 0.0)), math.nan)
    return mean, std, n
