"""The numbers behind the figure of Bezier curves: train error along the stored curves of chosen cells, and
which cells represent each phase."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.phases import PHASES
from analysis.tables import format_value


@dataclass
class CurveSeries:
    seed_a: int
    seed_b: int
    t: np.ndarray  # (p,) increasing
    train_error: np.ndarray  # (p,) percent
    mode_connectivity: float | None


@dataclass
class CellPanel:
    """The cell a figure panel draws (this module's curves, analysis/history_data.py's training curves)."""

    load_name: str
    load_value: float
    temperature_name: str
    temperature_value: float
    phase: str | None

    @property
    def title(self) -> str:
        phase = f" (phase {self.phase})" if self.phase else ""
        load = f"{self.load_name}={format_value(self.load_value)}"
        return f"{load}, {self.temperature_name}={format_value(self.temperature_value)}{phase}"


@dataclass
class CurveData(CellPanel):
    series: list[CurveSeries]


def cell_rows(table: pd.DataFrame, load_value: float, temperature_value: float) -> pd.DataFrame:
    """The rows of ``table`` (one with the cell columns) that belong to one cell."""
    return table[(table["load_value"] == float(load_value)) & (table["temperature_value"] == float(temperature_value))]


def cell_phase(cells: pd.DataFrame | None, load_value: float, temperature_value: float) -> str | None:
    """The phase of one cell in the labelled ``cells``, None when they are not given or do not label it."""
    if cells is None or "phase" not in cells:
        return None
    hit = cell_rows(cells, load_value, temperature_value)
    return hit["phase"].iloc[0] if len(hit) and isinstance(hit["phase"].iloc[0], str) else None


def curve_data(
    curves: pd.DataFrame,
    load_value: float,
    temperature_value: float,
    *,
    cells: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
) -> CurveData:
    """Train error along every stored curve of one cell (curves table rows), with each pair's mc when known."""
    sel = cell_rows(curves, load_value, temperature_value)
    if sel.empty:
        raise ValueError(f"no curves stored for the cell load={load_value}, temperature={temperature_value}")
    series = []
    for (a, b), g in sel.groupby(["seed_a", "seed_b"]):
        g = g.sort_values("t")
        mc = None
        if pairs is not None and len(pairs):
            cell_pairs = cell_rows(pairs, load_value, temperature_value)
            hit = cell_pairs[(cell_pairs["seed_a"] == a) & (cell_pairs["seed_b"] == b)]["mode_connectivity"].dropna()
            mc = float(hit.iloc[0]) if len(hit) else None
        series.append(CurveSeries(int(a), int(b), g["t"].to_numpy(float), g["train_error"].to_numpy(float), mc))
    first = sel.iloc[0]
    return CurveData(first["load_name"], float(load_value), first["temperature_name"], float(temperature_value),
                     cell_phase(cells, load_value, temperature_value), series)


def representative_cells(cells: pd.DataFrame, curves: pd.DataFrame) -> list[tuple[float, float]]:
    """One cell per phase present (in phase order) that has curves: the one with the median mode connectivity.

    Deterministic: ties broken by load, then temperature.
    """
    if curves.empty or "phase" not in cells:
        return []
    with_curves = set(zip(curves["load_value"].astype(float), curves["temperature_value"].astype(float)))
    picks = []
    for phase in PHASES:
        c = cells[(cells["phase"] == phase) & cells["mode_connectivity"].notna()]
        c = c[[(float(a), float(b)) in with_curves for a, b in zip(c["load_value"], c["temperature_value"])]]
        if c.empty:
            continue
        c = c.sort_values(["mode_connectivity", "load_value", "temperature_value"])
        row = c.iloc[(len(c) - 1) // 2]
        picks.append((float(row["load_value"]), float(row["temperature_value"])))
    return picks
