"""report.html: one self-contained page (no script, no external file; images inlined as base64 PNG).

Contents, per diagram (one load x temperature pair): the phase map, the paper's claims checked on the run,
the practitioner guidance, the metric panels, the Bezier curves of representative cells, the phase rules with the thresholds they produced, and the
table of cells; then the run's config and provenance.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.guidance import Finding
from analysis.phases import PhaseRules
from analysis.plot_data import MISSING_COLOR, PHASE_COLORS
from analysis.tables import format_value

# Columns of the cells table shown in the report: (column, header, format).
TABLE_COLUMNS = [
    ("phase", "phase", "s"),
    ("test_acc", "test acc", ".4f"),
    ("train_loss", "train loss", ".3g"),
    ("log_hessian_top_eigenvalue", "log λmax", ".2f"),
    ("log_hessian_trace", "log trace", ".2f"),
    ("mode_connectivity", "mc (pp)", ".2f"),
    ("cka", "CKA", ".3f"),
    ("l2_distance", "L2", ".3g"),
]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1500px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
h3 { font-size: 1.05em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.text { text-align: left; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: 12px; }
.summary li, .guidance li { margin: .3em 0; }
.phase { font-weight: 600; }
.muted { color: #777; }
.warn { color: #a33; }
.holds { background: #d8efd3; } .fails { background: #f6d5d5; } .na { color: #777; }
"""


@dataclass
class DiagramSection:
    """What the report shows for one diagram."""

    title: str
    cells: pd.DataFrame  # labelled cells of this diagram
    rules: PhaseRules
    findings: list[Finding]
    phase_map_png: str
    panels_png: str
    curves_png: str | None = None
    claims: list[dict] = field(default_factory=list)  # analysis.claims.evaluate_claims records
    figure_files: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {fmt: path}


def _img(path: str, alt: str) -> str:
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _fmt(value, fmt: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return '<span class="muted">–</span>'
    if fmt == "s":
        return html.escape(str(value))
    return html.escape(format(float(value), fmt))


def _phase_style(phase) -> str:
    color = PHASE_COLORS.get(phase, MISSING_COLOR) if isinstance(phase, str) else MISSING_COLOR
    text = "white" if phase in ("I", "III", "IV-B") else "black"
    return f'style="background:{color};color:{text}"'


def cells_table(cells: pd.DataFrame) -> str:
    """HTML table of the cells: keys, phase, metric means (± std where there is one), members, reason."""
    load, temp = cells["load_name"].iloc[0], cells["temperature_name"].iloc[0]
    head = (
        [html.escape(load), html.escape(temp)]
        + [html.escape(h) for _, h, _ in TABLE_COLUMNS]
        + ["models ok", "members", "why this phase"]
    )
    rows = []
    for _, r in cells.iterrows():
        tds = [
            f"<td>{html.escape(format_value(r['load_value']))}</td>",
            f"<td>{html.escape(format_value(r['temperature_value']))}</td>",
        ]
        for col, _, fmt in TABLE_COLUMNS:
            if col == "phase":
                tds.append(f'<td class="phase" {_phase_style(r["phase"])}>{_fmt(r["phase"], "s")}</td>')
                continue
            cell = _fmt(r.get(col), fmt)
            std = r.get(f"{col}_std")
            if isinstance(std, float) and math.isfinite(std):
                cell += f' <span class="muted">± {html.escape(format(std, fmt))}</span>'
            tds.append(f"<td>{cell}</td>")
        tds.append(f"<td>{int(r['n_models_ok'])}/{int(r['n_models_expected'])}</td>")
        missing = r.get("members_missing")
        tds.append(
            f'<td class="text warn">{html.escape(missing)}</td>'
            if isinstance(missing, str)
            else '<td class="text">complete</td>'
        )
        tds.append(f'<td class="text">{html.escape(str(r["phase_reason"]))}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def rules_table(rules: PhaseRules, cells: pd.DataFrame) -> str:
    rows = []
    for r in rules.describe():
        changed = "" if r["value"] == r["default"] else ' class="warn"'
        rows.append(
            f"<tr><td class='text'>{html.escape(r['name'])}</td><td{changed}>{html.escape(str(r['value']))}</td>"
            f"<td>{html.escape(str(r['default']))}</td><td class='text'>{html.escape(r['unit'])}</td>"
            f"<td class='text'>{html.escape(r['doc'])}</td></tr>"
        )
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
    return (
        "<table><thead><tr><th>rule</th><th>value</th><th>default</th><th>unit</th><th>meaning</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + (
            "<p>Thresholds this run produced: " + "; ".join(html.escape(d) for d in derived) + ".</p>"
            if derived
            else ""
        )
    )


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


_VERDICT = {True: ("holds", "holds"), False: ("does not hold", "fails"), None: ("not applicable", "na")}


def claims_table(claims: list[dict]) -> str:
    """HTML table of the paper's claims: claim, figure, verdict, the deciding numbers in words.

    Claims that apply come first; a claim that applies but could not be measured shows "not measured"."""
    ordered = sorted(claims, key=lambda c: not c["applies"])
    rows = []
    for c in ordered:
        text, css = _VERDICT[c["holds"]]
        if c["holds"] is None and c["applies"]:
            text = "not measured"
        rows.append(
            f"<tr class='{css}'><td class='text'>{html.escape(c['claim'])}</td><td class='text'>"
            f"{html.escape(c['figure'])}</td><td class='text'><b>{html.escape(text)}</b></td>"
            f"<td class='text'>{html.escape(c['summary'])}</td></tr>"
        )
    applies = [c for c in claims if c["applies"]]
    held = sum(1 for c in applies if c["holds"] is True)
    head = (f"<p>{held} of the {len(applies)} claims that apply to this run hold "
            f"({len(claims) - len(applies)} do not apply to its knobs). Thresholds: analysis/claims.py.</p>")
    return (
        head + "<table><thead><tr><th>the paper's claim</th><th>figure</th><th>verdict</th><th>evidence</th></tr>"
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def diagram_html(section: DiagramSection) -> str:
    guidance = "".join(f"<li><b>{html.escape(f.topic)}</b>: {html.escape(f.message)}</li>" for f in section.findings)
    parts = [
        f"<h2>{html.escape(section.title)}</h2>",
        _summary(section.cells),
        "<h3>Phase map</h3>",
        _img(section.phase_map_png, f"phase map: {section.title}"),
        *(["<h3>The paper's claims, checked on this run</h3>", claims_table(section.claims)] if section.claims else []),
        "<h3>What the paper's guidance says about this run</h3>",
        f"<ul class='guidance'>{guidance or '<li>nothing to report</li>'}</ul>",
        "<h3>Metrics</h3>",
        "<p class='muted'>Means over seeds (pairs for mc, CKA, L2); Hessian as log of the mean. Dashed lines: "
        "phase boundaries. Grey: missing. The colour-bar label says whether the paper's fixed range or the data "
        "range is used.</p>",
        _img(section.panels_png, f"metric panels: {section.title}"),
    ]
    if section.curves_png:
        parts += [
            "<h3>Bezier curves of representative cells</h3>",
            "<p class='muted'>Training error along the connecting curve; one cell per phase (median mc).</p>",
            _img(section.curves_png, f"curves: {section.title}"),
        ]
    if section.figure_files:
        listing = "".join(
            f"<li>{html.escape(name)}: " + ", ".join(html.escape(p) for p in paths.values()) + "</li>"
            for name, paths in section.figure_files.items()
        )
        parts.append(f"<p class='muted'>Figure files:</p><ul class='muted'>{listing}</ul>")
    parts += [
        "<h3>Phase rules</h3>",
        rules_table(section.rules, section.cells),
        "<h3>Cells</h3>",
        cells_table(section.cells),
    ]
    return "\n".join(parts)


def render_report(
    *,
    title: str,
    run_dir: str,
    sections: list[DiagramSection],
    config_text: str | None,
    provenance: dict,
    warnings: list[str] | None = None,
) -> str:
    """The whole page as a string."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    warn = "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in warnings or [])
    config = (
        f"<pre>{html.escape(config_text)}</pre>"
        if config_text is not None
        else "<p class='muted'>No config.yaml in the run directory.</p>"
    )
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='muted'>Run directory {html.escape(run_dir)}; report generated {now}.</p>",
        f"<ul>{warn}</ul>" if warn else "",
        *[diagram_html(s) for s in sections],
        "<h2>Run configuration</h2>",
        config,
        "<h2>Provenance</h2>",
        f"<pre>{html.escape(json.dumps(provenance, indent=2, sort_keys=True, default=str))}</pre>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
