"""A run directory as Python objects: its config and its tables as DataFrames, its analysis, its figures.

    load_run(run_dir) -> Run
    Run.config                         the sweep config (orchestrator.config.SweepConfig), None without config.yaml
    Run.models, .pairs, .curves,       the run's tables (analysis/schemas.py documents every column), each with
    Run.history, .curve_history        the knobs' own columns beside load_value / temperature_value (columns.py)
    Run.cells, Run.claims              the analysis: one row per cell (phase, metrics), one row per claim checked
    Run.analyze(rules=...) -> Run      analyse again (figures, report, cells, claims), e.g. with other phase rules
    Run.plot("width=64,batch_size=32") one cell's training curves as a PNG; returns its path
    Run.status() -> str                what `landscape status` prints

Nothing read from a run directory is executed: the config's references to the user's code are not imported, and
every file is read through analysis.run_files (regular files only, size limits). Tables are read when first
asked for and kept; ``analyze`` reads the new analysis.
"""

from __future__ import annotations

import functools
import json
import os
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.run_files import RunFileError, read_run_file
from analysis.schemas import TableError
from analysis.tables import RunTables, join
from landscape.columns import with_knob_columns
from orchestrator.config import ConfigError, parse_config, parse_yaml
from orchestrator.rundir.storage import RunDirError, config_uri, list_entries, normalise_run_dir
from orchestrator.driver.sweep_errors import InputError, LandscapeError

CLAIM_COLUMNS = ["diagram", "id", "claim", "figure", "applies", "holds", "evidence", "rule", "summary"]
READ_ERRORS = (OSError, ValueError, TableError, RunDirError, pa.ArrowException)


class LandscapeWarning(UserWarning):
    """Something in a run directory that landscape read around (e.g. a config.yaml it cannot parse)."""


class Run:
    """One run directory (see the module doc). ``log``: what the sweep that returned it would have printed,
    as (``"stdout"`` or ``"stderr"``, line) pairs; empty for a loaded run."""

    def __init__(self, run_dir: str, config=None, log: list | None = None):
        self.dir = run_dir
        self.config = config
        self.log = list(log or [])

    def __repr__(self) -> str:
        name = self.config.name if self.config is not None else "?"
        return f"<landscape.Run {name!r} at {self.dir}>"

    # -- tables ------------------------------------------------------------------------------------

    def table(self, name: str) -> pd.DataFrame:
        """The table ``name`` (models, pairs, curves, history, curve_history) with the knobs' own columns."""
        try:
            return with_knob_columns(RunTables(self.dir).read(name, on_corrupt="raise"))
        except READ_ERRORS as exc:
            raise InputError(" ".join(str(exc).split())) from exc

    models = functools.cached_property(lambda self: self.table("models"))
    pairs = functools.cached_property(lambda self: self.table("pairs"))
    curves = functools.cached_property(lambda self: self.table("curves"))
    history = functools.cached_property(lambda self: self.table("history"))
    curve_history = functools.cached_property(lambda self: self.table("curve_history"))

    # -- analysis ----------------------------------------------------------------------------------

    @functools.cached_property
    def cells(self) -> pd.DataFrame:
        """One row per cell of the analysis (analysis/cells.parquet): the metrics' means, the phase and why."""
        data = self._analysis_file("cells.parquet", "table")
        return with_knob_columns(pq.read_table(pa.BufferReader(data)).to_pandas())

    @functools.cached_property
    def claims(self) -> pd.DataFrame:
        """One row per claim of the paper checked on the run (analysis/claims.json; analysis/claims.py)."""
        records = json.loads(self._analysis_file("claims.json", "json").decode("utf-8"))
        if not isinstance(records, list):
            raise InputError(f"{join(self.dir, 'analysis', 'claims.json')} is not a list of claims; "
                             f"run `landscape analyze {self.dir}` (or run.analyze()) to write it again")
        frame = pd.DataFrame.from_records(records)
        return frame if len(frame.columns) else pd.DataFrame(columns=CLAIM_COLUMNS)

    def _analysis_file(self, name: str, kind: str) -> bytes:
        uri = join(self.dir, "analysis", name)
        try:
            return read_run_file(uri, kind, root=self.dir)
        except FileNotFoundError:
            raise LandscapeError(f"{self.dir} has no analysis yet (no {uri}): call run.analyze() "
                                 f"or `landscape analyze {self.dir}`") from None
        except (RunFileError, OSError) as exc:
            raise InputError(f"cannot read {uri}: {' '.join(str(exc).split())}") from exc

    def analyze(self, rules: dict | None = None, out_dir: str | None = None) -> "Run":
        """Analyse the run again, like `landscape analyze` (``rules``: phase-rule overrides such as
        ``{"mc_threshold": 0.5}``, analysis/phases.py); returns this Run with the new cells and claims."""
        from analysis.api import analyze_run

        pairs_expected = bool(self.config.pair_keys()) if self.config is not None else None
        try:
            analyze_run(self.dir, rules=rules or None, out_dir=out_dir, pairs_expected=pairs_expected)
        except (LookupError, *READ_ERRORS) as exc:
            raise InputError(" ".join(str(exc).split())) from exc
        if out_dir is None:
            for name in ("cells", "claims"):
                self.__dict__.pop(name, None)
        return self

    def plot(self, cell, out_dir: str | None = None) -> str:
        """Draw the training curves of one cell (``"width=64,batch_size=32"`` or ``{"width": 64, "batch_size":
        32}``) like `landscape plot`; returns the PNG's path."""
        from analysis.cell_plot import plot_cell

        if isinstance(cell, dict):
            cell = ",".join(f"{k}={v}" for k, v in cell.items())
        try:
            return plot_cell(self.dir, str(cell), out_dir=out_dir)
        except (LookupError, *READ_ERRORS) as exc:
            raise InputError(" ".join(str(exc).split())) from exc

    def status(self) -> str:
        """Per stage: what is done, diverged, failed and missing (what `landscape status` prints)."""
        from orchestrator.planning.plan import PlanError
        from orchestrator.cli.status import run_status

        try:
            return run_status(self.dir)
        except (ConfigError, PlanError, *READ_ERRORS) as exc:
            raise InputError(" ".join(str(exc).split())) from exc


def load_run(run_dir, log: list | None = None) -> Run:
    """The run in ``run_dir`` (a folder or a URI such as s3://bucket/run) that `landscape run` wrote."""
    run_dir = normalise_run_dir(os.fspath(run_dir))
    try:
        found = {"config.yaml", "tables"} & set(list_entries(run_dir))
    except OSError as exc:
        raise InputError(f"cannot read run directory {run_dir}: {exc.strerror or exc}") from exc
    if not found:
        raise InputError(f"{run_dir} is not a run directory (neither config.yaml nor tables/ in it); "
                         f"pass the folder `landscape run` wrote (its --out)")
    return Run(run_dir, saved_config(run_dir), log)


def saved_config(run_dir: str):
    """The run's config.yaml, parsed without importing the user's code it names; None when there is none,
    and a LandscapeWarning when it cannot be read (the tables still can)."""
    uri = config_uri(run_dir)
    try:
        raw = parse_yaml(read_run_file(uri, "config", root=run_dir), uri)
        return parse_config(raw or {}, check_data=False, user_code=False)
    except FileNotFoundError:
        return None  # e.g. the authors' released results, imported by `landscape import-reference`
    except (ConfigError, RunFileError, OSError) as exc:
        warnings.warn(LandscapeWarning(f"{uri} cannot be read ({' '.join(str(exc).split())[:200]}): Run.config is "
                                       f"None"), stacklevel=3)
        return None
