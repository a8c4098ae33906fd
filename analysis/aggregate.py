"""Per-cell aggregation of a run's models and pairs tables (one row per load x temperature cell).

For every cell:
- per-model metrics (the ``model`` specs of workloads/metric_specs.py, plus a run's added ones): mean over
  the models whose status is "ok", sample standard deviation (``<metric>_std``, ddof=1, NaN below two values) and the number of values averaged (``<metric>_n``);
  ``train_loss_drop`` (how much the loss still fell at the end of training) is optional: NaN where the run
  lacks it, never a reason to call a cell incomplete;
- the Hessian also as log of the mean (``log_hessian_top_eigenvalue``, ``log_hessian_trace``), as the paper
  plots it; null when the mean is not positive;
- pairwise metrics (the ``pair`` specs): the same three numbers over the pairs whose status is "ok"; CKA only
  over pairs where it is defined (``cka_undefined`` counts the others);
- member bookkeeping: ``n_models_expected`` (the seeds the run trained anywhere, unless given; per cell where an
  adaptive run expects only a cell's starting seeds: ``expected_by_cell``),
  ``n_models_ok``, ``n_diverged``, ``n_failed``, ``n_pairs_ok``, ``n_pairs_failed``, and ``complete`` /
  ``members_missing``: a cell whose mean covers fewer members than expected says so in words, e.g.
  ``"seed 3 missing; seed 4 diverged; test_acc from 0 of 5 models"``.

Means never silently cover fewer members: every mean comes with its ``_n`` and ``complete`` is False whenever
any expected model is missing or not ok, any pair failed, or any metric has fewer values than members.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from workloads.metric_specs import BUILTINS, MetricSet

CELL_COLUMNS = ["load_name", "load_value", "temperature_name", "temperature_value"]

# The built-in metrics by role (workloads/metric_specs.py declares them; these are views for callers).
MODEL_METRICS = BUILTINS.names("model")
# Diagnostics a run may lack (the authors' released results, runs made before the column existed): averaged
# where present, NaN where absent, never making a cell incomplete.
OPTIONAL_MODEL_METRICS = [s.name for s in BUILTINS.per("model") if not s.required]
PAIR_METRICS = BUILTINS.names("pair")
# Hessian figures are log(mean over seeds), like the paper; name of the log column per metric.
LOG_OF_MEAN = {s.name: s.log_name for s in BUILTINS.all if s.log_name}


def numeric_column(frame: pd.DataFrame, col: str) -> np.ndarray:
    """(n,) float values of ``frame[col]``: NaN where a value is not a number, all NaN when there is no column."""
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)


def aggregate_cells(
    models: pd.DataFrame, pairs: pd.DataFrame, *, expected_seeds: Iterable[int] | None = None,
    metrics: MetricSet = BUILTINS, expected_by_cell: Mapping[tuple[float, float], Iterable[int]] | None = None,
) -> pd.DataFrame:
    """One row per cell, sorted by load then temperature; columns as described in the module docstring.

    models, pairs: the run's tables (``RunTables.read``). expected_seeds: the seeds every cell should have;
    default: every seed that appears in any cell of ``models``. A cell present only in ``pairs`` still gets
    a row (with its models counted as missing). metrics: the metrics to aggregate (the built-ins, plus the
    run's added ones: ``TableScan.metrics``); a metric that is not required may be absent from the tables.
    expected_by_cell: {(load value, temperature value): seeds} for cells that expect other seeds than
    ``expected_seeds`` (an adaptive run's cells trained at their starting seeds only: analysis.adaptive_cells).
    """
    model_specs, pair_specs = metrics.per("model"), metrics.per("pair")
    _require(models, CELL_COLUMNS + ["seed", "status"] + [s.name for s in model_specs if s.required], "models")
    models = models.assign(**{s.name: math.nan for s in model_specs if s.name not in models.columns})
    _require(pairs, CELL_COLUMNS + ["seed_a", "seed_b", "status"] + [s.name for s in pair_specs if s.required],
             "pairs")
    pairs = pairs.assign(**{s.name: math.nan for s in pair_specs if s.name not in pairs.columns})
    seeds = sorted(
        {int(s) for s in expected_seeds} if expected_seeds is not None else {int(s) for s in models["seed"].dropna()}
    )
    cells = pd.concat([models[CELL_COLUMNS], pairs[CELL_COLUMNS]]).drop_duplicates()
    cells = cells.sort_values(["load_name", "load_value", "temperature_name", "temperature_value"]).reset_index(
        drop=True
    )
    model_groups = {k: g for k, g in models.groupby(CELL_COLUMNS, sort=False)} if len(models) else {}
    pair_groups = {k: g for k, g in pairs.groupby(CELL_COLUMNS, sort=False)} if len(pairs) else {}
    by_cell = {(float(lv), float(tv)): sorted({int(s) for s in cell_seeds})
               for (lv, tv), cell_seeds in (expected_by_cell or {}).items()}
    rows = []
    for key in cells.itertuples(index=False, name=None):
        m = model_groups.get(key, models.iloc[0:0])
        p = pair_groups.get(key, pairs.iloc[0:0])
        expected = by_cell.get((float(key[1]), float(key[3])), seeds)
        rows.append({**dict(zip(CELL_COLUMNS, key)), **_cell_stats(m, p, expected, metrics)})
    return pd.DataFrame(rows, columns=cell_columns(metrics))


def cell_columns(metrics: MetricSet = BUILTINS) -> list[str]:
    """Columns of ``aggregate_cells``' output, in order."""
    cols = list(CELL_COLUMNS)
    for spec in metrics.per("model"):
        cols += spec.cell_columns()
    cols += [s.log_name for s in metrics.per("model") if s.log_name]
    for spec in metrics.per("pair"):
        cols += spec.cell_columns()
    cols += [s.log_name for s in metrics.per("pair") if s.log_name]
    cols += [
        "cka_undefined",
        "n_models_expected",
        "n_models",
        "n_models_ok",
        "n_diverged",
        "n_failed",
        "n_pairs",
        "n_pairs_ok",
        "n_pairs_failed",
        "complete",
        "members_missing",
    ]
    return cols


def _require(df: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} table lacks column(s) {missing}; read it with analysis.tables.RunTables.read")


def _stats(values: pd.Series) -> tuple[float, float, int]:
    """(mean, sample std, count) of the finite values; NaN mean when none, NaN std below two."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(v, ddof=1)) if v.size > 1 else math.nan
    return float(np.mean(v)), std, int(v.size)


def _seed_list(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ",".join(str(s) for s in seeds)


def _log_of_mean(mean: float) -> float:
    return math.log(mean) if math.isfinite(mean) and mean > 0 else math.nan


def _cell_stats(m: pd.DataFrame, p: pd.DataFrame, expected: list[int], metrics: MetricSet) -> dict:
    out: dict = {}
    status = m["status"].fillna("failed")
    ok = m[status == "ok"]
    pstatus = p["status"].fillna("failed")
    pok = p[pstatus == "ok"]
    for per, members in (("model", ok), ("pair", pok)):
        for spec in metrics.per(per):
            out[spec.name], out[f"{spec.name}_std"], out[f"{spec.name}_n"] = _stats(members[spec.name])
        for spec in metrics.per(per):
            if spec.log_name:
                out[spec.log_name] = _log_of_mean(out[spec.name])
    out["cka_undefined"] = int(len(pok) - out["cka_n"])

    present = {int(s) for s in m["seed"].dropna()}
    diverged = sorted(int(s) for s in m.loc[status == "diverged", "seed"])
    failed = sorted(int(s) for s in m.loc[~status.isin(["ok", "diverged"]), "seed"])
    missing = sorted(set(expected) - present)
    n_ok = len(ok)
    out.update(
        n_models_expected=len(expected),
        n_models=len(m),
        n_models_ok=n_ok,
        n_diverged=len(diverged),
        n_failed=len(failed),
        n_pairs=len(p),
        n_pairs_ok=len(pok),
        n_pairs_failed=int(len(p) - len(pok)),
    )
    notes = []
    if missing:
        notes.append(f"{_seed_list(missing)} missing")
    if diverged:
        notes.append(f"{_seed_list(diverged)} diverged")
    if failed:
        notes.append(f"{_seed_list(failed)} failed")
    if len(expected) >= 2 and len(p) == 0:
        notes.append("no pairs measured")
    if out["n_pairs_failed"]:
        notes.append(f"{out['n_pairs_failed']} of {len(p)} pairs failed")
    for spec in metrics.per("model"):
        if spec.required and 0 < n_ok and out[f"{spec.name}_n"] < n_ok:
            notes.append(f"{spec.name} from {out[f'{spec.name}_n']} of {n_ok} models")
    for spec in metrics.per("pair"):
        if spec.required and spec.expected_for_all and 0 < len(pok) and out[f"{spec.name}_n"] < len(pok):
            notes.append(f"{spec.name} from {out[f'{spec.name}_n']} of {len(pok)} pairs")
    out["complete"] = not notes
    out["members_missing"] = "; ".join(notes) if notes else None
    return out
