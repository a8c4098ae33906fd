"""The cells of an adaptive run as the analysis shows them: every grid cell, trained or interpolated (issue #22).

A run made with ``search: adaptive`` (orchestrator/driver/adaptive_sweep.py) trains only the cells its policy chose
(analysis/adaptive.py), most at their starting seeds, a few topped up to all seeds. Its analysis keeps that in
view:

- every cell of the config's grid gets a row; an untrained cell (no models row) is filled by the policy's own
  interpolation (:func:`analysis.adaptive.fill_map`: log train loss, mode connectivity and CKA from the trained
  cells), labelled by the same rules, and marked ``interpolated``;
- a cell trained at its starting seeds expects those seeds only: no "seed missing" note for the seeds the policy
  did not ask for (a starting seed that is missing or failed is still named);
- every row, of any run, says how it was sampled: ``interpolated`` (bool), ``trained_seeds`` (ok models) and
  ``sampling``, one of :data:`SAMPLING` ("full" for every cell of a grid run).

    search = adaptive_search(config)                  # None unless the run's config.yaml says search: adaptive
    expected = expected_by_cell(search, models)       # for analysis.aggregate.aggregate_cells(expected_by_cell=)
    cells = grid_cells(aggregated, search, models, pairs)   # unlabelled: then analysis.phases.label_phases

**Labels agree with the policy's map.** The whole filled grid is labelled at once, so the relative thresholds
(the converged-loss floor, the IV-A/IV-B CKA split) come from every grid cell, as in ``fill_map``, never from the
boundary-biased trained subset. With the same rules, a trained cell then gets the label the policy saw, except
where a trained cell lacks a measured value (no ok model, or no ok pair): ``fill_map`` fills that value in, the
analysis leaves it missing (the cell has no phase, and its members_missing says why), so the thresholds may move
slightly. The rules are the analysis's (``--rule``); a policy run with other ``adaptive.rules`` chose its cells by
those (analysis.api warns when they differ).

**Seed noise.** Interpolated cells have no seeds: the bootstrap (analysis.bootstrap) keeps their values in every
draw (the interpolation is not redone per draw), and their ``phase_confidence`` is left unmeasured (NaN). Claims
are measured on trained cells only (analysis.claims).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.adaptive import AdaptiveSettings, Grid, fill_map

# How a cell was sampled: every seed of the grid (a grid run; an adaptive run whose start is all of its seeds),
# the policy's starting seeds only, topped up beyond them, or not trained at all (values interpolated).
FULL, START_SEEDS, TOPPED_UP, INTERPOLATED = "full", "start seeds", "topped up", "interpolated"
SAMPLING = (FULL, START_SEEDS, TOPPED_UP, INTERPOLATED)
SAMPLING_COLUMNS = ["interpolated", "trained_seeds", "sampling"]
# The values fill_map interpolates (the ones the phase rules decide by).
FILLED = ("train_loss", "mode_connectivity", "cka")
INTERPOLATED_NOTE = ("not trained: train loss, mode connectivity and CKA interpolated from the trained cells "
                     "(search: adaptive)")


@dataclass(frozen=True)
class AdaptiveSearch:
    """What the analysis needs of an adaptive run's config: its policy settings and its full grid."""

    settings: AdaptiveSettings
    grid: Grid

    def covers(self, load_name: str, temperature_name: str) -> bool:
        """Whether the diagram of these knobs is the search's grid (a run has one load and one temperature)."""
        return (load_name, temperature_name) == (self.grid.load_name, self.grid.temperature_name)

    @property
    def start(self) -> tuple[int, ...]:
        return self.settings.seeds_start(self.grid)

    @property
    def full(self) -> tuple[int, ...]:
        return self.settings.seeds_full(self.grid)


def adaptive_search(config: Mapping | None, seeds=None) -> AdaptiveSearch | None:
    """The search of a run's config.yaml (as a mapping; None: no config); None unless ``search: adaptive``.
    ``seeds``: the grid's seeds when the caller names them (analyze_run's expected_seeds), else the config's.
    ValueError naming the setting when the config's adaptive block or grid cannot be read."""
    if not isinstance(config, Mapping) or config.get("search") != "adaptive":
        return None
    try:
        settings = AdaptiveSettings.from_mapping(config.get("adaptive") or {})
        load, temp = config["load"], config["temperature"]
        grid = Grid(str(load["name"]), tuple(float(v) for v in load["values"]), str(temp["name"]),
                    tuple(float(v) for v in temp["values"]),
                    tuple(int(s) for s in (seeds if seeds is not None else config["seeds"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the run's config.yaml says search: adaptive, but its grid or adaptive block cannot be "
                         f"read ({type(exc).__name__}: {exc})") from None
    return AdaptiveSearch(settings, grid)


def _seeds_by_cell(models: pd.DataFrame, pairs: pd.DataFrame) -> dict[tuple[float, float], set[int]]:
    """{(load value, temperature value): seeds with a models or pairs row, any status}."""
    out: dict[tuple[float, float], set[int]] = {}
    for df, cols in ((models, ("seed",)), (pairs, ("seed_a", "seed_b"))):
        if df is None or df.empty:
            continue
        for col in cols:
            for lv, tv, s in zip(df["load_value"], df["temperature_value"], pd.to_numeric(df[col], errors="coerce")):
                if math.isfinite(s):
                    out.setdefault((float(lv), float(tv)), set()).add(int(s))
    return out


def sampling_of(search: AdaptiveSearch | None, seeds: set[int]) -> str:
    """How a trained cell with rows of ``seeds`` was sampled (see SAMPLING)."""
    if search is None or len(search.full) <= len(search.start):
        return FULL  # a grid run, or a policy that starts every cell with all of its seeds: nothing to top up
    return START_SEEDS if seeds <= set(search.start) else TOPPED_UP


def expected_by_cell(search: AdaptiveSearch | None, models: pd.DataFrame,
                     pairs: pd.DataFrame | None = None) -> dict[tuple[float, float], tuple[int, ...]]:
    """{cell: the seeds it should have} for the trained cells of an adaptive run: the starting seeds where it has
    rows of those only (the policy asked for no more), the full seeds where it was topped up; {} for a grid run
    (every cell expects every seed)."""
    if search is None:
        return {}
    out = {}
    for cell, seeds in _seeds_by_cell(models, pairs).items():
        out[cell] = search.start if sampling_of(search, seeds) == START_SEEDS else search.full
    return out


def grid_cells(aggregated: pd.DataFrame, search: AdaptiveSearch | None, models: pd.DataFrame,
               pairs: pd.DataFrame) -> pd.DataFrame:
    """``aggregated`` (analysis.aggregate.aggregate_cells of one diagram) with SAMPLING_COLUMNS, and for an
    adaptive run one interpolated row per untrained grid cell (the module docstring says how), sorted by load
    then temperature. Unlabelled: label the result as a whole (analysis.phases.label_phases)."""
    seeds = _seeds_by_cell(models, pairs)
    out = aggregated.copy()
    out["interpolated"] = False
    out["trained_seeds"] = pd.to_numeric(out["n_models_ok"], errors="coerce").fillna(0).astype(int)
    out["sampling"] = [sampling_of(search, seeds.get((float(lv), float(tv)), set()))
                       for lv, tv in zip(out["load_value"], out["temperature_value"])]
    if search is None:
        return out
    trained = {(float(lv), float(tv)) for lv, tv in zip(out["load_value"], out["temperature_value"])}
    filled = fill_map(search.grid, models, pairs, search.settings)
    untrained = filled[[(float(lv), float(tv)) not in trained
                        for lv, tv in zip(filled["load_value"], filled["temperature_value"])]]
    if untrained.empty:
        return out
    rows = pd.DataFrame({c: _empty_value(c, out[c].dtype, len(untrained)) for c in out.columns})
    for c in ("load_name", "load_value", "temperature_name", "temperature_value", *FILLED):
        rows[c] = untrained[c].to_numpy()
    rows["interpolated"], rows["sampling"] = True, INTERPOLATED
    rows["complete"], rows["members_missing"] = False, INTERPOLATED_NOTE
    keys = ["load_name", "load_value", "temperature_name", "temperature_value"]
    both = pd.concat([out, rows], ignore_index=True)
    return both.sort_values(keys, kind="stable").reset_index(drop=True)


def _empty_value(column: str, dtype, n: int):
    """An untrained cell's value of ``column``: 0 for counts (no member), missing for everything else."""
    if column.startswith("n_") or column.endswith("_n") or column in ("cka_undefined", "trained_seeds"):
        return np.zeros(n, dtype=int)
    if pd.api.types.is_bool_dtype(dtype):
        return np.zeros(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(dtype):
        return np.full(n, np.nan)
    return np.full(n, None, dtype=object)


def trained_only(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells without the interpolated ones (index reset); all of them when there is no ``interpolated``
    column (a table made before it existed, or elsewhere)."""
    if "interpolated" not in cells.columns:
        return cells.reset_index(drop=True)
    return cells[~cells["interpolated"].fillna(False).to_numpy(dtype=bool)].reset_index(drop=True)


def sampling_counts(cells: pd.DataFrame) -> dict[str, int]:
    """Cells per SAMPLING value (every value, 0 when absent); {} when the cells lack the column."""
    if "sampling" not in cells.columns:
        return {}
    counts = cells["sampling"].value_counts()
    return {s: int(counts.get(s, 0)) for s in SAMPLING}


def is_adaptive(cells: pd.DataFrame) -> bool:
    """Whether the cells were sampled adaptively (any cell not "full")."""
    counts = sampling_counts(cells)
    return bool(counts) and sum(n for s, n in counts.items() if s != FULL) > 0


def sampling_text(cells: pd.DataFrame) -> str | None:
    """One line on how the cells were sampled, e.g. "7 of 16 cells trained (3 topped up, 4 at the starting
    seeds only), 9 interpolated (not trained)"; None for a grid run (every cell full)."""
    if not is_adaptive(cells):
        return None
    c = sampling_counts(cells)
    trained = len(cells) - c[INTERPOLATED]
    parts = [f"{c[s]} {w}" for s, w in ((FULL, "with every seed"), (TOPPED_UP, "topped up"),
                                         (START_SEEDS, "at the starting seeds only")) if c[s]]
    return (f"{trained} of {len(cells)} cells trained ({', '.join(parts)}), {c[INTERPOLATED]} interpolated "
            f"(not trained)")
