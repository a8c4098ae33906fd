"""Which rows of a run the analysis counts: those `landscape status` and `resume` count, from cells that a
figure's file name and labels can be made of. What is left out is named, part by part, never dropped silently.

    admit(scan, own_key_only, config_hash=None) -> Admission(frame, left_out)
    describe_left_out(table, left_out, run_dir) -> the warning lines
    describe_part(table, part, why) -> "table/<part>.parquet: why", one line

The rules, per part (a part is counted whole or left out whole):

- the part holds its own key's rows (``own_key_only``: a run `landscape run` made, one with a config.yaml).
  A copy ``K (copy).parquet`` or a part stored under another key's name is what `status` lists as "never
  counted" and `resume` moves aside: :meth:`analysis.tables.TableScan.misnamed` decides, for all of them. An
  imported reference stores one part per cell (several keys): there only the parts that repeat rows stored
  under their own names are left out (:meth:`analysis.tables.TableScan.duplicates`).
- its rows carry the run's config hash (``config_hash``, when known): rows computed with other settings are
  what `status` lists as "rows with another config hash" and `resume` refuses to mix in.
- its cells are cells of a run: the load and temperature are knobs of workloads/knobs.py (their names become
  file names: ``phase_map__<load>__<temperature>.png``) and the values are finite numbers.
- a history's epochs are epochs of a training (0 <= epoch <= MAX_EPOCH): an absurd one would make the
  figure's axis unbounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.tables import TableScan
from workloads import knobs

# Far beyond any training (the paper's longest: 200 epochs); an epoch above it is not a training's.
MAX_EPOCH = 1_000_000
HISTORY_TABLES = ("history", "curve_history")
LISTED = 3  # left-out parts named per table in a warning


@dataclass
class Admission:
    """The rows the analysis counts (``frame``, index reset) and the parts left out (part key -> why)."""

    frame: pd.DataFrame
    left_out: dict[str, str] = field(default_factory=dict)


def admit(scan: TableScan, own_key_only: bool, config_hash: str | None = None) -> Admission:
    """The rows of ``scan`` that the analysis counts, by the rules of the module docstring."""
    left_out = dict(scan.misnamed()) if own_key_only else {
        part: "it repeats rows stored under their own names" for part in sorted(scan.duplicates())}
    for part, why in _offending_parts(scan, config_hash).items():
        left_out.setdefault(part, why)
    return Admission(scan.rows_without(left_out), left_out)


def _offending_parts(scan: TableScan, config_hash: str | None) -> dict[str, str]:
    """Part key -> the first rule its rows break (another config hash, a cell that is not a run's, an epoch)."""
    frame, out = scan.frame, {}
    if frame.empty:
        return out
    loads, temperatures = set(knobs.names("load")), set(knobs.names("temperature"))
    hashes = frame["config_hash"] if config_hash is not None else [None] * len(frame)
    epochs = frame["epoch"] if scan.table in HISTORY_TABLES else [0] * len(frame)
    rows = zip(scan.row_parts, frame["load_name"], frame["load_value"], frame["temperature_name"],
               frame["temperature_value"], hashes, epochs)
    for part, load, lv, temp, tv, row_hash, epoch in rows:
        if part in out:
            continue
        why = (_foreign_hash(row_hash, config_hash) or _not_a_cell(load, lv, temp, tv, loads, temperatures)
               or _not_an_epoch(epoch))
        if why:
            out[part] = why
    return out


def _foreign_hash(row_hash, config_hash: str | None) -> str | None:
    if config_hash is None or row_hash == config_hash:
        return None
    return (f"its rows were computed with other settings (config hash {row_hash}, the run's: {config_hash}); "
            f"`landscape resume` refuses to mix them in")


def _not_a_cell(load, load_value, temperature, temperature_value, loads, temperatures) -> str | None:
    if load not in loads:
        return f"its load {_shown(load)} is not a load knob ({', '.join(sorted(loads))})"
    if temperature not in temperatures:
        return f"its temperature {_shown(temperature)} is not a temperature knob ({', '.join(sorted(temperatures))})"
    for name, value in ((load, load_value), (temperature, temperature_value)):
        if not _finite(value):
            return f"its {name} value {_shown(value)} is not a finite number"
    return None


def _not_an_epoch(epoch) -> str | None:
    if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)) or epoch is pd.NA:
        return "a row has no epoch"
    if not 0 <= int(epoch) <= MAX_EPOCH:
        return f"its epoch {int(epoch)} is not an epoch of a training (0 to {MAX_EPOCH})"
    return None


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _shown(value) -> str:
    """A value from a run directory as a message shows it: quoted, one line, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clipped(text: str, limit: int = 120) -> str:
    """Text from a run directory (a file name, a row's key) on one printable line of at most ``limit``."""
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_part(table: str, part: str, why: str) -> str:
    """``table/<part>.parquet: why``, on one printable line of bounded length (both come from the run directory)."""
    return f"{table}/{_clipped(part + '.parquet')}: {_clipped(why, 240)}"


def describe_left_out(table: str, left_out: dict[str, str], run_dir: str) -> list[str]:
    """One warning per table with left-out parts: how many, and the first few by file name and reason."""
    if not left_out:
        return []
    named = "; ".join(describe_part(table, part, why) for part, why in list(left_out.items())[:LISTED])
    more = f"; ... ({len(left_out) - LISTED} more)" if len(left_out) > LISTED else ""
    return [f"{len(left_out)} part(s) of table {table} left out of the analysis (not counted, as `landscape "
            f"status {run_dir}` says): {named}{more}"]
