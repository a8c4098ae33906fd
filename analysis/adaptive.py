"""Adaptive sweeps: which cells and seeds to train next, from the tables written so far (issue #22).

A phase diagram's cost is its grid, and most cells lie deep inside a phase whose neighbours all share its label.
The policy trains in waves:

1. **coarse**: every ``coarse_step``-th load and temperature value (from ``coarse_offset``; the first and last
   values too when ``include_edges``), at the first ``start_seeds`` seeds of the grid;
2. **boundary**: the untrained cells fill in by interpolating the *metrics* (:func:`fill_map`), the filled grid is
   labelled with the run's phase rules (analysis.phases), and every untrained cell with a neighbour of another
   label gets the starting seeds; repeated, wave by wave, until no untrained cell lies on a boundary;
3. **top-up**: a trained cell with fewer than ``full_seeds`` seeds whose label is uncertain (a deciding value
   within a margin of its threshold: :func:`uncertain_cells`) gets the rest of its seeds.

Boundary and top-up requests share a wave. Why these choices (a study on the authors' released metrics,
relabelled with this project's rules): neighbours' disagreement finds boundaries where per-cell uncertainty
does not (the sharp/flat transition is a cliff, a median 11x train-loss jump between neighbours, so both
cells look certain); interpolating metrics and then labelling beats copying neighbours' labels; relative
thresholds (loss floor, CKA split) come from the filled full grid, never from the boundary-biased trained
subset; a coarse step above 3-4 grid steps can hide an island inside a block.

Everything here is a pure function of (settings, grid, tables): a resumed sweep derives the same wave from the
same tables. ``next_wave`` returns an empty wave when nothing is left (or the budget is spent). Driving it from
a searcher::

    settings = AdaptiveSettings.from_mapping(cfg_block)          # e.g. {"coarse_step": 3, "budget_models": 400}
    grid = Grid(load_name, load_values, temperature_name, temperature_values, seeds)   # the config's grid
    wave = next_wave(settings, grid, models, pairs)              # the run's tables so far (RunTables.scan)
    for request in wave.cells: ...train request.seeds of (request.load_value, request.temperature_value),
                                  then measure the config's seed pairs among the cell's trained seeds
    wave.to_json()                                               # for the run directory

On the released ResNet18 results (benchmarks/adaptive.py) the defaults train 36-40 % of the models and
agree with the full 5-seed map on every cell, for every coarse offset.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.phases import PhaseRules, label_phases, mc_unit, rules_for_mc_unit

REASONS = ("coarse", "boundary", "top-up")
INTERPOLATIONS = ("linear", "nearest")


@dataclass(frozen=True)
class Grid:
    """The full grid a sweep could train: load values x temperature values x seeds.

    Values are sorted ascending (the grid index follows them); ``seeds`` keep their order, since the policy
    starts every cell with the first ``start_seeds`` of them and tops up with the rest in order.
    """

    load_name: str
    load_values: tuple[float, ...]
    temperature_name: str
    temperature_values: tuple[float, ...]
    seeds: tuple[int, ...]

    def __post_init__(self):
        loads = tuple(sorted({float(v) for v in self.load_values}))
        temps = tuple(sorted({float(v) for v in self.temperature_values}))
        seeds = tuple(int(s) for s in self.seeds)
        if not loads or not temps or not seeds:
            raise ValueError("a grid needs at least one load value, one temperature value and one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"the grid's seeds repeat: {list(seeds)}")
        object.__setattr__(self, "load_values", loads)
        object.__setattr__(self, "temperature_values", temps)
        object.__setattr__(self, "seeds", seeds)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.load_values), len(self.temperature_values)

    def cells(self) -> list[tuple[float, float]]:
        """Every (load value, temperature value), load-major."""
        return [(lv, tv) for lv in self.load_values for tv in self.temperature_values]

    def index(self, load_value: float, temperature_value: float) -> tuple[int, int]:
        return self.load_values.index(float(load_value)), self.temperature_values.index(float(temperature_value))

    def with_seeds(self, seeds) -> Grid:
        return dataclasses.replace(self, seeds=tuple(seeds))

    @classmethod
    def from_tables(cls, models: pd.DataFrame, seeds=None) -> Grid:
        """The grid of a finished run's models table (one load and one temperature knob); seeds ascending unless
        given."""
        names = models[["load_name", "temperature_name"]].drop_duplicates()
        if len(names) != 1:
            raise ValueError(f"the models table holds {len(names)} (load, temperature) knob pairs; pick one's rows")
        return cls(
            str(names.iloc[0, 0]), tuple(models["load_value"].astype(float).unique()),
            str(names.iloc[0, 1]), tuple(models["temperature_value"].astype(float).unique()),
            tuple(seeds) if seeds is not None else tuple(sorted(int(s) for s in models["seed"].dropna().unique())),
        )


@dataclass(frozen=True)
class AdaptiveSettings:
    """How the policy chooses; the module docstring describes the waves.

    The top-up rule is a threshold margin, not a bootstrap: with two seeds a bootstrap has three distinct
    resamples and says little. A value is near its threshold when it lies within ``max(absolute margin,
    top_up_z x pooled standard error)`` of it; the seed-to-seed spread is pooled over every trained cell with
    two or more values, so that a cell's two seeds need not estimate their own spread.

    The top-up defaults (no fixed loss margin, one standard error, one seed at a time) were chosen after replaying
    the policy on the authors' released grid and on two full demo runs; the alternatives' figures are in
    docs/science.md ("Adaptive sweeps on the demo's knobs"). The former fixed margin (a train loss within 2x of the
    sharpness threshold) suited a cliff of ~11x between neighbours; the demo's boundary is a 2-4x step, so it
    topped up most of the demo's cells.
    """

    coarse_step: int = 3  # grid steps between coarse cells; keep <= 3-4 so that no island hides inside a block
    coarse_offset: tuple[int, int] = (0, 0)  # index of the first coarse (load, temperature) value
    include_edges: bool = True  # the first and last values of each axis are coarse too (no extrapolation)
    start_seeds: int = 2  # seeds of a cell's first training (coarse and boundary cells); >= 2 gives a pair
    full_seeds: int | None = None  # seeds of a topped-up cell; None: every seed of the grid
    interpolation: str = "linear"  # "linear" (harmonic fill) or "nearest", on the grid index: see fill_map
    neighbours: int = 4  # 4 (edge neighbours) or 8 (also diagonal) for boundary detection
    refine_iv: bool = True  # whether the IV-A/IV-B crossover counts as a boundary and a reason to top up
    top_up: bool = True
    # seeds one top-up adds to a cell; None: all the rest at once. One at a time is sequential sampling: a cell
    # whose label clears its threshold after one more seed stops there, at the cost of more waves
    top_up_seeds: int | None = 1
    top_up_z: float = 1.0  # standard errors (pooled seed spread / sqrt(n)) a value must clear its threshold by
    loss_margin: float = 1.0  # train loss within this factor of the sharpness threshold is uncertain (1: none)
    # mode connectivity within this many units (pp or nats) of -threshold is uncertain; well below the 1 pp
    # threshold itself, or every well-connected cell (|mc| <= 0.1 pp in the released results) would count
    mc_margin: float = 0.5
    mc_loss_margin: float = 0.005  # the same, for mc measured on the train loss (nats; threshold 0.01 nats)
    cka_margin: float = 0.02  # CKA within this of the IV-A/IV-B split is uncertain
    budget_models: int | None = None  # stop when the run's trained models would exceed it
    rules: PhaseRules = field(default_factory=PhaseRules)

    def __post_init__(self):
        checks = [
            ("coarse_step", isinstance(self.coarse_step, int) and self.coarse_step >= 1, "an integer >= 1"),
            ("coarse_offset", len(self.coarse_offset) == 2 and all(isinstance(o, int) and 0 <= o < self.coarse_step
                                                                   for o in self.coarse_offset),
             "two integers in [0, coarse_step)"),
            ("start_seeds", isinstance(self.start_seeds, int) and self.start_seeds >= 2,
             "an integer >= 2 (a phase needs a connected pair of seeds)"),
            ("full_seeds", self.full_seeds is None or (isinstance(self.full_seeds, int)
                                                      and self.full_seeds >= self.start_seeds),
             "unset or an integer >= start_seeds"),
            ("interpolation", self.interpolation in INTERPOLATIONS, f"one of {INTERPOLATIONS}"),
            ("neighbours", self.neighbours in (4, 8), "4 or 8"),
            ("top_up_z", self.top_up_z >= 0, ">= 0"),
            ("loss_margin", self.loss_margin >= 1, ">= 1 (a factor)"),
            ("mc_margin", self.mc_margin >= 0, ">= 0"),
            ("mc_loss_margin", self.mc_loss_margin >= 0, ">= 0"),
            ("cka_margin", self.cka_margin >= 0, ">= 0"),
            ("top_up_seeds", self.top_up_seeds is None or (isinstance(self.top_up_seeds, int)
                                                          and self.top_up_seeds >= 1), "unset or an integer >= 1"),
            ("budget_models", self.budget_models is None or self.budget_models >= 0, "unset or >= 0"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"adaptive setting {name}={getattr(self, name)!r} is invalid: it must be {want}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object] | None) -> AdaptiveSettings:
        """Settings from a config-like mapping (a YAML block, ``--set name=value`` strings are converted);
        ``rules`` is a mapping of phase-rule overrides (analysis.phases.PhaseRules.from_mapping). Unknown
        names raise ValueError naming the closest known one."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for name, raw in (mapping or {}).items():
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown adaptive setting {name!r}.{hint} Known settings: {', '.join(known)}")
            values[name] = _convert_setting(name, raw, known[name].default)
        return cls(**values)

    def seeds_full(self, grid: Grid) -> tuple[int, ...]:
        return grid.seeds[: self.full_seeds] if self.full_seeds is not None else grid.seeds

    def seeds_start(self, grid: Grid) -> tuple[int, ...]:
        return grid.seeds[: self.start_seeds]

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "rules"}
        out["coarse_offset"] = list(self.coarse_offset)
        out["rules"] = {r["name"]: r["value"] for r in self.rules.describe()}
        return out


def _convert_setting(name: str, raw, default):
    """``raw`` (a YAML value or a string) as the type of the setting's default."""
    if name == "rules":
        return raw if isinstance(raw, PhaseRules) else PhaseRules.from_mapping(raw)
    text = raw.strip().lower() if isinstance(raw, str) else None
    try:
        if name in ("full_seeds", "budget_models", "top_up_seeds"):
            return None if raw is None or text in ("", "none", "null") else _integer(raw)
        if name == "coarse_offset":
            parts = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(_integer(v) for v in parts)
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            if text in ("true", "yes", "1", "false", "no", "0"):
                return text in ("true", "yes", "1")
            raise ValueError
        if isinstance(default, int):
            return _integer(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"adaptive setting {name}={raw!r} is invalid: expected a value like {default!r}") from None


def _integer(raw) -> int:
    value = float(raw)
    if value != int(value):
        raise ValueError
    return int(value)


@dataclass(frozen=True)
class CellRequest:
    """Seeds to train in one cell, and why."""

    load_value: float
    temperature_value: float
    seeds: tuple[int, ...]
    reason: str  # one of REASONS
    detail: str  # in words: which neighbours disagree, which value is near which threshold

    def to_dict(self) -> dict:
        return {"load_value": self.load_value, "temperature_value": self.temperature_value,
                "seeds": list(self.seeds), "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Wave:
    """The next cells to train; empty when the sweep is done (``note`` says why it stopped)."""

    cells: tuple[CellRequest, ...]
    note: str = ""

    @property
    def done(self) -> bool:
        return not self.cells

    @property
    def models(self) -> int:
        return sum(len(c.seeds) for c in self.cells)

    def counts(self) -> dict[str, int]:
        """Cells per reason."""
        return {r: sum(c.reason == r for c in self.cells) for r in REASONS}

    def to_dict(self) -> dict:
        return {"done": self.done, "models": self.models, "counts": self.counts(), "note": self.note,
                "cells": [c.to_dict() for c in self.cells]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# ---------------------------------------------------------------------------------------------
# The policy


def next_wave(settings: AdaptiveSettings, grid: Grid, models: pd.DataFrame, pairs: pd.DataFrame) -> Wave:
    """The next wave of ``settings``' policy on ``grid``, given the run's models and pairs rows so far.

    models, pairs: the run's tables (analysis.tables format); rows outside the grid are ignored. A model row
    of any status counts as trained (a failed one is the orchestrator's to retry, not the policy's to re-ask).
    """
    if len(grid.seeds) < settings.start_seeds:
        raise ValueError(f"the grid has {len(grid.seeds)} seed(s) but the adaptive policy starts every cell with "
                         f"start_seeds={settings.start_seeds}; give the sweep at least that many seeds")
    trained = trained_seeds(grid, models)
    start, full = settings.seeds_start(grid), settings.seeds_full(grid)
    coarse = [
        CellRequest(lv, tv, missing, "coarse", "coarse grid")
        for lv, tv in coarse_cells(grid, settings)
        if (missing := _missing(start, trained.get((lv, tv), ())))
    ]
    if coarse:
        return _within_budget(settings, trained, coarse)
    filled = fill_map(grid, models, pairs, settings)
    requests = boundary_requests(grid, filled, trained, settings)
    if settings.top_up and len(full) > len(start):
        requests += top_up_requests(grid, filled, trained, models, pairs, settings)
    if not requests:
        return Wave((), "no untrained cell on a boundary and no uncertain cell below full seeds")
    return _within_budget(settings, trained, requests)


def _missing(wanted, have) -> tuple[int, ...]:
    have = set(have)
    return tuple(s for s in wanted if s not in have)


def _within_budget(settings: AdaptiveSettings, trained: dict, requests: list[CellRequest]) -> Wave:
    """The longest prefix of ``requests`` (already most valuable first) that fits the budget."""
    if settings.budget_models is None:
        return Wave(tuple(requests))
    left = settings.budget_models - sum(len(s) for s in trained.values())
    chosen = []
    for r in requests:
        if len(r.seeds) > left:
            break
        chosen.append(r)
        left -= len(r.seeds)
    note = "" if len(chosen) == len(requests) else (
        f"budget of {settings.budget_models} models reached: {len(requests) - len(chosen)} requested cell(s) left")
    return Wave(tuple(chosen), note)


def trained_seeds(grid: Grid, models: pd.DataFrame) -> dict[tuple[float, float], tuple[int, ...]]:
    """{(load value, temperature value): seeds with a models row (any status)} for the grid's cells and seeds."""
    m = _on_grid(grid, models)
    if m.empty:
        return {}
    out: dict[tuple[float, float], set[int]] = {}
    for lv, tv, s in zip(m["load_value"], m["temperature_value"], m["seed"]):
        out.setdefault((float(lv), float(tv)), set()).add(int(s))
    return {k: tuple(sorted(v)) for k, v in out.items()}


def _on_grid(grid: Grid, df: pd.DataFrame, seed_cols=("seed",)) -> pd.DataFrame:
    if df is None or df.empty:
        return pd.DataFrame(columns=list(df.columns) if df is not None else [])
    keep = ((df["load_name"] == grid.load_name) & (df["temperature_name"] == grid.temperature_name)
            & df["load_value"].astype(float).isin(grid.load_values)
            & df["temperature_value"].astype(float).isin(grid.temperature_values))
    for col in seed_cols:
        keep &= pd.to_numeric(df[col], errors="coerce").isin(grid.seeds)
    return df[keep]


def coarse_indices(n: int, step: int, offset: int, include_edges: bool) -> list[int]:
    """Indices of the coarse values along an axis of ``n`` values."""
    idx = set(range(min(offset, n - 1), n, step))
    if include_edges:
        idx |= {0, n - 1}
    return sorted(idx)


def coarse_cells(grid: Grid, settings: AdaptiveSettings) -> list[tuple[float, float]]:
    nl, nt = grid.shape
    li = coarse_indices(nl, settings.coarse_step, settings.coarse_offset[0], settings.include_edges)
    ti = coarse_indices(nt, settings.coarse_step, settings.coarse_offset[1], settings.include_edges)
    return [(grid.load_values[i], grid.temperature_values[j]) for i in li for j in ti]


# ---------------------------------------------------------------------------------------------
# The map so far: measured cells, the rest interpolated, all labelled


def cell_means(grid: Grid, models: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per grid cell with a measured value: the means :func:`analysis.aggregate.aggregate_cells` gives
    for the values phases are decided by (ok models' ``train_loss``; ok pairs' ``mode_connectivity`` and ``cka``
    over their finite values, with ``_std`` (ddof 1) and ``_n``), over the grid's seeds only.

    Computed here with group-bys rather than through aggregate_cells, which walks cells one by one (over a
    second for 210 cells): the policy recomputes the map every wave, the replay hundreds of times.
    """
    m = _on_grid(grid, models)
    m = m[m["status"] == "ok"] if len(m) else m
    p = _on_grid(grid, pairs, ("seed_a", "seed_b"))
    p = p[p["status"] == "ok"] if len(p) else p
    keys = ["load_value", "temperature_value"]
    frames = []
    for df, cols in ((m, ["train_loss"]), (p, ["mode_connectivity", "cka"])):
        if df.empty:
            continue
        df = df.assign(**{k: df[k].astype(float) for k in keys},
                       **{c: pd.to_numeric(df[c], errors="coerce") for c in cols})
        g = df.groupby(keys)[cols]
        stats = pd.concat([g.mean(), g.std(ddof=1).add_suffix("_std"), g.count().add_suffix("_n")], axis=1)
        frames.append(stats)
    out = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    for c in ("train_loss", "mode_connectivity", "cka"):
        for suffix, default in (("", math.nan), ("_std", math.nan), ("_n", 0)):
            if c + suffix not in out.columns:
                out[c + suffix] = default
    return out.reset_index() if len(out) else pd.DataFrame(columns=keys + list(out.columns))


def fill_map(grid: Grid, models: pd.DataFrame, pairs: pd.DataFrame,
             settings: AdaptiveSettings | None = None) -> pd.DataFrame:
    """Every cell of ``grid``, labelled by the phase rules: measured values where a cell has them, the rest
    interpolated, then labelled with :func:`analysis.phases.label_phases` on the whole filled grid (so the
    relative thresholds, the loss floor and the CKA split, come from the full grid, not the trained subset).

    Interpolated, each from the cells where it is measured, on the grid index (the paper's grids are log-spaced
    in both knobs, so an index step is a step in log load and in log temperature): log train loss, mode
    connectivity and CKA. "linear" is the harmonic fill: each filled value is the mean of its 4 neighbours, the
    measured ones fixed (the smoothest fill: it minimises the sum of squared differences between neighbours;
    along a single line it is linear interpolation, and it never leaves the range of the measured values); on a
    2-D coarse lattice it sags between two equal measured cells towards the rows around them, unlike bilinear
    interpolation, but it needs no lattice: the trained cells after a boundary wave are scattered. "nearest"
    copies the nearest measured cell (the mean of the nearest ones on a tie).

    Columns: the cell columns, ``train_loss``, ``mode_connectivity`` (+ ``_std``, ``_n``), ``cka`` (+ ``_n``),
    ``n_models_trained`` (ok models), ``interpolated`` (True when any of the three values was filled rather than
    measured), then ``analysis.phases.LABEL_COLUMNS``.
    """
    settings = settings or AdaptiveSettings()
    nl, nt = grid.shape
    measured = cell_means(grid, models, pairs)
    frame = pd.DataFrame(
        [(grid.load_name, lv, grid.temperature_name, tv) for lv, tv in grid.cells()],
        columns=["load_name", "load_value", "temperature_name", "temperature_value"],
    )
    frame = frame.merge(measured, on=["load_value", "temperature_value"], how="left")
    frame["train_loss_n"] = frame["train_loss_n"].fillna(0).astype(int)
    interpolated = np.zeros(len(frame), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_loss = np.where(frame["train_loss"] > 0, np.log(frame["train_loss"].astype(float)), np.nan)
    for col, values, back in (("train_loss", log_loss, np.exp),
                              ("mode_connectivity", frame["mode_connectivity"].to_numpy(float), None),
                              ("cka", frame["cka"].to_numpy(float), None)):
        grid_values = values.reshape(nl, nt)
        filled = interpolate(grid_values, settings.interpolation).reshape(-1)
        was_missing = ~np.isfinite(values)
        interpolated |= was_missing & np.isfinite(filled)
        frame[col] = back(filled) if back is not None else filled
    frame["n_models_trained"] = frame.pop("train_loss_n")
    frame["interpolated"] = interpolated
    keep = ["load_name", "load_value", "temperature_name", "temperature_value", "train_loss", "mode_connectivity",
            "mode_connectivity_std", "mode_connectivity_n", "cka", "cka_n", "n_models_trained", "interpolated"]
    frame = frame[keep]
    p = _on_grid(grid, pairs, ("seed_a", "seed_b"))
    rules = rules_for_mc_unit(settings.rules, mc_unit(p)) if len(p) else settings.rules
    return label_phases(frame, rules)


def interpolate(values: np.ndarray, method: str = "linear") -> np.ndarray:
    """A copy of the 2-D ``values`` with its non-finite entries filled from the finite ones (see fill_map);
    all NaN when none is finite."""
    values = np.asarray(values, dtype=float)
    known = np.isfinite(values)
    if known.all() or not known.any():
        return values.copy()
    if method == "nearest":
        return _nearest_fill(values, known)
    if method == "linear":
        return _harmonic_fill(values, known)
    raise ValueError(f"unknown interpolation {method!r}; use one of {INTERPOLATIONS}")


def _nearest_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    ki, kj = np.nonzero(known)
    ui, uj = np.nonzero(~known)
    d2 = (ui[:, None] - ki[None, :]) ** 2 + (uj[:, None] - kj[None, :]) ** 2
    nearest = d2 == d2.min(axis=1, keepdims=True)
    out = values.copy()
    out[ui, uj] = (nearest * values[ki, kj][None, :]).sum(axis=1) / nearest.sum(axis=1)
    return out


def _harmonic_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Solve the discrete Laplace equation on the grid graph (4 neighbours, none beyond the edges) for the
    unknown cells, the known ones fixed. Every connected block of unknown cells touches a known cell (the grid
    is connected and some cell is known), so the system is non-singular."""
    nl, nt = values.shape
    ui, uj = np.nonzero(~known)
    row_of = -np.ones(values.shape, dtype=int)
    row_of[ui, uj] = np.arange(len(ui))
    a = np.zeros((len(ui), len(ui)))
    b = np.zeros(len(ui))
    for r, (i, j) in enumerate(zip(ui, uj)):
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ni, nj = i + di, j + dj
            if 0 <= ni < nl and 0 <= nj < nt:
                a[r, r] += 1
                if known[ni, nj]:
                    b[r] += values[ni, nj]
                else:
                    a[r, row_of[ni, nj]] -= 1
    out = values.copy()
    out[ui, uj] = np.linalg.solve(a, b)
    return out


# ---------------------------------------------------------------------------------------------
# Boundaries and uncertainty


def boundary_label(phase, refine_iv: bool) -> str:
    """The label neighbours are compared by: IV-A and IV-B merge unless the crossover is refined; undecided
    cells compare as their own label (a hole in the map is worth training)."""
    if phase is None or (isinstance(phase, float) and math.isnan(phase)):
        return "undecided"
    return "IV" if (not refine_iv and str(phase).startswith("IV")) else str(phase)


def boundary_cells(grid: Grid, filled: pd.DataFrame, settings: AdaptiveSettings) -> dict[tuple[int, int], list]:
    """{(i, j): [(neighbour index, its label), ...]} for every cell with a neighbour of another label."""
    nl, nt = grid.shape
    labels = np.array([boundary_label(p, settings.refine_iv) for p in filled["phase"]], dtype=object).reshape(nl, nt)
    steps = [(1, 0), (-1, 0), (0, 1), (0, -1)]
    if settings.neighbours == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    out = {}
    for i in range(nl):
        for j in range(nt):
            other = [((i + di, j + dj), labels[i + di, j + dj]) for di, dj in steps
                     if 0 <= i + di < nl and 0 <= j + dj < nt and labels[i + di, j + dj] != labels[i, j]]
            if other:
                out[(i, j)] = other
    return out


def boundary_requests(grid: Grid, filled: pd.DataFrame, trained: dict, settings: AdaptiveSettings
                      ) -> list[CellRequest]:
    """Cells on a boundary of the filled map still lacking starting seeds; most disagreeing neighbours first."""
    nl, nt = grid.shape
    start = settings.seeds_start(grid)
    phases = filled["phase"].to_numpy(dtype=object).reshape(nl, nt)
    found = []
    for (i, j), other in boundary_cells(grid, filled, settings).items():
        lv, tv = grid.load_values[i], grid.temperature_values[j]
        missing = _missing(start, trained.get((lv, tv), ()))
        if not missing:
            continue
        own = boundary_label(phases[i, j], settings.refine_iv)
        seen = ", ".join(sorted({str(lab) for _, lab in other}))
        detail = f"{'interpolated ' if not trained.get((lv, tv)) else ''}{own} next to {seen} ({len(other)} neighbours)"
        found.append((-len(other), i, j, CellRequest(lv, tv, missing, "boundary", detail)))
    return [r for *_, r in sorted(found, key=lambda x: x[:3])]


def pooled_std(values: pd.Series, groups: list[pd.Series]) -> float:
    """Within-group standard deviation pooled over the groups with two or more finite values; NaN when none."""
    df = pd.DataFrame({"v": pd.to_numeric(values, errors="coerce"), **{f"g{i}": g for i, g in enumerate(groups)}})
    df = df[np.isfinite(df["v"])]
    if df.empty:
        return math.nan
    g = df.groupby([f"g{i}" for i in range(len(groups))])["v"]
    n, var = g.count(), g.var(ddof=1)
    ok = n >= 2
    dof = float((n[ok] - 1).sum())
    return math.sqrt(float(((n[ok] - 1) * var[ok]).sum()) / dof) if dof > 0 else math.nan


def uncertain_cells(grid: Grid, filled: pd.DataFrame, models: pd.DataFrame, pairs: pd.DataFrame,
                    settings: AdaptiveSettings) -> dict[tuple[int, int], tuple[float, str]]:
    """{(i, j): (closeness, why)} for measured cells whose label could flip with more seeds: a deciding value
    within ``max(margin, top_up_z x pooled standard error)`` of its threshold. ``closeness`` is the smallest
    distance / allowance (below 1 means uncertain; smaller is more uncertain); -1 for a trained cell whose
    pair values had to be filled in (no ok pair: its label is a guess)."""
    m = _on_grid(grid, models)
    m = m[m["status"] == "ok"]
    p = _on_grid(grid, pairs, ("seed_a", "seed_b"))
    p = p[p["status"] == "ok"] if len(p) else p
    cells_m = [m["load_value"].astype(float), m["temperature_value"].astype(float)]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_loss = np.log(pd.to_numeric(m["train_loss"], errors="coerce"))
        sd_log_loss = pooled_std(log_loss, cells_m) if len(m) else math.nan
    cells_p = [p["load_value"].astype(float), p["temperature_value"].astype(float)] if len(p) else []
    sd_mc = pooled_std(p["mode_connectivity"], cells_p) if len(p) else math.nan
    sd_cka = pooled_std(p["cka"], cells_p) if len(p) else math.nan
    mc_margin = settings.mc_loss_margin if len(p) and mc_unit(p) == "nats" else settings.mc_margin

    def allowance(margin, sd, n):
        noise = settings.top_up_z * sd / math.sqrt(n) if math.isfinite(sd) and n > 0 else 0.0
        return max(margin, noise)

    # Without a resolved crossover (phase-IV CKA spans less than cka_min_range: all IV-B) the split is no
    # threshold, and a cell's CKA next to it says nothing.
    iv_cka = filled.loc[filled["cka_class"].notna(), "cka"]
    crossover = settings.rules.cka_threshold is not None or (
        len(iv_cka) > 0 and float(iv_cka.max() - iv_cka.min()) >= settings.rules.cka_min_range)
    nl, nt = grid.shape
    out = {}
    for r, row in enumerate(filled.itertuples(index=False)):
        if row.n_models_trained > 0 and row.interpolated:
            # trained, but no ok pair measured its mc or CKA (a seed diverged or failed): more seeds may give one
            out[(r // nt, r % nt)] = (-1.0, "trained but mode connectivity or CKA not measured (filled in)")
            continue
        if row.interpolated or row.phase is None:
            continue
        checks = []
        n_models = max(int(row.n_models_trained), 1)
        n_pairs = int(row.mode_connectivity_n) if np.isfinite(row.mode_connectivity_n) else 0
        if row.train_loss > 0 and row.sharpness_threshold > 0:
            checks.append((abs(math.log(row.train_loss / row.sharpness_threshold)),
                           allowance(math.log(settings.loss_margin), sd_log_loss, n_models),
                           f"train loss {row.train_loss:.3g} near sharpness threshold {row.sharpness_threshold:.3g}"))
        checks.append((abs(row.mode_connectivity + row.connectivity_threshold),
                       allowance(mc_margin, sd_mc, n_pairs),
                       f"mc {row.mode_connectivity:.3g} near -{row.connectivity_threshold:.3g}"))
        if settings.refine_iv and crossover and row.cka_class is not None and math.isfinite(row.cka_split):
            cka_n = int(row.cka_n) if np.isfinite(row.cka_n) else 0
            checks.append((abs(row.cka - row.cka_split), allowance(settings.cka_margin, sd_cka, cka_n),
                           f"CKA {row.cka:.3g} near IV-A/IV-B split {row.cka_split:.3g}"))
        close = [(d / a if a > 0 else math.inf, why) for d, a, why in checks if d < a]
        if close:
            out[(r // nt, r % nt)] = (min(c for c, _ in close), "; ".join(why for _, why in close))
    return out


def top_up_requests(grid: Grid, filled: pd.DataFrame, trained: dict, models: pd.DataFrame, pairs: pd.DataFrame,
                    settings: AdaptiveSettings) -> list[CellRequest]:
    """Measured cells with an uncertain label and fewer than the full seeds: the rest of them, most uncertain
    first."""
    full = settings.seeds_full(grid)
    found = []
    for (i, j), (closeness, why) in uncertain_cells(grid, filled, models, pairs, settings).items():
        lv, tv = grid.load_values[i], grid.temperature_values[j]
        missing = _missing(full, trained.get((lv, tv), ()))[: settings.top_up_seeds]
        if missing:
            found.append((closeness, i, j, CellRequest(lv, tv, missing, "top-up", why)))
    return [r for *_, r in sorted(found, key=lambda x: x[:3])]
