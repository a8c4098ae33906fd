"""The numbers behind the training-curve figures: per cell, each seed's train loss and test accuracy against
the epoch, from the ``history`` table; and which cell a ``--cell width=64,batch_size=16`` names.

Runs made before the history table existed have none: ``cell_history`` is then None for every cell and the
figures are left out, nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.curve_data import CellPanel, cell_phase, cell_rows
from analysis.tables import format_value


@dataclass
class SeedHistory:
    seed: int
    epoch: np.ndarray  # (e,) 1-based epochs done, increasing
    train_loss: np.ndarray  # (e,) nats, mean of the epoch's SGD batches (train mode)
    test_epoch: np.ndarray  # (k,) the epochs the test set was evaluated after
    test_acc: np.ndarray  # (k,) fraction


@dataclass
class CellHistory(CellPanel):
    seeds: list[SeedHistory]


def cell_history(history: pd.DataFrame, load_value: float, temperature_value: float, *,
                 cells: pd.DataFrame | None = None) -> CellHistory | None:
    """Every seed's curves of one cell (rows of the history table, one knob pair), or None when it has none.

    Epochs are shown 1-based (epochs done) so that the last point is at ``training.epochs``."""
    sel = cell_rows(history, load_value, temperature_value)
    if sel.empty:
        return None
    seeds = []
    for seed, g in sel.groupby("seed"):
        g = g.sort_values("epoch")
        tested = g[g["test_acc"].notna()]
        seeds.append(SeedHistory(int(seed), g["epoch"].to_numpy(float) + 1, g["train_loss"].to_numpy(float),
                                 tested["epoch"].to_numpy(float) + 1, tested["test_acc"].to_numpy(float)))
    first = sel.iloc[0]
    return CellHistory(str(first["load_name"]), float(load_value), str(first["temperature_name"]),
                       float(temperature_value), cell_phase(cells, load_value, temperature_value), seeds)


class CellSpecError(ValueError):
    """A ``--cell`` that does not name a cell of the run's grid; the message lists the grid's values."""


def parse_cell(spec: str, models: pd.DataFrame) -> tuple[str, str, float, float]:
    """(load name, temperature name, load value, temperature value) of ``spec`` = "KNOB=VALUE,KNOB=VALUE" (the
    load and the temperature knob, in any order), checked against the run's models table (its grid)."""
    grid = {}
    for (load, temp), g in models.groupby(["load_name", "temperature_name"]):
        grid[(str(load), str(temp))] = (sorted(set(g["load_value"].astype(float))),
                                        sorted(set(g["temperature_value"].astype(float))))
    if not grid:
        raise CellSpecError("the run has no models, so no cells to draw")
    described = "; ".join(f"{load} in {_values(lv)}, {temp} in {_values(tv)}" for (load, temp), (lv, tv) in grid.items())
    given = {}
    for item in (part.strip() for part in str(spec).split(",")):
        name, sep, value = item.partition("=")
        try:
            given[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise CellSpecError(f"--cell {spec!r}: write the cell as KNOB=VALUE,KNOB=VALUE, e.g. "
                                f"{_example(grid)} (this run's grid: {described})")
    for (load, temp), (load_values, temp_values) in grid.items():
        if set(given) != {load, temp}:
            continue
        if given[load] not in load_values or given[temp] not in temp_values:
            raise CellSpecError(f"--cell {spec!r} is not a cell of this run's grid: {load} in {_values(load_values)}, "
                                f"{temp} in {_values(temp_values)}")
        return load, temp, given[load], given[temp]
    raise CellSpecError(f"--cell {spec!r} must name this run's load and temperature knobs, e.g. {_example(grid)} "
                        f"(this run's grid: {described})")


def _values(values) -> str:
    return "[" + ", ".join(format_value(v) for v in values) + "]"


def _example(grid: dict) -> str:
    (load, temp), (lv, tv) = next(iter(grid.items()))
    return f"{load}={format_value(lv[0])},{temp}={format_value(tv[0])}"
