"""report.html: one self-contained page that opens without a server or network, made to be explored.

Nothing is loaded from elsewhere: the style and the small script (report.css, report.js next to this module)
are inlined, the panels are inline SVG (analysis.report_panels), the curves a base64 PNG; the only links are
relative ones to the figure files written next to the page. The markup is analysis/templates/report.html.j2,
rendered by Jinja2 with autoescape on: everything that comes from a run (names, config, errors, table cells) is
escaped there; this module only prepares the data. Tooltips are plain text.

Contents, per diagram (one load x temperature pair): the phase map, large, with its key (hover: phase, the
deciding numbers, missing members); the paper's claims checked on the run; the practitioner guidance; the
metric panels (hover: value, spread over seeds and count); the Bezier curves of representative cells; links to
the figure files; the phase rules with the thresholds they produced; and the table of cells (sortable,
filterable; hovering a row lights its panel cells). Then the run's config and provenance, folded.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import importlib.resources
import json
import math
import os
import urllib.parse
from dataclasses import dataclass, field

import jinja2
import pandas as pd
from markupsafe import Markup

from analysis.adaptive_cells import is_adaptive, sampling_counts, sampling_text
from analysis.guidance import Finding
from analysis.phases import MC_UNIT_DEFAULT, PhaseRules
from analysis.plot_data import MISSING_COLOR, PHASE_COLORS, Grid, HeatmapData, PhaseMapData, mc_unit_short
from analysis.report_panels import cell_id, heatmap_svg, phase_key_html, phase_map_svg
from analysis.run_files import read_run_file
from analysis.tables import format_value
from workloads.metric_specs import BUILTINS, MetricSet


def table_columns(metrics: MetricSet = BUILTINS, mc_unit: str = MC_UNIT_DEFAULT) -> list[tuple[str, str, str]]:
    """Columns of the cells table shown in the report: (column, header, format): the phase, then every metric
    with a report column (workloads/metric_specs.py), models' first; mode connectivity headed in ``mc_unit``."""
    specs = [s for s in metrics.per("model") + metrics.per("pair") if s.report is not None]

    def header(s) -> str:
        if s.shown != "mode_connectivity" or mc_unit == MC_UNIT_DEFAULT:
            return s.report.header
        return f"mc ({mc_unit_short(mc_unit)})"

    return [("phase", "phase", "s")] + [(s.shown, header(s), s.report.fmt) for s in specs]


# The built-in metrics' columns.
TABLE_COLUMNS = table_columns()

# The table's extra columns after TABLE_COLUMNS: (filter key, header, type).
MEMBER_COLUMNS = [("models_ok", "models ok", "num"), ("members", "members", "text"),
                  ("why", "why this phase", "text")]

# The page's own style and script (package files, inlined: the page loads nothing from elsewhere).
ASSET_FILES = {"css": "report.css", "js": "report.js"}
# The page's markup (analysis/templates/): this module prepares the data, the template lays it out and escapes it.
TEMPLATE = "report.html.j2"


@dataclass
class DiagramSection:
    """What the report shows for one diagram; the panels' numbers are those the PNG/PDF figures were drawn from."""

    title: str
    cells: pd.DataFrame  # labelled cells of this diagram
    rules: PhaseRules
    findings: list[Finding]
    phase_map: PhaseMapData
    heatmaps: list[HeatmapData]  # one per metric panel, in the figures' order
    curves_png: str | None = None
    training_png: str | None = None  # training curves of the representative cells (runs with a history table)
    claims: list[dict] = field(default_factory=list)  # analysis.claims.evaluate_claims records
    figure_files: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {fmt: path}
    metrics: MetricSet = BUILTINS  # the metrics of the run (its table lists those with a report column)
    mc_unit: str = MC_UNIT_DEFAULT  # the pairs' unit of mode connectivity (metrics.curve.mc_on)


def _asset(kind: str) -> Markup:
    # The page's own files, trusted: inlined as they are (everything from the run is escaped by the template).
    return Markup(importlib.resources.files("analysis").joinpath(ASSET_FILES[kind]).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    """The page's template (analysis/templates/, package data: found in a wheel as in a checkout). Autoescape
    on for every value: run folders may be written by someone else, so nothing from them is markup."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    return env.get_template(TEMPLATE)


def _png(path: str) -> str:
    # The PNG the analysis has just drawn, read as a run's file: whatever a shared folder swapped in meanwhile
    # (a link, a device) is refused, never embedded.
    return base64.b64encode(read_run_file(path, "figure")).decode("ascii")


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value, fmt: str) -> str | None:
    """A table value as shown: None when missing (the template shows a dash)."""
    if _missing(value):
        return None
    return str(value) if fmt == "s" else format(float(value), fmt)


def _sort_value(value) -> str:
    """A td's data-v: the raw number (repr, so sorting and filtering use full precision), '' when missing."""
    return "" if _missing(value) else repr(float(value))


def _phase_style(phase) -> str:
    color = PHASE_COLORS.get(phase, MISSING_COLOR) if isinstance(phase, str) else MISSING_COLOR
    text = "white" if phase in ("I", "III", "IV-B") else "black"
    return f"background:{color};color:{text}"


def _td(text: str | None, *, v: str | None = None, cls: str | None = None, style: str | None = None,
        std: str | None = None) -> dict:
    """One table cell for the template: its text (None: missing), data-v, class, style, ± std."""
    return {"text": text, "v": v, "cls": cls, "style": style, "std": std}


def cells_table(cells: pd.DataFrame, grid: Grid, section: str, metrics: MetricSet = BUILTINS,
                mc_unit: str = MC_UNIT_DEFAULT) -> dict:
    """The cells as a sortable, filterable table: keys, phase, metric means (± std where there is one),
    members, reason. Each row's data-cell links it to its panel cells; each number's data-v is its raw value."""
    load, temp = cells["load_name"].iloc[0], cells["temperature_name"].iloc[0]
    columns = table_columns(metrics, mc_unit)
    head = ([(load, load, "num"), (temp, temp, "num")]
            + [(col, h, "text" if fmt == "s" else "num") for col, h, fmt in columns] + MEMBER_COLUMNS)
    rows = []
    for _, r in cells.iterrows():
        i, j = grid.position(r["load_value"], r["temperature_value"])
        tds = [_td(format_value(r[k]), v=_sort_value(r[k])) for k in ("load_value", "temperature_value")]
        for col, _, fmt in columns:
            if col == "phase":
                tds.append(_td(_fmt(r["phase"], "s"), cls="phase", style=_phase_style(r["phase"])))
                continue
            std = r.get(f"{col}_std")
            tds.append(_td(_fmt(r.get(col), fmt), v=_sort_value(r.get(col)),
                           std=format(std, fmt) if isinstance(std, float) and math.isfinite(std) else None))
        ok = int(r["n_models_ok"])
        tds.append(_td(f"{ok}/{int(r['n_models_expected'])}", v=str(ok)))
        missing = r.get("members_missing")
        tds.append(_td(missing, cls="text warn") if isinstance(missing, str) else _td("complete", cls="text"))
        tds.append(_td(str(r["phase_reason"]), cls="text reason"))
        rows.append({"cell": cell_id(section, i, j), "tds": tds})
    keys = [load, temp] + [c for c, _, _ in columns] + [k for k, _, _ in MEMBER_COLUMNS]
    return {"load": load, "temperature": temp, "head": head, "rows": rows, "filter_keys": keys}


def rules_table(rules: PhaseRules) -> list[dict]:
    """The phase rules' rows: name, value (``changed`` when not the default), default, unit, meaning."""
    return [{**{k: str(r[k]) for k in ("name", "value", "default", "unit", "doc")},
             "changed": r["value"] != r["default"]} for r in rules.describe()]


def derived_thresholds(cells: pd.DataFrame) -> list[str]:
    """The thresholds the rules produced on these cells, in words."""
    thr = pd.to_numeric(cells["sharpness_threshold"], errors="coerce").dropna()
    split = pd.to_numeric(cells["cka_split"], errors="coerce").dropna()
    derived = []
    if len(thr):
        derived.append(f"train-loss threshold (sharp above): {thr.iloc[0]:.4g} nats")
    if len(split):
        derived.append(f"CKA split between IV-A and IV-B: {split.iloc[0]:.4g}")
    mc_thr = pd.to_numeric(cells["connectivity_threshold"], errors="coerce").dropna()
    if len(mc_thr):
        derived.append(f"mode-connectivity barrier threshold: {mc_thr.min():.3g} to {mc_thr.max():.3g} pp (per cell)")
    return derived


def _summary(cells: pd.DataFrame) -> dict:
    counts = cells["phase"].value_counts(dropna=False)
    phases = [{"phase": p, "style": _phase_style(p), "count": int(counts[p])}
              for p in ("I", "II", "III", "IV-A", "IV-B") if counts.get(p, 0)]
    # Interpolated cells (an adaptive run's untrained ones) expect no members: counted apart, not as incomplete.
    interpolated = cells["interpolated"].fillna(False).astype(bool) if "interpolated" in cells else pd.Series(
        False, index=cells.index)
    trained = cells[~interpolated]
    complete = int(trained["complete"].fillna(False).astype(bool).sum()) if "complete" in cells else len(trained)
    return {"n": len(cells), "phases": phases, "unlabelled": int(cells["phase"].isna().sum()), "complete": complete,
            "trained": len(trained), "interpolated": int(interpolated.sum())}


SAMPLING_MEANING = {
    "full": "trained with every seed",
    "topped up": "trained, topped up beyond the starting seeds",
    "start seeds": "trained at the starting seeds only (no seed missing: the policy asked for no more)",
    "interpolated": "not trained: train loss, mc and CKA interpolated from the trained cells, labelled by the same "
                    "rules; left out of the claims",
}


def sampling_data(cells: pd.DataFrame) -> dict | None:
    """How an adaptive run's cells were sampled: cells per kind (analysis.adaptive_cells.SAMPLING) with what each
    means; None for a grid run (every cell trained with every seed)."""
    if not is_adaptive(cells):
        return None
    rows = [(kind, n, SAMPLING_MEANING[kind]) for kind, n in sampling_counts(cells).items() if n]
    return {"text": sampling_text(cells) or "", "rows": rows}


_STATUS_CSS = {"holds": "holds", "does not hold": "fails", "unresolved": "unresolved", "cannot be measured": "na",
               "not applicable": "na"}


def claims_table(claims: list[dict]) -> dict:
    """The paper's claims for the template: per claim its text, figure, verdict with its p (the fraction of seed
    resamplings in which it holds, analysis.claims) and the deciding numbers in words; with the counts above.

    Claims that apply come first; a relaxed claim says which claim it relaxes; a claim that holds partly by the
    phase rules' own definition says what."""
    rows = []
    for c in sorted(claims, key=lambda c: not c["applies"]):
        status = c.get("status") or ("holds" if c["holds"] else "does not hold" if c["holds"] is False
                                     else "not applicable")
        rows.append({"css": _STATUS_CSS.get(status, "na"), "status": status, "p": c.get("p_holds"),
                     "claim": c["claim"], "figure": c["figure"], "summary": c["summary"],
                     "relaxation_of": c.get("relaxation_of"),
                     "by_definition": c.get("by_definition") if c["applies"] else None})
    applies = [c for c in claims if c["applies"]]
    return {"rows": rows, "applies": len(applies), "not_applying": len(claims) - len(applies),
            "held": sum(1 for c in applies if c["holds"] is True),
            "unresolved": sum(1 for c in applies if c.get("status") == "unresolved")}


def figure_links(figure_files: dict[str, dict[str, str]], report_dir: str) -> list[dict]:
    """Links to the figure files, relative to the report's folder (they sit next to it, locally or on S3)."""
    figures = []
    for name, paths in figure_files.items():
        rels = [os.path.relpath(path, report_dir).replace(os.sep, "/") for path in paths.values()]
        figures.append({"name": name.replace("_", " "),
                        "links": [{"href": urllib.parse.quote(rel), "text": rel} for rel in rels]})
    return figures


def _section_id(k: int) -> str:
    return f"d{k}"


def diagram_data(section: DiagramSection, section_id: str, report_dir: str) -> dict:
    """What the template shows for one diagram. The SVG panels are markup already (analysis.report_panels
    escapes what it draws into them)."""
    return {
        "title": section.title,
        "summary": _summary(section.cells),
        "sampling": sampling_data(section.cells),
        "phase_map": Markup(phase_map_svg(section.phase_map, section=section_id)),
        "phase_key": Markup(phase_key_html(section.phase_map)),
        "claims": claims_table(section.claims) if section.claims else None,
        "guidance": [(f.topic, f.message) for f in section.findings],
        "panels": [(Markup(heatmap_svg(h, section=section_id)), h.range_label) for h in section.heatmaps],
        "curves_png": _png(section.curves_png) if section.curves_png else None,
        "training_png": _png(section.training_png) if section.training_png else None,
        "figures": figure_links(section.figure_files, report_dir) if section.figure_files else [],
        "derived": derived_thresholds(section.cells),
        "rules": rules_table(section.rules),
        "cells": cells_table(section.cells, section.phase_map.grid, section_id, section.metrics, section.mc_unit),
    }


def _without_local_paths(run_dir: str):
    """text -> text with this machine's path of the run directory replaced by the folder's name: a report is
    shared (mailed, put in a bucket) and must not show where the run lies on the machine that analysed it. A
    URI (s3://...) is kept: it names a place every reader may know."""
    if "://" in run_dir:
        return lambda text: text
    local = os.path.abspath(run_dir)
    name = os.path.basename(local.rstrip(os.sep)) or local
    spellings = sorted({local, os.path.normpath(run_dir), run_dir.rstrip(os.sep)} - {"", ".", name}, key=len,
                       reverse=True)

    def shareable(text: str) -> str:
        for spelling in spellings:  # longest first: the absolute path before a relative spelling inside it
            text = text.replace(spelling, name)
        return text

    return shareable


def render_report(
    *,
    title: str,
    run_dir: str,
    report_dir: str,
    sections: list[DiagramSection],
    config_text: str | None,
    provenance: dict,
    warnings: list[str] | None = None,
) -> str:
    """The whole page as a string; ``report_dir``: the folder report.html and the figure files are written to
    (links to the figures are relative to it)."""
    shareable = _without_local_paths(run_dir)
    return _template().render(
        title=title,
        run_dir=shareable(run_dir),
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        warnings=[shareable(w) for w in warnings or []],
        diagrams=[diagram_data(s, _section_id(k), report_dir) for k, s in enumerate(sections)],
        config_text=config_text,
        config_lines=config_text.count("\n") + 1 if config_text is not None else 0,
        provenance=shareable(json.dumps(provenance, indent=2, sort_keys=True, default=str)),
        css=_asset("css"),
        js=_asset("js"),
    )
