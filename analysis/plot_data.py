"""The numbers behind every figure, computed apart from drawing so they can be tested without images.

Layout (method.md section 7, the paper's Figures 2-4): one heatmap per metric on shared axes, x = load
increasing to the right, y = temperature with the hot end on top (small batch sizes on top; large learning
rates and weight decays on top). Cells sit at categorical positions labelled with their values, as in the
paper: the grids are geometric, so equal spacing of the categories is the log scale.

Colour ranges. Default policy "paper": the authors' fixed ranges (method.md section 7, ``PAPER_COLOR_RANGES``),
so diagrams of different runs are comparable and values outside are clipped (the colour bar shows arrows).
Those ranges were fitted to ResNet18 on CIFAR-10; a run whose values mostly lie elsewhere (a small CPU model
on MNIST-1D has test accuracy 0.3-0.7) would show one flat colour, so a metric falls back to its data range
when fewer than three quarters of its cells lie inside the fixed range. Every heatmap records which range it used
(``range_source``); ``color_ranges`` overrides per metric with (lo, hi) (or the text "lo,hi"), "paper" or
"data".

A little over ~400 lines: the text grids at the end share the Grid with the figures, so they live here.
"""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.phases import MC_UNIT_DEFAULT, PHASES
from analysis.tables import format_value
from workloads import knobs
from workloads.metric_specs import BUILTINS, MetricSet

@dataclass(frozen=True)
class PanelSpec:
    metric: str
    title: str
    cmap: str
    diverging: bool = False  # centred at 0 (TwoSlopeNorm), symmetric data range
    log_scale: bool = False  # logarithmic colour scale (positive values only)
    fmt: str = ".2g"  # how a cell's value is printed into small grids
    paper_range: tuple[float, float] | None = None  # the authors' fixed colour range (method.md section 7)


def panel_specs(metrics: MetricSet = BUILTINS) -> list[PanelSpec]:
    """The panels of ``metrics`` (workloads/metric_specs.py declares each metric's panel), in their order."""
    return [PanelSpec(s.shown, s.panel.title, s.panel.cmap, s.panel.diverging, s.panel.log_scale, s.panel.fmt,
                      s.panel.paper_range) for s in metrics.panels()]


# Short forms of the pairs' mc_unit, for a panel's title.
MC_UNIT_ABBREVIATION = {"percentage points": "pp", "nats": "nats"}


def mc_unit_short(mc_unit: str) -> str:
    """"pp" or "nats": the pairs' mc_unit as a panel title or table header writes it."""
    return MC_UNIT_ABBREVIATION.get(mc_unit, mc_unit)


def panel_for_unit(spec: PanelSpec, mc_unit: str = MC_UNIT_DEFAULT) -> PanelSpec:
    """The mode-connectivity panel of a run whose mc is not in percentage points (metrics.curve.mc_on: loss gives
    nats): its title names the unit, and it has no paper range (the authors' -30..30 is in percentage points, and
    would draw every nats value as 0). Other panels, and mc in percentage points, are returned as they are."""
    if spec.metric != "mode_connectivity" or mc_unit == MC_UNIT_DEFAULT:
        return spec
    return dataclasses.replace(spec, title=f"mode connectivity ({mc_unit_short(mc_unit)})",
                               paper_range=None)


# The paper's panel set, in its order (the built-in metrics' panels).
PANELS: list[PanelSpec] = panel_specs()
PANEL_BY_METRIC = {p.metric: p for p in PANELS}
# The authors' colour ranges (method.md section 7).
PAPER_COLOR_RANGES: dict[str, tuple[float, float]] = {p.metric: p.paper_range for p in PANELS if p.paper_range}

PHASE_COLORS = {"I": "#d1495b", "II": "#edae49", "III": "#00798c", "IV-A": "#9bd08f", "IV-B": "#2f8f3a"}
# The key beside the phase map: what each label means (method.md section 5).
PHASE_KEY = {
    "I": "sharp, poorly connected",
    "II": "sharp, well connected",
    "III": "flat, poorly connected",
    "IV-A": "flat, well connected, lower CKA",
    "IV-B": "flat, well connected, higher CKA",
}
MISSING_COLOR = "#d9d9d9"


# On a log colour scale a range must be positive: the paper's train-loss range 0-3 starts at this instead (the
# phase rules' loss_floor_min: below it every loss counts as converged).
LOG_SCALE_FLOOR = 1e-3
# Cell values are printed into the heatmaps of grids up to this many cells (beyond, they are unreadable).
MAX_PRINTED_CELLS = 64

# A metric keeps the paper's range when at least this fraction of its cells lies inside it. On the released
# results 87-90 % of the cells lie inside for every panel (the authors clip their smallest widths), so their
# own data keeps their ranges; a run with a quarter of its cells outside is on another scale.
PAPER_RANGE_MIN_INSIDE = 0.75


# ---------------------------------------------------------------------------------------------
# The shared grid


@dataclass(frozen=True)
class Grid:
    """Cell positions: column j holds x_values[j] (increasing load), row i holds y_values[i] (row 0 = top = hot)."""

    load_name: str
    temperature_name: str
    x_values: tuple[float, ...]
    y_values: tuple[float, ...]

    @property
    def x_labels(self) -> list[str]:
        return [format_value(v) for v in self.x_values]

    @property
    def y_labels(self) -> list[str]:
        return [format_value(v) for v in self.y_values]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.y_values), len(self.x_values)

    def position(self, load_value: float, temperature_value: float) -> tuple[int, int]:
        """(row, column) of a cell."""
        return self.y_values.index(float(temperature_value)), self.x_values.index(float(load_value))

    def to_matrix(self, cells: pd.DataFrame, column: str, fill=np.nan, dtype=float) -> np.ndarray:
        """(ny, nx) array of ``column`` at each cell's position; ``fill`` where a cell is absent or null."""
        out = np.full(self.shape, fill, dtype=dtype)
        for lv, tv, v in zip(cells["load_value"], cells["temperature_value"], cells[column]):
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                continue
            out[self.position(lv, tv)] = v
        return out


def cell_grid(cells: pd.DataFrame) -> Grid:
    """The grid of a table of cells holding exactly one load and one temperature knob."""
    loads, temps = sorted(set(cells["load_name"])), sorted(set(cells["temperature_name"]))
    if len(loads) != 1 or len(temps) != 1:
        raise ValueError(
            f"one diagram needs one load and one temperature knob; these cells have loads {loads} and temperatures "
            f"{temps}: select one combination, e.g. cells[(cells.load_name == {loads[0]!r}) & "
            f"(cells.temperature_name == {temps[0]!r})]"
        )
    x = tuple(sorted({float(v) for v in cells["load_value"]}))
    y = sorted({float(v) for v in cells["temperature_value"]}, reverse=knobs.hot_when_large(temps[0]))
    return Grid(loads[0], temps[0], x, tuple(y))


# ---------------------------------------------------------------------------------------------
# Heatmaps


@dataclass(frozen=True)
class SeedSpread:
    """What a panel's cell values average, per cell (ny, nx): the mean, sample std (NaN below two values) and
    number of values of ``column`` over the cell's ``members`` ("models" or "pairs"). For a log panel
    (ln λ_max) ``column`` is the Hessian quantity whose mean the panel shows the log of."""

    column: str
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray  # int, 0 where the cell is absent
    members: str


def seed_spread(cells: pd.DataFrame, metric: str, grid: Grid, metrics: MetricSet = BUILTINS) -> SeedSpread | None:
    """The SeedSpread behind panel ``metric`` from aggregate_cells' ``<column>``, ``_std``, ``_n`` columns;
    None when the cells lack them (a table made elsewhere)."""
    spec = metrics.by_shown().get(metric)
    column = spec.name if spec is not None else metric
    names = [column, f"{column}_std", f"{column}_n"]
    if any(n not in cells.columns for n in names):
        return None
    mean, std, count = (grid.to_matrix(cells.assign(_v=pd.to_numeric(cells[n], errors="coerce")), "_v")
                        for n in names)
    members = "pairs" if spec is not None and spec.per == "pair" else "models"
    return SeedSpread(column, mean, std, np.nan_to_num(count, nan=0).astype(int), members)


@dataclass
class HeatmapData:
    """One metric panel: values (ny, nx) in grid order (NaN = missing), colour scale, boundary segments, and
    the spread over seeds behind each value (None when the cells do not carry it)."""

    metric: str
    title: str
    grid: Grid
    values: np.ndarray
    vmin: float
    vmax: float
    cmap: str
    center: float | None  # 0 for diverging maps
    range_source: str  # "paper", "data", "user", or "data (...why...)"
    boundaries: list = field(default_factory=list)
    log_scale: bool = False
    fmt: str = ".2g"
    spread: SeedSpread | None = None

    @property
    def range_label(self) -> str:
        return range_label(self.range_source, self.vmin, self.vmax)

    @property
    def print_values(self) -> bool:
        """Whether the grid is small enough for each cell's value to be printed in it."""
        return self.values.size <= MAX_PRINTED_CELLS

    def cell_text(self, i: int, j: int) -> str:
        v = self.values[i, j]
        return "" if not np.isfinite(v) else format(float(v), self.fmt)

    @property
    def clipped_low(self) -> bool:
        return bool(np.nanmin(self.values) < self.vmin) if np.isfinite(self.values).any() else False

    @property
    def clipped_high(self) -> bool:
        return bool(np.nanmax(self.values) > self.vmax) if np.isfinite(self.values).any() else False


def data_range(values: np.ndarray, *, diverging: bool = False, log_scale: bool = False) -> tuple[float, float]:
    """(lo, hi) of the finite values; symmetric about 0 when diverging; widened when degenerate; positive values
    only (and a factor-2 margin when degenerate) on a log scale."""
    finite = values[np.isfinite(values)]
    if log_scale:
        finite = finite[finite > 0]
        if finite.size == 0:
            return LOG_SCALE_FLOOR, 1.0
        lo, hi = float(finite.min()), float(finite.max())
        return (lo / 2, hi * 2) if hi <= lo else (lo, hi)
    if finite.size == 0:
        return (-1.0, 1.0) if diverging else (0.0, 1.0)
    if diverging:
        m = float(np.max(np.abs(finite)))
        m = m if m > 0 else 1.0
        return -m, m
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:  # one value: a range around it, so the colour is mid-scale rather than undefined
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    return lo, hi


def choose_color_range(metric: str, values: np.ndarray, override=None, spec: PanelSpec | None = None
                       ) -> tuple[float, float, str]:
    """(vmin, vmax, range_source) by the policy in the module docstring; override: None, "paper", "data", (lo, hi).
    spec: the panel (default: the built-in panel of ``metric``)."""
    spec = spec or PANEL_BY_METRIC.get(metric, PanelSpec(metric, metric, "viridis"))
    diverging, log_scale = spec.diverging, spec.log_scale
    if isinstance(override, str) and "," in override:  # "lo,hi" as typed on a command line
        try:
            override = tuple(float(v) for v in override.split(","))
        except ValueError:
            raise ValueError(f"colour range for {metric} must be 'low,high' numbers, got {override!r}") from None
        if len(override) != 2:
            raise ValueError(f"colour range for {metric} must be 'low,high', got {override!r}")
    if override is not None and not isinstance(override, str):
        lo, hi = (float(v) for v in override)
        if not hi > lo:
            raise ValueError(f"colour range for {metric} must have low < high, got {override!r}")
        if log_scale and not lo > 0:
            raise ValueError(f"colour range for {metric} is on a log scale: low must be > 0, got {override!r}")
        return lo, hi, "user"
    if override not in (None, "paper", "data"):
        raise ValueError(f"colour range for {metric} must be (low, high), 'paper' or 'data'; got {override!r}")
    paper = spec.paper_range
    if paper is not None and log_scale:
        paper = (max(paper[0], LOG_SCALE_FLOOR), paper[1])
    if override == "data" or paper is None:
        return (*data_range(values, diverging=diverging, log_scale=log_scale), "data")
    finite = values[np.isfinite(values)]
    if override == "paper" or finite.size == 0:
        return (*paper, "paper")
    inside = float(np.mean((finite >= paper[0]) & (finite <= paper[1])))
    if inside >= PAPER_RANGE_MIN_INSIDE:
        return (*paper, "paper")
    why = f"data ({inside:.0%} of cells inside the paper's {paper[0]:g}-{paper[1]:g})"
    return (*data_range(values, diverging=diverging, log_scale=log_scale), why)


def range_label(source: str, vmin: float, vmax: float) -> str:
    """The colour bar's label: which range is drawn, and why when it is not the paper's, in words (two lines at
    most, to fit beside a panel)."""
    span = f"{vmin:.3g} to {vmax:.3g}"
    if source == "paper":
        return f"the paper's fixed range {span}"
    if source == "user":
        return f"range set by the user: {span}"
    if source.startswith("data (") and " of cells inside the paper's " in source:
        share, paper = source[len("data ("):-1].split(" of cells inside the paper's ")
        return f"this run's range {span}:\nonly {share} of cells in the paper's {paper}"
    return f"this run's range {span}"


def heatmap_data(cells: pd.DataFrame, metric: str, *, color_range=None, grid: Grid | None = None,
                 metrics: MetricSet = BUILTINS, mc_unit: str = MC_UNIT_DEFAULT) -> HeatmapData:
    """Panel data of ``metric`` (a column of the cells table); phase boundaries included when labelled. An
    interpolated cell (an adaptive run's untrained cell) is missing on every panel: its values are not measured.
    metrics: where the panel of ``metric`` is declared (the built-ins plus the run's added metrics); mc_unit: the
    unit of the run's mode connectivity (the pairs' mc_unit; see panel_for_unit)."""
    panels = {p.metric: p for p in panel_specs(metrics)}
    if metric not in cells.columns:
        raise ValueError(f"cells have no column {metric!r}; panels: {list(panels)}")
    grid = grid or cell_grid(cells)
    spec = panel_for_unit(panels.get(metric, PanelSpec(metric, metric, "viridis")), mc_unit)
    measured = pd.to_numeric(cells[metric], errors="coerce")
    if "interpolated" in cells.columns:  # a panel shows measurements: an untrained cell's filled values are not
        measured = measured.where(~cells["interpolated"].fillna(False).astype(bool))
    values = grid.to_matrix(cells.assign(_v=measured), "_v")
    vmin, vmax, source = choose_color_range(metric, values, color_range, spec)
    bounds = phase_boundaries(grid.to_matrix(cells, "phase", fill=None, dtype=object)) if "phase" in cells else []
    return HeatmapData(
        metric, spec.title, grid, values, vmin, vmax, spec.cmap, 0.0 if spec.diverging else None, source, bounds,
        spec.log_scale, spec.fmt, seed_spread(cells, metric, grid, metrics),
    )


# ---------------------------------------------------------------------------------------------
# Phase map


@dataclass
class PhaseMapData:
    """labels (ny, nx) object array (None = unlabelled), codes (ny, nx) int index into ``phases`` (-1 = none);
    reasons and notes (ny, nx) object arrays: each cell's ``phase_reason`` and ``members_missing`` (None where
    absent or complete)."""

    grid: Grid
    labels: np.ndarray
    codes: np.ndarray
    phases: tuple[str, ...]
    colors: dict[str, str]
    boundaries: list
    counts: dict[str, int]
    reasons: np.ndarray | None = None
    notes: np.ndarray | None = None
    # (ny, nx) float: the bootstrap frequency of each cell's label (NaN: not resampled), and (ny, nx) object: the
    # most frequent other label (None: every draw agreed); from the cells' phase_confidence / phase_runner_up.
    confidence: np.ndarray | None = None
    runner_up: np.ndarray | None = None
    # (ny, nx) object: how each cell was sampled (the cells' ``sampling``: analysis.adaptive_cells.SAMPLING;
    # None where absent). An adaptive run's untrained cells are "interpolated", drawn paler and dotted.
    sampling: np.ndarray | None = None

    @property
    def interpolated(self) -> np.ndarray:
        """(ny, nx) bool: cells not trained, their label from interpolated values (drawn pale and dotted, with a
        key entry); all False for a grid run."""
        if self.sampling is None:
            return np.zeros(self.labels.shape, dtype=bool)
        return self.sampling == "interpolated"

    @property
    def start_seeds_only(self) -> np.ndarray:
        """(ny, nx) bool: cells an adaptive run trained at its starting seeds only (marked with a small dot)."""
        if self.sampling is None:
            return np.zeros(self.labels.shape, dtype=bool)
        return self.sampling == "start seeds"

    @property
    def uncertain(self) -> np.ndarray:
        """(ny, nx) bool: cells whose label fewer than UNCERTAIN_BELOW of the seed resamplings give (drawn
        hatched, with a key entry); all False without resampling."""
        if self.confidence is None:
            return np.zeros(self.labels.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.confidence) & (self.confidence < UNCERTAIN_BELOW)


# A phase label given by fewer than this fraction of the seed resamplings (the cells' phase_confidence,
# analysis.bootstrap) is drawn as uncertain: hatched in the figures, pale in the report. Four in five: a label
# that one resampling in four or more changes is not one a reader should take at face value.
UNCERTAIN_BELOW = 0.8
UNCERTAIN_KEY = f"hatched: label in < {UNCERTAIN_BELOW:.0%} of seed resamplings"
INTERPOLATED_KEY = "pale, dotted: interpolated (not trained)"
START_SEEDS_KEY = "dot: trained at the starting seeds only"


def phase_map_data(cells: pd.DataFrame, *, grid: Grid | None = None) -> PhaseMapData:
    if "phase" not in cells.columns:
        raise ValueError("cells have no 'phase' column: label them with analysis.phases.label_phases first")
    grid = grid or cell_grid(cells)
    labels = grid.to_matrix(cells, "phase", fill=None, dtype=object)
    unknown = {v for v in labels.ravel() if v is not None} - set(PHASES)
    if unknown:
        raise ValueError(f"unknown phase label(s) {sorted(unknown)}; expected {PHASES}")
    codes = np.vectorize(lambda v: PHASES.index(v) if v is not None else -1, otypes=[int])(labels)
    counts = {p: int(np.sum(labels == p)) for p in PHASES}
    counts["unlabelled"] = int(np.sum(codes < 0))
    text = {c: grid.to_matrix(cells, c, fill=None, dtype=object) if c in cells.columns else None
            for c in ("phase_reason", "members_missing")}
    confidence = (grid.to_matrix(cells.assign(_c=pd.to_numeric(cells["phase_confidence"], errors="coerce")), "_c")
                  if "phase_confidence" in cells.columns else None)
    runner_up = (grid.to_matrix(cells, "phase_runner_up", fill=None, dtype=object)
                 if "phase_runner_up" in cells.columns else None)
    sampling = grid.to_matrix(cells, "sampling", fill=None, dtype=object) if "sampling" in cells.columns else None
    return PhaseMapData(grid, labels, codes, PHASES, dict(PHASE_COLORS), phase_boundaries(labels), counts,
                        text["phase_reason"], text["members_missing"], confidence, runner_up, sampling)


def phase_boundaries(labels: np.ndarray) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Edges between horizontally or vertically adjacent cells with different labels.

    labels: (ny, nx) with cell (i, j) centred at x = j, y = i (image coordinates, edges at +-0.5).
    Returns segments ((x0, y0), (x1, y1)). An unlabelled cell (None) next to a labelled one is a boundary too;
    two unlabelled neighbours are not.
    """
    ny, nx = labels.shape
    segs = []
    for i in range(ny):
        for j in range(nx):
            if j + 1 < nx and labels[i, j] != labels[i, j + 1]:
                segs.append(((j + 0.5, i - 0.5), (j + 0.5, i + 0.5)))
            if i + 1 < ny and labels[i, j] != labels[i + 1, j]:
                segs.append(((j - 0.5, i + 0.5), (j + 0.5, i + 0.5)))
    return segs


# ---------------------------------------------------------------------------------------------
# Text grids (for terminals and Markdown)


def text_grid(cells: pd.DataFrame, column: str, fmt: str = "s", *, grid: Grid | None = None) -> str:
    """``column`` of one diagram's cells as a fixed-width text table in the figures' layout (hot end on top).

    fmt: a format spec for numbers (".3g") or "s" for text; "–" where a cell is absent or null. The first row
    holds the load values, the first column the temperature values.
    """
    grid = grid or cell_grid(cells)
    values = grid.to_matrix(cells, column, fill=None, dtype=object)

    def show(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return str(v) if fmt == "s" else format(float(v), fmt)

    head = [f"{grid.temperature_name} \\ {grid.load_name}"] + grid.x_labels
    rows = [[label] + [show(v) for v in values[i]] for i, label in enumerate(grid.y_labels)]
    widths = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head] + rows)
