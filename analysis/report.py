"""report.html: one self-contained page that opens without a server or network, made to be explored.

Nothing is loaded from elsewhere: the style and the small script (report.css, report.js next to this module)
are inlined, the panels are inline SVG (analysis.report_panels), the curves a base64 PNG; the only links are
relative ones to the figure files written next to the page. Everything that comes from a run (names, config,
errors) is escaped; tooltips are plain text.

Contents, per diagram (one load x temperature pair): the phase map, large, with its key (hover: phase, the
deciding numbers, missing members); the paper's claims checked on the run; the practitioner guidance; the
metric panels (hover: value, spread over seeds and count); the Bezier curves of representative cells; links to
the figure files; the phase rules with the thresholds they produced; and the table of cells (sortable,
filterable; hovering a row lights its panel cells). Then the run's config and provenance, folded.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.resources
import json
import math
import os
import urllib.parse
from dataclasses import dataclass, field

import pandas as pd

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


def _asset(kind: str) -> str:
    return importlib.resources.files("analysis").joinpath(ASSET_FILES[kind]).read_text(encoding="utf-8")


def _img(path: str, alt: str) -> str:
    # The PNG the analysis has just drawn, read as a run's file: whatever a shared folder swapped in meanwhile
    # (a link, a device) is refused, never embedded.
    data = base64.b64encode(read_run_file(path, "figure")).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value, fmt: str) -> str:
    if _missing(value):
        return '<span class="muted">–</span>'
    if fmt == "s":
        return html.escape(str(value))
    return html.escape(format(float(value), fmt))


def _sort_value(value) -> str:
    """A td's data-v: the raw number (repr, so sorting and filtering use full precision), '' when missing."""
    return "" if _missing(value) else html.escape(repr(float(value)), quote=True)


def _phase_style(phase) -> str:
    color = PHASE_COLORS.get(phase, MISSING_COLOR) if isinstance(phase, str) else MISSING_COLOR
    text = "white" if phase in ("I", "III", "IV-B") else "black"
    return f'style="background:{color};color:{text}"'


def _th(key: str, header: str, kind: str) -> str:
    return (f'<th data-key="{html.escape(key, quote=True)}" data-type="{kind}"><button type="button" '
            f'title="sort by {html.escape(header, quote=True)}">{html.escape(header)}</button></th>')


def cells_table(cells: pd.DataFrame, grid: Grid, section: str, metrics: MetricSet = BUILTINS,
                mc_unit: str = MC_UNIT_DEFAULT) -> str:
    """The cells as a sortable, filterable table: keys, phase, metric means (± std where there is one),
    members, reason. Each row's data-cell links it to its panel cells; each number's data-v is its raw value."""
    load, temp = cells["load_name"].iloc[0], cells["temperature_name"].iloc[0]
    columns = table_columns(metrics, mc_unit)
    head = (
        [_th(load, load, "num"), _th(temp, temp, "num")]
        + [_th(col, h, "text" if fmt == "s" else "num") for col, h, fmt in columns]
        + [_th(*c) for c in MEMBER_COLUMNS]
    )
    rows = []
    for _, r in cells.iterrows():
        i, j = grid.position(r["load_value"], r["temperature_value"])
        tds = [f"<td data-v='{_sort_value(r[k])}'>{html.escape(format_value(r[k]))}</td>"
               for k in ("load_value", "temperature_value")]
        for col, _, fmt in columns:
            if col == "phase":
                tds.append(f'<td class="phase" {_phase_style(r["phase"])}>{_fmt(r["phase"], "s")}</td>')
                continue
            cell = _fmt(r.get(col), fmt)
            std = r.get(f"{col}_std")
            if isinstance(std, float) and math.isfinite(std):
                cell += f' <span class="muted">± {html.escape(format(std, fmt))}</span>'
            tds.append(f"<td data-v='{_sort_value(r.get(col))}'>{cell}</td>")
        tds.append(f"<td data-v='{int(r['n_models_ok'])}'>{int(r['n_models_ok'])}/{int(r['n_models_expected'])}</td>")
        missing = r.get("members_missing")
        tds.append(
            f'<td class="text warn">{html.escape(missing)}</td>'
            if isinstance(missing, str)
            else '<td class="text">complete</td>'
        )
        tds.append(f'<td class="text reason">{html.escape(str(r["phase_reason"]))}</td>')
        rows.append(f'<tr data-cell="{cell_id(section, i, j)}">' + "".join(tds) + "</tr>")
    keys = ", ".join([load, temp] + [c for c, _, _ in columns] + [k for k, _, _ in MEMBER_COLUMNS])
    return (
        "<div class='cells-view'><div class='tools'>"
        f"<input type='search' class='filter' aria-label='filter the cells of {html.escape(temp, quote=True)} × "
        f"{html.escape(load, quote=True)}' placeholder='filter, e.g.  IV-B   or   mode_connectivity&lt;-1'>"
        f" <output class='shown'>{len(cells)} of {len(cells)} cells</output></div>"
        f"<p class='hint muted'>Click a header to sort (again to reverse; missing values last). Filter: words that "
        f"every shown row contains, or <code>key&lt;number</code>, <code>&gt;</code>, <code>&lt;=</code>, "
        f"<code>&gt;=</code>, <code>=</code> (exact: <code>phase=I</code>); keys: {html.escape(keys)}.</p>"
        "<div class='scroll'><table class='cells'><thead><tr>" + "".join(head) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div></div>"
    )


def rules_table(rules: PhaseRules) -> str:
    rows = []
    for r in rules.describe():
        changed = "" if r["value"] == r["default"] else ' class="warn"'
        rows.append(
            f"<tr><td class='text'>{html.escape(r['name'])}</td><td{changed}>{html.escape(str(r['value']))}</td>"
            f"<td>{html.escape(str(r['default']))}</td><td class='text'>{html.escape(r['unit'])}</td>"
            f"<td class='text'>{html.escape(r['doc'])}</td></tr>"
        )
    return (
        "<table><thead><tr><th>rule</th><th>value</th><th>default</th><th>unit</th><th>meaning</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


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


def _summary(cells: pd.DataFrame) -> str:
    counts = cells["phase"].value_counts(dropna=False)
    parts = []
    for phase in ("I", "II", "III", "IV-A", "IV-B"):
        if counts.get(phase, 0):
            parts.append(f'<span class="phase" {_phase_style(phase)}>&nbsp;{phase}&nbsp;</span> {int(counts[phase])}')
    unlabelled = int(cells["phase"].isna().sum())
    if unlabelled:
        parts.append(f"unlabelled {unlabelled}")
    complete = int(cells["complete"].fillna(False).astype(bool).sum()) if "complete" in cells else len(cells)
    return (
        f"<ul class='summary'><li>{len(cells)} cells: " + ", ".join(parts) + "</li>"
        f"<li>{complete} of {len(cells)} cells complete (all expected members and metrics present)</li></ul>"
    )


def sampling_html(cells: pd.DataFrame) -> str:
    """How an adaptive run's cells were sampled: cells per kind (analysis.adaptive_cells.SAMPLING), as a small
    table; "" for a grid run (every cell trained with every seed)."""
    if not is_adaptive(cells):
        return ""
    counts = sampling_counts(cells)
    meaning = {"full": "trained with every seed", "topped up": "trained, topped up beyond the starting seeds",
               "start seeds": "trained at the starting seeds only (no seed missing: the policy asked for no more)",
               "interpolated": "not trained: train loss, mc and CKA interpolated from the trained cells, labelled "
                               "by the same rules; left out of the claims"}
    rows = "".join(f"<tr><td class='text'>{html.escape(kind)}</td><td>{n}</td>"
                   f"<td class='text'>{html.escape(meaning[kind])}</td></tr>" for kind, n in counts.items() if n)
    return ("<h3>Adaptive search: trained and interpolated cells</h3>"
            f"<p>{html.escape(sampling_text(cells) or '')}. The cells table's <code>sampling</code> column says "
            "which is which.</p><table><thead><tr><th>cells</th><th>number</th><th>meaning</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


_STATUS_CSS = {"holds": "holds", "does not hold": "fails", "unresolved": "unresolved", "cannot be measured": "na",
               "not applicable": "na"}


def claims_table(claims: list[dict]) -> str:
    """HTML table of the paper's claims: claim, figure, verdict with its p (the fraction of seed resamplings in
    which it holds, analysis.claims), the deciding numbers in words.

    Claims that apply come first; a relaxed claim says which claim it relaxes; a claim that holds partly by the
    phase rules' own definition says what."""
    ordered = sorted(claims, key=lambda c: not c["applies"])
    rows = []
    for c in ordered:
        status = c.get("status") or ("holds" if c["holds"] else "does not hold" if c["holds"] is False
                                     else "not applicable")
        p = c.get("p_holds")
        verdict = f"<b>{html.escape(status)}</b>" + (f"<br>p = {p:.2f}" if p is not None else "")
        notes = ""
        if c.get("relaxation_of"):
            notes += f"<br><i>a relaxation of {html.escape(c['relaxation_of'])}: never a headline in its place</i>"
        if c.get("by_definition") and c["applies"]:
            notes += f"<br><i>true by the phase rules' definition: {html.escape(c['by_definition'])}</i>"
        rows.append(
            f"<tr class='{_STATUS_CSS.get(status, 'na')}'><td class='text'>{html.escape(c['claim'])}{notes}</td>"
            f"<td class='text'>{html.escape(c['figure'])}</td><td class='text'>{verdict}</td>"
            f"<td class='text'>{html.escape(c['summary'])}</td></tr>"
        )
    applies = [c for c in claims if c["applies"]]
    held = sum(1 for c in applies if c["holds"] is True)
    unresolved = sum(1 for c in applies if c.get("status") == "unresolved")
    head = (f"<p>{held} of the {len(applies)} claims that apply to this run hold, {unresolved} unresolved "
            f"({len(claims) - len(applies)} do not apply to its knobs). p: the fraction of seed resamplings in "
            "which a claim holds (holds at p >= 0.9, does not hold at p <= 0.1, unresolved between). Thresholds: "
            "analysis/claims.py.</p>")
    return (
        head + "<table><thead><tr><th>the paper's claim</th><th>figure</th><th>verdict</th><th>evidence</th></tr>"
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def figure_links(figure_files: dict[str, dict[str, str]], report_dir: str) -> str:
    """Links to the figure files, relative to the report's folder (they sit next to it, locally or on S3)."""
    items = []
    for name, paths in figure_files.items():
        links = []
        for fmt, path in paths.items():
            rel = os.path.relpath(path, report_dir).replace(os.sep, "/")
            links.append(f'<a href="{html.escape(urllib.parse.quote(rel), quote=True)}">{html.escape(rel)}</a>')
        items.append(f"<li>{html.escape(name.replace('_', ' '))}: " + ", ".join(links) + "</li>")
    return "<ul class='figure-files'>" + "".join(items) + "</ul>"


def _section_id(k: int) -> str:
    return f"d{k}"


def diagram_html(section: DiagramSection, section_id: str, report_dir: str) -> str:
    guidance = "".join(f"<li><b>{html.escape(f.topic)}</b>: {html.escape(f.message)}</li>" for f in section.findings)
    derived = derived_thresholds(section.cells)
    grid = section.phase_map.grid
    panels = "".join(
        f"<figure>{heatmap_svg(h, section=section_id)}<figcaption>{html.escape(h.range_label)}</figcaption></figure>"
        for h in section.heatmaps
    )
    parts = [
        f"<h2>{html.escape(section.title)}</h2>",
        _summary(section.cells),
        sampling_html(section.cells),
        "<h3>Phase map</h3>",
        "<p class='muted hint'>Hover a cell for its phase and the numbers that decided it; click it to find its "
        "row in the table of cells.</p>",
        f"<div class='phase-view'>{phase_map_svg(section.phase_map, section=section_id)}"
        f"<div><p><b>Key</b></p>{phase_key_html(section.phase_map)}"
        "<p class='muted'>Sharp or flat: mean train loss above or below 10× the run's converged floor; poorly or "
        "well connected: mean mode connectivity below or above minus the barrier threshold; IV-A and IV-B split "
        "phase IV by CKA (see the phase rules below).</p></div></div>",
        *(["<h3>The paper's claims, checked on this run</h3>", claims_table(section.claims)] if section.claims else []),
        "<h3>What the paper's guidance says about this run</h3>",
        f"<ul class='guidance'>{guidance or '<li>nothing to report</li>'}</ul>",
        "<h3>Metrics</h3>",
        "<p class='muted'>Means over seeds (pairs for mc, CKA, L2); Hessian as log of the mean. Dashed lines: "
        "phase boundaries. Grey: missing. Triangles on a colour bar: values beyond its range, drawn at its end "
        "colour. Under each panel: whether the paper's fixed range or the data range is used. Hover a cell for its "
        "value and its spread over seeds.</p>",
        f"<div class='panels'>{panels}</div>",
    ]
    if section.curves_png:
        parts += [
            "<h3>Bezier curves of representative cells</h3>",
            "<p class='muted'>Training error along the connecting curve; one cell per phase (median mc).</p>",
            _img(section.curves_png, f"curves: {section.title}"),
        ]
    if section.training_png:
        parts += [
            "<h3>Training curves of representative cells</h3>",
            "<p class='muted'>Train loss (mean of each epoch's SGD batches) and test accuracy (at the epochs of "
            "<code>training.eval_every</code>) against the epoch, one line per seed; the same cells as the curves. "
            "Any cell: <code>landscape plot RUN_DIR --cell KNOB=VALUE,KNOB=VALUE</code>.</p>",
            _img(section.training_png, f"training curves: {section.title}"),
        ]
    if section.figure_files:
        parts.append("<p class='muted'>Figure files (PNG and PDF, next to this report):</p>"
                     + figure_links(section.figure_files, report_dir))
    parts += [
        "<h3>Phase rules</h3>",
        "<p>Thresholds this run produced: " + "; ".join(html.escape(d) for d in derived) + ".</p>" if derived else "",
        f"<details><summary>The rules and their settings</summary>{rules_table(section.rules)}</details>",
        "<h3>Cells</h3>",
        cells_table(section.cells, grid, section_id, section.metrics, section.mc_unit),
    ]
    return "\n".join(parts)


def _folded(summary: str, content: str) -> str:
    return f"<details><summary>{summary}</summary>{content}</details>"


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
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shareable = _without_local_paths(run_dir)
    warn = "".join(f"<li class='warn'>{html.escape(shareable(w))}</li>" for w in warnings or [])
    if config_text is not None:
        lines = config_text.count("\n") + 1
        config = _folded(f"config.yaml ({lines} lines)", f"<pre>{html.escape(config_text)}</pre>")
    else:
        config = "<p class='muted'>No config.yaml in the run directory.</p>"
    provenance_text = shareable(json.dumps(provenance, indent=2, sort_keys=True, default=str))
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='muted wrap'>Run directory {html.escape(shareable(run_dir))}; report generated {now}.</p>",
        f"<ul>{warn}</ul>" if warn else "",
        *[diagram_html(s, _section_id(k), report_dir) for k, s in enumerate(sections)],
        "<h2>Run configuration</h2>",
        config,
        "<h2>Provenance</h2>",
        _folded("run id, config hash, package and library versions, source",
                f"<pre>{html.escape(provenance_text)}</pre>"),
        "<div id='tip' role='tooltip' hidden></div>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_asset('css')}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{_asset('js')}</script>\n</body></html>\n"
    )
