"""The knobs' own names as columns: a table's ``load_value`` of the rows whose ``load_name`` is ``width`` is also
its ``width`` column (same for the temperature knob), so that ``cells.width`` reads as the config does.

    with_knob_columns(df) -> DataFrame     a copy with one column per knob name found in the rows

A run with several load (or temperature) knobs gets one column per knob, null in the rows of the others. A knob
column is integer (nullable) when the knob is (workloads/knobs.py: width, batch_size). A knob name that is
already a column is left alone: the generic ``load_value`` / ``temperature_value`` columns keep every value.
"""

from __future__ import annotations

import pandas as pd

from workloads.knobs import KNOBS

AXIS_COLUMNS = (("load_name", "load_value"), ("temperature_name", "temperature_value"))


def knob_column(df: pd.DataFrame, name: str, name_column: str, value_column: str) -> pd.Series:
    """The values of knob ``name`` (null in rows of another knob), integer when the knob is."""
    values = df[value_column].where(df[name_column] == name)
    spec = KNOBS.get(name)
    if spec is not None and spec.integer and values.dropna().apply(float.is_integer).all():
        return values.astype("Int64")
    return values


def with_knob_columns(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for name_column, value_column in AXIS_COLUMNS:
        if name_column not in out or value_column not in out:
            continue
        position = out.columns.get_loc(value_column) + 1
        names = [n for n in dict.fromkeys(out[name_column].dropna()) if isinstance(n, str) and n not in out]
        for name in names:
            out.insert(position, name, knob_column(out, name, name_column, value_column))
            position += 1
    return out
