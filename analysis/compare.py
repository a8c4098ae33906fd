"""Two labelled runs side by side: which cells changed phase and why, which claims changed, which settings differ.

A and B are run directories (local paths or URIs), each labelled in memory with its own phase rules
(``analysis.api.label_run``: nothing is written into either run). B may be A itself with other rules, which is
how a ``--rule`` relabelling is compared with the default labels.

    compare_runs(run_a, run_b, *, rules_a=None, rules_b=None) -> Comparison     reads both runs
    compare_labelled(a: Side, b: Side) -> Comparison                             pure: two labelled sides
    label_changes(before, after) -> LabelChanges                                 per-phase counts, changed cells

analysis/compare_report.py writes a Comparison for people (text) and scripts (JSON); analysis/compare_plot.py
draws it.

Cells are matched by their knob values (load name and value, temperature name and value): two runs of one
config, two configs of one grid (fp32 and bf16, two seed sets, two versions of the tool) or a run and its
relabelling. A cell in only one run is listed as such. Runs whose grids have different knobs (width x batch
size against width x learning rate) are refused: their cells cannot be matched.

What decides a label (analysis.phases) travels with each changed cell: train loss against the sharpness
threshold, mean mode connectivity against the barrier threshold, CKA against the IV-A/IV-B split, and each
side's ``phase_reason`` (those numbers in words).
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.parquet as pq

from analysis.aggregate import CELL_COLUMNS
from analysis.phases import PHASES, PhaseRules
from analysis.run_files import read_config, read_run_file
from analysis.tables import join

# What decides a cell's label (analysis.phases.label_phases adds them), shown for every changed cell.
DECIDING_COLUMNS = ("train_loss", "sharpness_threshold", "mode_connectivity", "connectivity_threshold", "cka",
                    "cka_split")
# The three decisions a phase is made of, and the words for them.
CLASS_COLUMNS = {"sharpness_class": "sharpness", "connectivity_class": "connectivity", "cka_class": "CKA"}
UNLABELLED = "unlabelled"


class GridMismatchError(ValueError):
    """The two runs' grids have different knobs: their cells cannot be matched."""


@dataclass
class Side:
    """One labelled run: what the comparison needs of it."""

    name: str  # how the output names it: the run directory, with its non-default rules
    run_dir: str
    rules: PhaseRules
    cells: pd.DataFrame  # labelled cells of every diagram
    claims: list[dict] = field(default_factory=list)  # analysis.claims records with their "diagram"
    config: dict | None = None  # the run's config.yaml, None when it has none (an imported reference)
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # what the tables say made them: package_version, ...


@dataclass
class Comparison:
    a: Side
    b: Side
    matched: pd.DataFrame  # one row per cell in both runs: the cell columns, then <column>_a and <column>_b
    only_a: pd.DataFrame  # cell columns of the cells only A has
    only_b: pd.DataFrame
    claims: list[dict]  # per claim in either run: diagram, id, holds_a/b, p_holds_a/b, changed
    config_diff: list[tuple[str, object, object]]  # (dotted key, A's value, B's value); absent: MISSING
    rules_diff: list[tuple[str, object, object]]  # (rule, A's value, B's value)
    provenance_diff: list[tuple[str, object, object]] = field(default_factory=list)  # of the tables (the tool)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> pd.DataFrame:
        """The matched cells whose phase differs (an unlabelled cell against a labelled one included)."""
        return self.matched[self.matched["phase_a"] != self.matched["phase_b"]].reset_index(drop=True)

    @property
    def phase_counts(self) -> dict[str, tuple[int, int]]:
        """Per phase (and "unlabelled"): (cells of A, cells of B), over every cell of each run."""
        return phase_counts(self.a.cells, self.b.cells)


MISSING = "(absent)"


# ------------------------------------------------------------------------------------------------------------
# Matching cells


def _phase_of(value) -> str:
    return value if isinstance(value, str) and value in PHASES else UNLABELLED


def _diagram_knobs(cells: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(cells["load_name"].astype(str), cells["temperature_name"].astype(str))))


def _knob_text(knobs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{load} × {temp}" for load, temp in knobs)


def check_same_knobs(a: Side, b: Side) -> None:
    """GridMismatchError unless both runs have the same (load, temperature) knobs."""
    knobs_a, knobs_b = _diagram_knobs(a.cells), _diagram_knobs(b.cells)
    if knobs_a != knobs_b:
        raise GridMismatchError(
            f"cannot compare {a.run_dir} and {b.run_dir}: their grids have different knobs (A: {_knob_text(knobs_a)}; "
            f"B: {_knob_text(knobs_b)}); cells are matched by their knob values, so compare runs whose grids "
            f"share the load and temperature knobs"
        )


def _keyed(cells: pd.DataFrame) -> pd.DataFrame:
    out = cells.copy()
    out["load_value"] = out["load_value"].astype(float)
    out["temperature_value"] = out["temperature_value"].astype(float)
    out["phase"] = [_phase_of(p) for p in out["phase"]]
    for col in (*DECIDING_COLUMNS, *CLASS_COLUMNS, "phase_reason"):
        if col not in out:
            out[col] = None
    # How each cell was sampled (analysis/adaptive_cells.py): an adaptive run's interpolated cells are named so.
    if "interpolated" not in out:
        out["interpolated"] = False
    if "sampling" not in out:
        out["sampling"] = "full"
    return out[[*CELL_COLUMNS, "phase", *CLASS_COLUMNS, *DECIDING_COLUMNS, "phase_reason", "interpolated", "sampling"]]


def match_cells(cells_a: pd.DataFrame, cells_b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(matched cells with <column>_a / <column>_b, cells only in A, cells only in B), sorted by knob values."""
    both = pd.merge(_keyed(cells_a), _keyed(cells_b), on=CELL_COLUMNS, how="outer", suffixes=("_a", "_b"),
                    indicator=True).sort_values(CELL_COLUMNS, kind="stable")
    matched = both[both["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    only_a = both.loc[both["_merge"] == "left_only", CELL_COLUMNS].reset_index(drop=True)
    only_b = both.loc[both["_merge"] == "right_only", CELL_COLUMNS].reset_index(drop=True)
    return matched, only_a, only_b


def phase_counts(cells_a: pd.DataFrame, cells_b: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per phase (then "unlabelled" when either has such cells): (cells of A, cells of B)."""
    count_a = Counter(_phase_of(p) for p in cells_a["phase"])
    count_b = Counter(_phase_of(p) for p in cells_b["phase"])
    names = [*PHASES] + ([UNLABELLED] if count_a[UNLABELLED] or count_b[UNLABELLED] else [])
    return {p: (count_a[p], count_b[p]) for p in names}


# ------------------------------------------------------------------------------------------------------------
# Claims, rules, config


def compare_claims(claims_a: list[dict], claims_b: list[dict]) -> list[dict]:
    """One record per (diagram, claim id) of either run: the verdicts side by side, ``p_holds`` where the
    claim records carry it (None otherwise), ``changed`` when the verdict differs or one side lacks the claim."""
    by_a = {(c.get("diagram", ""), c.get("id")): c for c in claims_a}
    by_b = {(c.get("diagram", ""), c.get("id")): c for c in claims_b}
    out = []
    for key in sorted(set(by_a) | set(by_b), key=lambda k: (str(k[0]), str(k[1]))):
        ca, cb = by_a.get(key), by_b.get(key)
        holds_a = ca.get("holds") if ca else None
        holds_b = cb.get("holds") if cb else None
        out.append({
            "diagram": key[0], "id": key[1], "claim": (ca or cb).get("claim", ""),
            "holds_a": holds_a, "holds_b": holds_b,
            "status_a": _status(ca), "status_b": _status(cb),
            "p_holds_a": _probability(ca), "p_holds_b": _probability(cb),
            "in_a": ca is not None, "in_b": cb is not None,
            "changed": ca is None or cb is None or holds_a != holds_b or _status(ca) != _status(cb),
        })
    return out


def _status(claim: dict | None) -> str | None:
    """The claim's verdict in words (analysis.claims: holds, does not hold, unresolved, not applicable, cannot be
    measured); for records without one, from ``holds``."""
    if claim is None:
        return None
    if isinstance(claim.get("status"), str):
        return claim["status"]
    return {True: "holds", False: "does not hold"}.get(claim.get("holds"), "not applicable")


def _probability(claim: dict | None) -> float | None:
    value = (claim or {}).get("p_holds")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def flatten(mapping: dict, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of a nested mapping (lists are values)."""
    out = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def config_differences(config_a: dict | None, config_b: dict | None) -> list[tuple[str, object, object]]:
    """(dotted key, A's value, B's value) for every key whose values differ; MISSING where one side lacks it."""
    flat_a, flat_b = flatten(config_a or {}), flatten(config_b or {})
    return [(k, flat_a.get(k, MISSING), flat_b.get(k, MISSING)) for k in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(k, MISSING) != flat_b.get(k, MISSING)]


def rules_differences(rules_a: PhaseRules, rules_b: PhaseRules) -> list[tuple[str, object, object]]:
    b_values = {r["name"]: r["value"] for r in rules_b.describe()}
    return [(r["name"], r["value"], b_values[r["name"]]) for r in rules_a.describe()
            if r["value"] != b_values[r["name"]]]


def rules_text(rules: PhaseRules) -> str:
    """The non-default rules as ``k=v, ...``, or "default rules"."""
    chosen = [f"{r['name']}={setting_text(r['value'])}" for r in rules.describe() if r["value"] != r["default"]]
    return ", ".join(chosen) if chosen else "default rules"


# ------------------------------------------------------------------------------------------------------------
# The comparison


def compare_labelled(a: Side, b: Side) -> Comparison:
    """The comparison of two labelled sides; GridMismatchError when their knobs differ."""
    check_same_knobs(a, b)
    matched, only_a, only_b = match_cells(a.cells, b.cells)
    notes = [f"{side.name}: {w}" for side in (a, b) for w in side.warnings]
    for label, side in (("A", a), ("B", b)):
        if side.config is None and a.run_dir != b.run_dir:
            notes.append(f"{label} ({side.run_dir}) has no readable config.yaml: its settings are not compared")
    return Comparison(a, b, matched, only_a, only_b, compare_claims(a.claims, b.claims),
                      config_differences(a.config, b.config), rules_differences(a.rules, b.rules),
                      config_differences(a.provenance, b.provenance), notes)


def labelled_side(run_dir: str, rules: dict | PhaseRules | None, label: str,
                  config_hash: str | None = None, bootstrap_draws: int | None = None) -> Side:
    """Run ``run_dir`` labelled in memory with ``rules`` (nothing written), with its config; ``config_hash``:
    rows computed with other settings are left out, as analyze_run does; ``bootstrap_draws``: seed resamplings
    behind each claim's p and each cell's confidence (analyze's default when None, 0: none)."""
    from analysis.api import label_run

    draws = {} if bootstrap_draws is None else {"bootstrap_draws": bootstrap_draws}
    labelled = label_run(run_dir, rules=rules, config_hash=config_hash, **draws)
    config, problem = read_config(run_dir)
    warnings = list(labelled.warnings) + ([problem] if problem else [])
    name = f"{label}: {run_dir} ({rules_text(labelled.rules)})"
    return Side(name, run_dir, labelled.rules, labelled.cells, labelled.claims, config, warnings,
                _readable_provenance(labelled.provenance))


def _readable_provenance(provenance: dict) -> dict:
    """The tables' provenance with ``library_versions`` (a JSON text) as a mapping, so that the differences
    name the library: ``library_versions.torch``."""
    out = dict(provenance)
    try:
        versions = json.loads(out.get("library_versions", ""))
    except (TypeError, ValueError):
        return out
    if isinstance(versions, dict) and versions:
        out["library_versions"] = versions
    elif isinstance(versions, dict):
        del out["library_versions"]  # none recorded: nothing to compare
    return out


def compare_runs(run_a: str, run_b: str, *, rules_a: dict | PhaseRules | None = None,
                 rules_b: dict | PhaseRules | None = None, config_hash_a: str | None = None,
                 config_hash_b: str | None = None, bootstrap_draws: int | None = None) -> Comparison:
    """Label both runs in memory (A with ``rules_a``, B with ``rules_b``; default rules when None) and compare
    them. ``run_b`` may be ``run_a``: then the comparison shows what the other rules change.
    ``bootstrap_draws`` (analyze's default when None; 0 skips the resampling, and claims then carry no p).

    Raises GridMismatchError (a ValueError) when the runs' grids have different knobs, ValueError when a run has
    nothing to analyse or a rule is unknown."""
    return compare_labelled(labelled_side(run_a, rules_a, "A", config_hash_a, bootstrap_draws),
                            labelled_side(run_b, rules_b, "B", config_hash_b, bootstrap_draws))


# ------------------------------------------------------------------------------------------------------------
# Changes of one run's labels (analyze --rule against the labels it replaces)


@dataclass
class LabelChanges:
    counts: dict[str, tuple[int, int]]  # phase -> (before, after)
    changed: int  # cells in both whose phase differs
    appeared: int  # cells only after
    disappeared: int  # cells only before

    def text(self) -> str:
        counts = ", ".join(f"{p} {n_a}→{n_b}" for p, (n_a, n_b) in self.counts.items() if n_a or n_b)
        extra = "".join(f", {n} {what}" for n, what in ((self.appeared, "new"), (self.disappeared, "gone")) if n)
        return f"{counts}; {self.changed} cell(s) changed phase{extra}"


def label_changes(before: pd.DataFrame, after: pd.DataFrame) -> LabelChanges:
    """Per-phase counts before→after and the number of cells whose phase changed."""
    matched, only_before, only_after = match_cells(before, after)
    changed = int((matched["phase_a"] != matched["phase_b"]).sum())
    return LabelChanges(phase_counts(before, after), changed, len(only_after), len(only_before))


def read_labels(analysis_dir: str, root: str | None = None) -> pd.DataFrame | None:
    """The labelled cells in ``analysis_dir``/cells.parquet (what an analysis wrote), None when there are none
    or they cannot be read as labelled cells (then there is nothing to compare with). ``root``: the run
    directory holding ``analysis_dir`` (no folder between them may be a link; see analysis.run_files)."""
    uri = join(analysis_dir, "cells.parquet")
    try:
        data = read_run_file(uri, "table", root=root)
        cells = pq.read_table(io.BytesIO(data)).to_pandas()
    except (FileNotFoundError, OSError, ValueError):  # RunFileError and Arrow's errors are ValueErrors/OSErrors
        return None
    return cells if set(CELL_COLUMNS) | {"phase"} <= set(cells.columns) else None


def setting_text(v) -> str:
    """A rule's or a setting's value as the output writes it (floats with 4 significant digits)."""
    if isinstance(v, float):
        return format(v, ".4g") if math.isfinite(v) else str(v)
    return str(v)
