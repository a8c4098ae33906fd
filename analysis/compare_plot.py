"""The figure of a comparison (analysis.compare): the two phase maps side by side on one grid, the cells whose
label changed framed on both. One PNG per diagram (load x temperature knob pair).

    save_comparison_maps(comparison, out_dir) -> [png path, ...]

Both maps are drawn on the union of the two runs' cells, so a cell sits at the same place on both; a cell only
one run has is grey ("?") on the other map.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd

from analysis.compare import Comparison
from analysis.plot_data import Grid, cell_grid, phase_map_data
from analysis.plots import PNG_DPI, draw_phase_map

STEM = "compare"


def _of_diagram(cells: pd.DataFrame, load: str, temp: str) -> pd.DataFrame:
    return cells[(cells["load_name"].astype(str) == load) & (cells["temperature_name"].astype(str) == temp)]


def changed_mask(changed: pd.DataFrame, grid: Grid) -> np.ndarray:
    """(ny, nx) True at the changed cells of ``grid``'s diagram."""
    mask = np.zeros(grid.shape, dtype=bool)
    mine = _of_diagram(changed, grid.load_name, grid.temperature_name)
    for lv, tv in zip(mine["load_value"], mine["temperature_value"]):
        mask[grid.position(lv, tv)] = True
    return mask


def save_comparison_maps(c: Comparison, out_dir: str) -> list[str]:
    """Write ``compare.png`` (``compare__<load>__<temperature>.png`` per diagram when there are several) into the
    local folder ``out_dir``; returns the paths."""
    from matplotlib.figure import Figure

    os.makedirs(out_dir, exist_ok=True)
    diagrams = sorted(set(zip(c.a.cells["load_name"].astype(str), c.a.cells["temperature_name"].astype(str))))
    changed = c.changed
    paths = []
    for load, temp in diagrams:
        cells_a, cells_b = _of_diagram(c.a.cells, load, temp), _of_diagram(c.b.cells, load, temp)
        grid = cell_grid(pd.concat([cells_a, cells_b], ignore_index=True))
        mask = changed_mask(changed, grid)
        ny, nx = grid.shape
        width, height = max(11.0, 0.84 * nx + 6.0), max(4.0, 0.32 * ny + 2.0)
        fig = Figure(figsize=(width, height))
        # Room in inches: 1.0 left, 2.8 right (the key beside B), 0.9 bottom, 0.8 top (two-line titles).
        fig.subplots_adjust(left=1.0 / width, right=1 - 2.8 / width, bottom=0.9 / height, top=1 - 0.8 / height,
                            wspace=0.12)
        ax_a, ax_b = fig.subplots(1, 2, sharey=True)
        for ax, side, cells, last in ((ax_a, c.a, cells_a, False), (ax_b, c.b, cells_b, True)):
            draw_phase_map(ax, phase_map_data(cells, grid=grid), legend=last, show_y=not last,
                           title=_wrapped(side.name), highlight=mask)
        fig.suptitle(f"{int(mask.sum())} of {int(mask.size)} cells changed phase (framed)", fontsize=10)
        stem = STEM if len(diagrams) == 1 else f"{STEM}__{_safe(load)}__{_safe(temp)}"
        path = os.path.join(out_dir, f"{stem}.png")
        fig.savefig(path, dpi=PNG_DPI)
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    """A knob name (read from the run's tables) as part of a file name: no folder separators, no leading dot."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", name).lstrip(".") or "_"


def _wrapped(text: str, width: int = 60) -> str:
    """A long run path over two lines, so that the titles of the two maps do not overlap."""
    if len(text) <= width:
        return text
    cut = text.rfind(" (", 0, len(text))
    return text[:cut] + "\n" + text[cut + 1:] if cut > 0 else text[:width] + "\n" + text[width:]
