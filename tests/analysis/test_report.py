"""analyze_run end to end on a demo-sized run: cells.parquet, figures, report.html (rendered in headless Chromium)."""

import base64
import os
import re
import subprocess
import urllib.parse

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.api import analyze_run
from analysis.plot_data import PANELS, PHASE_COLORS
from tests.analysis_synthetic import EXPECTED_PHASES, write_synthetic_run
from tests.helpers import chromium_executable

REQUIRED_COLUMNS = [
    "load_name",
    "load_value",
    "temperature_name",
    "temperature_value",
    "test_acc",
    "train_loss",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "mode_connectivity",
    "cka",
    "l2_distance",
    "test_acc_std",
    "train_loss_std",
    "mode_connectivity_std",
    "cka_std",
    "l2_distance_std",
    "n_models_ok",
    "n_pairs_ok",
    "complete",
    "phase",
    "sharpness_class",
    "connectivity_class",
    "cka_class",
    "phase_reason",
]
CONFIG = "sweep:\n  name: demo  # <script>alert('not run')</script>\n  seeds: 3\n"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("demo"))
    write_synthetic_run(run, drop=[(8, 16, 2)])  # one missing model: that cell must say so
    with open(os.path.join(run, "config.yaml"), "w") as fh:
        fh.write(CONFIG)
    return analyze_run(run)


def test_cells_parquet_has_the_contract_columns_and_the_designed_phases(analysed):
    cells = pq.read_table(analysed.cells_path).to_pandas()
    assert analysed.cells_path == os.path.join(analysed.run_dir, "analysis", "cells.parquet")
    missing = [c for c in REQUIRED_COLUMNS if c not in cells.columns]
    assert not missing
    got = {(int(r.load_value), int(r.temperature_value)): r.phase for r in cells.itertuples()}
    assert got == EXPECTED_PHASES
    assert set(cells.phase) <= {"I", "II", "III", "IV-A", "IV-B"}
    bad = cells[(cells.load_value == 8) & (cells.temperature_value == 16)].iloc[0]
    assert not bad.complete and "seed 2 missing" in bad.members_missing and bad.n_models_ok == 2


def test_figures_exist_in_both_formats(analysed):
    assert set(analysed.figures) == {"phase_map", "panels", "curves"}
    for paths in analysed.figures.values():
        assert set(paths) == {"png", "pdf"} and all(os.path.getsize(p) > 1000 for p in paths.values())


def test_rules_override_changes_labels_and_is_recorded(analysed, tmp_path):
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    # A 10 pp barrier threshold makes every cell well connected: no I, no III.
    res = analyze_run(run, rules={"mc_threshold": "10"}, out_dir=str(tmp_path / "out"), curve_cells=[])
    assert not set(res.cells.phase) & {"I", "III"}
    assert res.rules.mc_threshold == 10.0 and "curves" not in res.figures
    assert '"mc_threshold": 10.0' in open(res.rules_path).read()


def test_several_knobs_get_one_diagram_each(tmp_path):
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    write_synthetic_run(run, temperature_name="learning_rate", only=[(8, 16), (64, 128)])
    res = analyze_run(run, curve_cells=[])
    assert {"phase_map__width__batch_size", "phase_map__width__learning_rate"} <= set(res.figures)
    assert res.cells.groupby("temperature_name").size().to_dict() == {"batch_size": 16, "learning_rate": 2}
    # labelled per diagram: the batch-size diagram is the designed one whatever the other holds
    bs = res.cells[res.cells.temperature_name == "batch_size"]
    assert {(int(r.load_value), int(r.temperature_value)): r.phase for r in bs.itertuples()} == EXPECTED_PHASES


def test_guidance_applied_to_the_run(analysed):
    found = {f.topic: f for fs in analysed.findings.values() for f in fs}
    assert "model too small" in found["connectivity"].message
    assert "every cell with width >= 32 is well connected" in found["connectivity"].message
    assert (8.0, 16.0) in found["connectivity"].cells and (64.0, 128.0) not in found["connectivity"].cells
    # Batch 16 had levelled off while the same widths are flat at batch 64: SGD noise, cool down. Batch 32 was
    # still falling: too few steps, train longer (and no "cool down" for those).
    assert sorted(found["sgd-noise"].cells) == [(w, 16.0) for w in (8.0, 16.0, 32.0, 64.0)]
    assert "a larger batch size: batch_size 64 is flat" in found["sgd-noise"].message
    assert sorted(found["under-training"].cells) == [(8.0, 32.0), (16.0, 32.0), (32.0, 32.0), (64.0, 32.0)]
    assert "Train longer" in found["under-training"].message and "larger batch" not in found["under-training"].message
    assert sorted(found["similarity"].cells) == [(16.0, 128.0), (32.0, 64.0)]  # the IV-A cells
    assert "width = 64, batch_size = 128, in phase IV-B (as the paper reports)" in found["best"].message
    assert "more than tenfold" in found["loss-drop"].message
    assert "seed 2 missing" in found["completeness"].message


def test_empty_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no models or pairs"):
        analyze_run(str(tmp_path))


def test_report_is_self_contained_and_has_every_section(analysed):
    text = open(analysed.report_path, encoding="utf-8").read()
    # One live script, the page's own, inline; the config's script tag is escaped, not live.
    assert len(re.findall(r"<script", text)) == 1 and "<script>" in text and "&lt;script&gt;alert" in text
    assert not re.search(r"""\ssrc=["'](?!data:)""", text)  # nothing loaded from outside the page
    assert not re.search(r"""<link|@import|url\((?!#)""", text)  # no stylesheet, font or image by URL
    # The only links: relative ones to the figure files next to the page.
    hrefs = re.findall(r"""\shref=["']([^"']*)["']""", text)
    assert sorted(hrefs) == sorted(os.path.basename(p) for f in analysed.figures.values() for p in f.values())
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 1 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)  # curves
    assert text.count("<svg ") == len(PANELS) + 1  # the metric panels and the phase map, inline
    for words in (
        "Phase map",
        "guidance",
        "Phase rules",
        "Cells",
        "Run configuration",
        "Provenance",
        "synthetic-demo",
        "seed 2 missing",
        "Best mean test accuracy",
        "mc_threshold",
    ):
        assert words in text, words
    assert text.count("<tr data-cell=") == 16 and text.count("<tr>") >= 9  # a row per cell, a row per rule
    # Shared alone, the page shows the run folder's name, not where it lay on the machine that analysed it.
    run = os.path.dirname(analysed.report_path.rstrip(os.sep))
    run = os.path.dirname(run) if os.path.basename(run) == "analysis" else run
    assert f"Run directory {os.path.basename(run)};" in text and os.path.dirname(run) not in text


# ---------------------------------------------------------------------------------------------
# Headless Chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def _render(exe, html_path, tmp_path, *extra):
    """(stdout, console lines) of one headless Chromium run on a local file."""
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, f"file://{html_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return proc.stdout, console


def test_console_detection_catches_a_broken_page(tmp_path):
    exe = chromium_executable()
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>throw new Error('kaput')</script></body></html>")
    _, console = _render(exe, bad, tmp_path, "--dump-dom")
    assert any("kaput" in line for line in console)


def test_report_renders_in_chromium_without_console_errors(analysed, tmp_path):
    exe = chromium_executable()
    dom, console = _render(exe, analysed.report_path, tmp_path, "--dump-dom")
    assert console == []
    assert "Phase map" in dom and dom.count("data:image/png;base64,") == 1 and dom.count("<svg ") == len(PANELS) + 1
    shot = tmp_path / "shot.png"
    _, console = _render(exe, analysed.report_path, tmp_path, "--window-size=1300,1100", f"--screenshot={shot}")
    assert console == []
    from matplotlib.image import imread

    pixels = (imread(str(shot))[..., :3] * 255).round().astype(int)
    # The phase map sits at the top of the page: every phase colour of the run must be on screen.
    for phase, hex_color in PHASE_COLORS.items():
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        share = np.mean(np.all(np.abs(pixels - rgb) <= 3, axis=-1))
        assert share > 0.002, f"phase {phase} colour {hex_color} not visible in the screenshot ({share:.4%})"


def test_run_with_models_only_is_analysed_with_reasons(tmp_path):
    # Pairs and curves not computed yet: no connectivity, so no phase, but every figure and the report exist.
    run = str(tmp_path / "run")
    tables = write_synthetic_run(run, only=[(8, 16), (64, 128)])
    for key in tables.part_keys("pairs"):
        tables.delete_part("pairs", key)
    for key in tables.part_keys("curves"):
        tables.delete_part("curves", key)
    res = analyze_run(run)
    assert res.cells.phase.isna().all()
    assert res.cells.phase_reason.str.contains("mode connectivity missing").all()
    assert res.cells.members_missing.str.contains("no pairs measured").all()
    assert "curves" not in res.figures and os.path.exists(res.report_path)


def _svg_fills(text: str, metric: str) -> dict[str, str]:
    """data-cell -> fill colour of every cell of panel ``metric`` in the report."""
    svg = re.search(rf'<svg [^>]*data-metric="{metric}".*?</svg>', text, re.S).group(0)
    return dict((c, f) for f, c in re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})" data-cell="([^"]+)"', svg))


def test_svg_panels_colour_cells_like_the_figures(analysed):
    import matplotlib as mpl

    text = open(analysed.report_path, encoding="utf-8").read()
    hexed = lambda rgba: "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])  # noqa: E731
    # mc on the paper's fixed range -30..30 (RdBu_r, centred at 0): linear there, so value v sits at (v + 30) / 60.
    fills = _svg_fills(text, "mode_connectivity")
    rdbu = mpl.colormaps["RdBu_r"]
    # rows: batch 16, 32, 64, 128 (hot on top); columns: width 8, 16, 32, 64
    assert fills["d0-0-0"] == hexed(rdbu((-8.0 + 30) / 60))  # width 8, batch 16
    assert fills["d0-2-2"] == hexed(rdbu(0.5))  # width 32, batch 64: mc 0, the white centre
    # test accuracy falls back to its data range (viridis): the lowest cell gets the first colour, the highest the last.
    fills = _svg_fills(text, "test_acc")
    viridis = mpl.colormaps["viridis"]
    assert fills["d0-0-0"] == hexed(viridis(0.0)) and fills["d0-3-3"] == hexed(viridis(1.0))
    # The phase map: each phase's colour, as in phase_map.png.
    fills = _svg_fills(text, "phase")
    assert fills["d0-0-0"] == PHASE_COLORS["I"].lower() and fills["d0-3-3"] == PHASE_COLORS["IV-B"].lower()


def test_a_run_with_two_diagrams_gets_two_explorable_sections(tmp_path):
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    write_synthetic_run(run, temperature_name="learning_rate")
    text = open(analyze_run(run, curve_cells=[]).report_path, encoding="utf-8").read()
    assert text.count("<svg ") == 2 * (len(PANELS) + 1) and text.count("<table class='cells'>") == 2
    ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(ids) == len(set(ids))  # colour-bar gradients and the tooltip: unique on the page
    assert set(re.findall(r'data-cell="(d\d+)-\d+-\d+"', text)) == {"d0", "d1"}


def test_tooltips_say_how_many_members_a_value_averages(analysed):
    from analysis.plot_data import heatmap_data
    from analysis.report_panels import heatmap_tip

    cells = analysed.cells.copy()
    one = (cells.load_value == 64) & (cells.temperature_value == 16)
    cells.loc[one, ["cka_n", "cka_std"]] = [1, float("nan")]  # a cell whose CKA comes from one pair
    data = heatmap_data(cells, "cka")
    assert heatmap_tip(data, 0, 3).splitlines() == [
        "width 64 · batch_size 16", f"CKA similarity: {cells[one].cka.iloc[0]:.4g}", "from 1 pair (no spread)"]
    # width 64, batch 32: the pairs' CKA 0.58 + (-0.01, 0, 0.01) (tests/analysis_synthetic.py): std 0.01
    assert heatmap_tip(data, 1, 3).splitlines()[-1] == "std 0.01 over 3 pairs"


HOSTILE = "<script>window.pwned=1</script>\"'><img src=x onerror=alert(1)>"


def test_every_value_from_the_run_is_escaped(tmp_path, monkeypatch):
    """Run folders may be written by someone else: a hostile string in every place the page shows run data
    (title, warnings, knob names, cells' reasons and members, findings, claims, figure names, config,
    provenance) comes out as text, never as markup; the page's own script stays the only one."""
    import dataclasses

    from analysis import api, report
    from analysis.guidance import Finding

    captured = {}
    real = api.render_report
    monkeypatch.setattr(api, "render_report", lambda **kw: captured.update(kw) or real(**kw))
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    analyze_run(run)
    section = captured["sections"][0]
    cells = section.cells.assign(phase_reason=HOSTILE, members_missing=HOSTILE, load_name=HOSTILE,
                                 temperature_name=HOSTILE)
    claims = [{**c, "claim": HOSTILE, "figure": HOSTILE, "summary": HOSTILE, "relaxation_of": HOSTILE,
               "by_definition": HOSTILE, "applies": True} for c in section.claims]
    figure = os.path.join(captured["report_dir"], HOSTILE + ".png")
    hostile = dataclasses.replace(section, title=HOSTILE, cells=cells, claims=claims,
                                  findings=[Finding(HOSTILE, HOSTILE)], figure_files={HOSTILE: {"png": figure}})
    text = report.render_report(**{**captured, "title": HOSTILE, "sections": [hostile], "config_text": HOSTILE,
                                   "provenance": {"note": HOSTILE}, "warnings": [HOSTILE]})
    assert len(re.findall(r"<script", text, re.I)) == 1 and "<img src=x" not in text and "onerror=alert(1)>" not in text
    escaped = "&lt;script&gt;window.pwned=1&lt;/script&gt;&#34;&#39;&gt;&lt;img src=x onerror=alert(1)&gt;"
    # title x2, warning, h2, curves' alt, guidance x2, claims x5 per claim, figure name and link text, cells'
    # members and reasons, the table's aria-label and headers, config, provenance (as JSON: quotes escaped again)
    assert text.count(escaped) >= 12 + 5 * len(claims) + 2 * len(cells), text.count(escaped)
    hrefs = re.findall(r'href="([^"]*)"', text)
    assert hrefs == [urllib.parse.quote(HOSTILE + ".png")]  # quoted into the link: no markup, no other scheme
