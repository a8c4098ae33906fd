"""A comparison (analysis.compare) for people and for scripts.

    comparison_text(c) -> str     the summary `landscape compare` prints
    comparison_json(c) -> dict    plain JSON data (`landscape compare --json`)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.aggregate import CELL_COLUMNS
from analysis.compare import CLASS_COLUMNS, DECIDING_COLUMNS, Comparison, rules_text, setting_text
from analysis.tables import format_value


def _number(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def cell_text(row) -> str:
    return (f"{row['load_name']} {format_value(row['load_value'])}, "
            f"{row['temperature_name']} {format_value(row['temperature_value'])}")


def decided_by(row) -> str:
    """Which of the label's decisions differ between A and B, e.g. "connectivity poor → well". The CKA class
    counts only where both sides are in phase IV (entering phase IV gives a CKA class: the phase says that)."""
    parts = []
    for col, words in CLASS_COLUMNS.items():
        va, vb = row[f"{col}_a"], row[f"{col}_b"]
        va, vb = (v if isinstance(v, str) else None for v in (va, vb))
        if va != vb and not (col == "cka_class" and None in (va, vb)):
            parts.append(f"{words} {va or '–'} → {vb or '–'}")
    return "; ".join(parts) or "a value is missing on one side"


def _text(value) -> str:
    return value if isinstance(value, str) and value else "–"


def _verdict(status, p, present) -> str:
    if not present:
        return "(absent)"
    return (status or "?") + (f" (p {p:.2f})" if p is not None else "")


def comparison_text(c: Comparison) -> str:
    """The readable summary: the two sides, per-phase counts A→B, changed cells with their deciding numbers, cells
    in one run only, claims whose verdict changed, rule and config differences."""
    lines = [c.a.name, c.b.name, ""]
    lines.append("phases (A → B): " + ", ".join(f"{p} {n_a}→{n_b}" for p, (n_a, n_b) in c.phase_counts.items()))
    changed = c.changed
    lines.append(f"cells: {len(c.matched)} in both, {len(changed)} changed phase, {len(c.only_a)} only in A, "
                 f"{len(c.only_b)} only in B")
    if len(changed):
        lines += ["", "changed cells (A → B; what decided each label):"]
        for _, row in changed.iterrows():
            lines.append(f"  {cell_text(row)}: {row['phase_a']} → {row['phase_b']}  ({decided_by(row)})"
                         + _interpolated_text(row))
            lines.append(f"      A: {_text(row['phase_reason_a'])}")
            lines.append(f"      B: {_text(row['phase_reason_b'])}")
    for label, only in (("A", c.only_a), ("B", c.only_b)):
        if len(only):
            lines += ["", f"cells only in {label}: " + "; ".join(cell_text(r) for _, r in only.iterrows())]
    moved = [cl for cl in c.claims if cl["changed"]]
    lines += ["", f"claims: {len(c.claims)}, {len(moved)} changed verdict" + (":" if moved else "")]
    for cl in moved:
        where = f" [{cl['diagram']}]" if cl["diagram"] else ""
        lines.append(f"  {cl['id']}{where}: {_verdict(cl['status_a'], cl['p_holds_a'], cl['in_a'])} → "
                     f"{_verdict(cl['status_b'], cl['p_holds_b'], cl['in_b'])}")
    if c.rules_diff:
        lines += ["", "phase rules that differ (A → B): "
                  + ", ".join(f"{k} {setting_text(va)} → {setting_text(vb)}" for k, va, vb in c.rules_diff)]
    if c.config_diff:
        lines += ["", f"config differences ({len(c.config_diff)}):"]
        lines += [f"  {k}: {setting_text(va)} → {setting_text(vb)}" for k, va, vb in c.config_diff]
    elif c.a.run_dir != c.b.run_dir and c.a.config is not None and c.b.config is not None:
        lines += ["", "configs: identical"]
    if c.provenance_diff:
        lines += ["", "the tables' provenance (A → B): "
                  + "; ".join(f"{k} {setting_text(va)} → {setting_text(vb)}" for k, va, vb in c.provenance_diff)]
    for note in c.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _interpolated_text(row) -> str:
    """" [interpolated in A]" etc. for a cell an adaptive run did not train (its label rests on interpolation)."""
    sides = [side for side in ("A", "B") if isinstance(row.get(f"interpolated_{side.lower()}"), (bool, np.bool_))
             and row[f"interpolated_{side.lower()}"]]
    return f" [interpolated in {' and '.join(sides)}: not trained]" if sides else ""


def _jsonable(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, float)):
        return _number(v) if isinstance(v, float) else int(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    number = _number(v)  # numpy scalars
    return number if number is not None else str(v)


def _cells_json(df: pd.DataFrame) -> list[dict]:
    return [{k: _jsonable(v if not (isinstance(v, float) and math.isnan(v)) else None) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def comparison_json(c: Comparison) -> dict:
    """The comparison as plain JSON data (for scripts): every changed cell with the deciding numbers of both
    sides, the cells only in one run, every claim side by side, rule and config differences."""
    changed = c.changed
    cols = [*CELL_COLUMNS, "phase_a", "phase_b",
            *(f"{col}_{s}" for col in (*DECIDING_COLUMNS, *CLASS_COLUMNS, "phase_reason") for s in ("a", "b"))]
    cols += ["interpolated_a", "interpolated_b", "sampling_a", "sampling_b"]
    return {
        "a": {"run_dir": c.a.run_dir, "rules": rules_text(c.a.rules)},
        "b": {"run_dir": c.b.run_dir, "rules": rules_text(c.b.rules)},
        "phase_counts": {p: {"a": n_a, "b": n_b} for p, (n_a, n_b) in c.phase_counts.items()},
        "cells_in_both": len(c.matched),
        "changed_cells": _cells_json(changed[cols]),
        "only_in_a": _cells_json(c.only_a),
        "only_in_b": _cells_json(c.only_b),
        "claims": _jsonable(c.claims),
        "rules_diff": [{"rule": k, "a": _jsonable(va), "b": _jsonable(vb)} for k, va, vb in c.rules_diff],
        "config_diff": [{"key": k, "a": _jsonable(va), "b": _jsonable(vb)} for k, va, vb in c.config_diff],
        "provenance_diff": [{"key": k, "a": _jsonable(va), "b": _jsonable(vb)} for k, va, vb in c.provenance_diff],
        "notes": list(c.notes),
    }
