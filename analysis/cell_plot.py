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
    load, temp, lv, tv = parse_cell(cell, models)
    history = admit(tables.scan("history"), own_key_only).frame
    history = history[(history["load_name"] == load) & (history["temperature_name"] == temp)]
    cells_uri = join(run_dir, "analysis", "cells.parquet")
    cells = _read_cells(cells_uri, run_dir)
    data = cell_history(history, lv, tv, cells=cells)
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


def _read_cells(uri: str, run_dir: str) -> pd.DataFrame | None:
    """The labelled cells of an earlier analysis (for the phase in a title), or None (also when it is not a
    regular file of the run: analysis/run_files.py)."""
    try:
        data = read_run_file(uri, "table", root=run_dir)
        return pq.ParquetFile(pa.BufferReader(data)).read(
            columns=["load_value", "temperature_value", "phase"]).to_pandas()
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None
