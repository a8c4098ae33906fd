"""`landscape plot RUN_DIR --cell KNOB=VALUE,KNOB=VALUE`: one cell's training curves, as a PNG next to the analysis.

    plot_cell(run_dir, cell, *, out_dir=None) -> str     the PNG's path (a URI for a run on s3://, gs://)
"""

from __future__ import annotations

import shutil
import tempfile

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.admission import admit
from analysis.aggregate import CELL_COLUMNS
from analysis.api import default_out_dir, exists, has_config, upload_dir
from analysis.history_data import cell_history, parse_cell
from analysis.plots import figure_stem, save_training_curves
from analysis.run_files import read_run_file
from analysis.tables import RunTables, format_value, join


def plot_cell(run_dir: str, cell: str, *, out_dir: str | None = None) -> str:
    """Draw the training curves of the cell ``cell`` ("width=64,batch_size=16") of the run in ``run_dir`` into
    ``<out_dir>/training__<load>=<v>__<temperature>=<v>.png`` (default out_dir: RUN_DIR/analysis, on the run's
    storage) and return its path. CellSpecError for a cell not in the grid (naming the grid's values);
    ValueError for a run or cell without a history (runs made before the table existed)."""
    tables = RunTables(run_dir)
    own_key_only = has_config(run_dir)  # the rows `analyze` counts (analysis/admission.py), no others
    models = admit(tables.scan("models"), own_key_only).frame
    if models.empty and not exists(run_dir):
        raise ValueError(f"run directory {run_dir} does not exist; pass the folder `landscape run` wrote (its --out)")
    cells = _read_cells(join(run_dir, "analysis", "cells.parquet"), run_dir)
    # An adaptive run's grid is wider than its trained cells: the analysis's cells name every cell of it.
    grid = models if cells is None else pd.concat([models[CELL_COLUMNS], cells[CELL_COLUMNS]], ignore_index=True)
    load, temp, lv, tv = parse_cell(cell, grid)
    history = admit(tables.scan("history"), own_key_only).frame
    history = history[(history["load_name"] == load) & (history["temperature_name"] == temp)]
    data = cell_history(history, lv, tv, cells=cells)
    if data is None and _interpolated(cells, lv, tv):
        raise ValueError(f"{load}={lv:g}, {temp}={tv:g} was not trained in this adaptive run (search: adaptive): "
                         f"its phase was interpolated from the trained cells around it, so it has no training "
                         f"curves; plot a trained cell (cells.parquet: interpolated = false)")
    if data is None:
        raise ValueError(f"{run_dir} has no training history for {load}={lv:g}, {temp}={tv:g}: runs made before "
                         f"the history table existed have none (a new run records it)")
    final_dir = out_dir if out_dir is not None else default_out_dir(run_dir)
    name = f"training__{load}={format_value(lv)}__{temp}={format_value(tv)}"
    if "://" not in final_dir:
        return save_training_curves([data], figure_stem(final_dir, name), formats=("png",))["png"]
    staging = tempfile.mkdtemp(prefix="landscape-plot-")
    try:
        save_training_curves([data], figure_stem(staging, name), formats=("png",))
        upload_dir(staging, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return join(final_dir, name + ".png")


def _interpolated(cells: pd.DataFrame | None, load_value: float, temperature_value: float) -> bool:
    """Whether the analysis marked the cell as interpolated (an adaptive run's untrained cell)."""
    if cells is None or "interpolated" not in cells.columns:
        return False
    hit = cells[(cells["load_value"] == load_value) & (cells["temperature_value"] == temperature_value)]
    return bool(len(hit)) and bool(hit["interpolated"].fillna(False).astype(bool).all())


def _read_cells(uri: str, run_dir: str) -> pd.DataFrame | None:
    """The labelled cells of an earlier analysis (their phase for a title; an adaptive run's whole grid and
    which of its cells were interpolated), or None (also when it is not a regular file of the run:
    analysis/run_files.py, or lacks the cell columns)."""
    try:
        frame = pq.ParquetFile(pa.BufferReader(read_run_file(uri, "table", root=run_dir))).read().to_pandas()
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None
    if not set(CELL_COLUMNS + ["phase"]) <= set(frame.columns):
        return None
    return frame[[c for c in CELL_COLUMNS + ["phase", "interpolated"] if c in frame.columns]]
