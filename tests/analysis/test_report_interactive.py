"""report.html explored in headless Chromium (Debian's /usr/bin/chromium, driven by playwright): tooltips on
every panel, the phase map's reasons, sorting and filtering the table of cells, nothing off the page, nothing
from the run executed.

Expected numbers come from the synthetic run's definition (tests/analysis_synthetic.py), not from the report.
"""

import math
import os
import re
import statistics
import urllib.parse

import pytest

from analysis.api import analyze_run
from analysis.plot_data import PANELS
from tests.analysis_synthetic import (
    BATCHES,
    CELLS,
    EXPECTED_PHASES,
    SEED_FACTOR,
    SEEDS,
    WIDTHS,
    write_synthetic_run,
)
from tests.helpers import chromium_executable

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DROPPED = (8, 16, 2)  # one model left out: its cell averages 2 models and says so
NO_PAIRS = (32, 16)  # a cell whose pairs were never measured: no mc, no phase
LONG_LINE = "x" * 600  # an unbroken config value: must wrap, not widen the page
CONFIG = (
    "sweep:\n  name: demo  # <script>window.pwned = 1</script>\n"
    f"  note: <img src=x onerror=\"window.pwned = 2\"> {LONG_LINE}\n"
)
PROVENANCE = '{"note": "</pre><script>window.pwned = 3</script>", "path": "/' + "very-long-folder/" * 40 + '"}'


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("interactive") / "run")
    tables = write_synthetic_run(run, drop=[DROPPED])
    for key in tables.part_keys("pairs"):
        if key.startswith(f"width={NO_PAIRS[0]}__batch_size={NO_PAIRS[1]}__"):
            tables.delete_part("pairs", key)
    with open(os.path.join(run, "config.yaml"), "w") as fh:
        fh.write(CONFIG)
    with open(os.path.join(run, "provenance.json"), "w") as fh:
        fh.write(PROVENANCE)
    return analyze_run(run)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("playwright is not installed; it is in the test extra: pip install -e '.[test]'")
        pytest.skip("playwright not installed (pip install -e '.[test]')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=exe, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1300, "height": 1000},
        )
        context.set_default_timeout(30_000)
        yield context
        context.close()


class Page:
    """A page of the browser with every console error and uncaught exception collected."""

    def __init__(self, context, url: str):
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url)

    def close(self):
        self.page.close()


@pytest.fixture
def page(browser, report):
    p = Page(browser, f"file://{report.report_path}")
    yield p
    p.close()
    assert p.errors == []


def _cell(w, b) -> str:
    """data-cell id of (width, batch) in the first (only) diagram: row 0 is the hot end (batch 16)."""
    return f"d0-{BATCHES.index(b)}-{WIDTHS.index(w)}"


def _hover_tip(page, metric: str, w: int, b: int) -> str:
    page.page.hover(f'svg[data-metric="{metric}"] rect[data-cell="{_cell(w, b)}"]')
    tip = page.page.locator("#tip")
    assert tip.is_visible()
    return tip.inner_text()


def _seed_values(w, b, per_seed):
    return [per_seed(SEED_FACTOR[s]) for s in SEEDS if (w, b, s) != DROPPED]


# ---------------------------------------------------------------------------------------------


def test_console_detection_catches_a_broken_page(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>throw new Error('kaput')</script></body></html>")
    p = Page(browser, f"file://{bad}")
    p.close()
    assert any("kaput" in e for e in p.errors)


def test_hovering_a_metric_cell_shows_its_value_and_seed_spread(page):
    w, b = 64, 128
    accs = _seed_values(w, b, lambda f: CELLS[(w, b)][3] + (f - 1) / 100)
    text = _hover_tip(page, "test_acc", w, b)
    assert text.splitlines() == [
        "width 64 · batch_size 128",
        f"test accuracy: {statistics.mean(accs):.4g}",
        f"std {statistics.stdev(accs):.2g} over 3 models",
    ]
    # The dropped model's cell: two models; a log panel shows the mean it is the log of.
    w, b = DROPPED[:2]
    lams = _seed_values(w, b, lambda f: 50 * CELLS[(w, b)][0] * f + 1)
    text = _hover_tip(page, "log_hessian_top_eigenvalue", w, b)
    assert f"ln λ_max (natural log of the seed mean): {math.log(statistics.mean(lams)):.4g}" in text
    assert (f"hessian_top_eigenvalue: mean {statistics.mean(lams):.4g}, std {statistics.stdev(lams):.2g} "
            "over 2 models") in text
    # A pairwise metric counts pairs.
    text = _hover_tip(page, "mode_connectivity", 8, 64)
    assert f"mode connectivity (pp): {CELLS[(8, 64)][1]:.4g}" in text and "over 3 pairs" in text


def test_every_panel_cell_has_a_tooltip(page):
    for spec in PANELS:
        rects = page.page.locator(f'svg[data-metric="{spec.metric}"] rect[data-cell]')
        assert rects.count() == len(CELLS), spec.metric
    text = _hover_tip(page, "cka", *NO_PAIRS)
    assert "CKA similarity: missing" in text and "no pairs with a value" in text


def test_hovering_the_phase_map_gives_phase_reason_and_members(page, report):
    w, b = DROPPED[:2]
    text = _hover_tip(page, "phase", w, b)
    reason = report.cells[(report.cells.load_value == w) & (report.cells.temperature_value == b)].phase_reason.iloc[0]
    lines = text.splitlines()
    confidence = report.cells[(report.cells.load_value == w)
                              & (report.cells.temperature_value == b)].phase_confidence.iloc[0]
    assert lines[2] == f"label in {confidence:.0%} of seed resamplings; runner-up none", lines  # seed noise
    assert lines[:2] + lines[3:] == [
        "width 8 · batch_size 16",
        f"phase {EXPECTED_PHASES[(w, b)]}: sharp, poorly connected",
        reason,
        "members: seed 2 missing",
    ]
    # The same cell lights up on every panel and in the table.
    lit = page.page.locator(f'[data-cell="{_cell(w, b)}"].hl')
    assert lit.count() == len(PANELS) + 2  # the metric panels, the phase map, the table row
    text = _hover_tip(page, "phase", *NO_PAIRS)
    assert "no phase" in text and "mode connectivity missing" in text and "no pairs measured" in text


def _column(page, key: str) -> list[str]:
    """data-v (or the text) of column ``key`` over the visible rows, in their order on the page."""
    return page.page.evaluate(
        """key => {
            const table = document.querySelector("table.cells");
            const col = Array.from(table.tHead.rows[0].cells).findIndex(th => th.dataset.key === key);
            return Array.from(table.tBodies[0].rows).filter(r => !r.hidden).map(r => {
                const td = r.cells[col];
                return td.dataset.v !== undefined ? td.dataset.v : td.textContent.trim();
            });
        }""",
        key,
    )


def test_clicking_a_header_sorts_the_table(page):
    mc = {cell: v[1] for cell, v in CELLS.items() if cell != NO_PAIRS}
    header = page.page.locator('table.cells th[data-key="mode_connectivity"] button')
    header.click()
    got = _column(page, "mode_connectivity")
    assert [float(v) for v in got[:-1]] == pytest.approx(sorted(mc.values())) and got[-1] == ""  # missing last
    assert page.page.locator('th[data-key="mode_connectivity"]').get_attribute("aria-sort") == "ascending"
    header.click()
    got = _column(page, "mode_connectivity")
    assert [float(v) for v in got[:-1]] == pytest.approx(sorted(mc.values(), reverse=True)) and got[-1] == ""
    page.page.locator('table.cells th[data-key="phase"] button').click()
    phases = [p for p in _column(page, "phase") if p != "–"]
    assert phases == sorted(EXPECTED_PHASES[c] for c in CELLS if c != NO_PAIRS)
    assert page.page.locator('th[data-key="mode_connectivity"]').get_attribute("aria-sort") is None


def test_typing_in_the_filter_shows_only_the_matching_rows(page):
    box = page.page.locator(".cells-view input.filter")
    shown = page.page.locator(".cells-view output.shown")

    def rows(query):
        box.fill(query)
        return sorted((int(float(w)), int(float(b))) for w, b in
                      zip(_column(page, "width"), _column(page, "batch_size")))

    assert rows("phase=IV-B") == sorted(c for c, p in EXPECTED_PHASES.items() if p == "IV-B")
    assert shown.inner_text() == "3 of 16 cells"
    assert rows("mode_connectivity<-5") == sorted(c for c, v in CELLS.items() if v[1] < -5 and c != NO_PAIRS)
    assert rows("width=8 III") == [(8, 64), (8, 128)]  # a column test and words, both must hold
    assert rows("missing") == sorted([DROPPED[:2], NO_PAIRS])
    assert rows("") == sorted(CELLS) and shown.inner_text() == "16 of 16 cells"


def test_clicking_a_panel_cell_brings_its_row_into_view(page):
    page.page.click(f'svg[data-metric="phase"] rect[data-cell="{_cell(64, 128)}"]')
    row = page.page.locator(f'tr[data-cell="{_cell(64, 128)}"]')
    assert "found" in row.get_attribute("class")
    assert row.is_visible() and page.page.evaluate(
        "el => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; }",
        row.element_handle(),
    )


def test_nothing_runs_off_a_narrow_page_and_the_provenance_is_folded(page):
    page.page.set_viewport_size({"width": 800, "height": 900})
    overflow = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.page.evaluate(overflow) <= 0
    details = page.page.locator("details")
    assert details.count() >= 3 and all(not d.get_attribute("open") for d in details.all())
    for summary in page.page.locator("details > summary").all():
        summary.click()
    assert page.page.evaluate(overflow) <= 0
    for pre in page.page.locator("pre").all():  # the long config line and provenance path wrap inside their box
        assert pre.evaluate("el => el.scrollWidth <= el.clientWidth")
    assert LONG_LINE in page.page.locator("pre").first.inner_text().replace("\n", "")


def test_nothing_from_the_run_is_executed(page):
    assert page.page.evaluate("() => window.pwned") is None
    text = page.page.locator("body").inner_text()
    assert "<script>window.pwned = 1</script>" not in text  # folded: not rendered until opened
    page.page.locator("details > summary").last.click()
    assert "</pre><script>window.pwned = 3</script>" in page.page.locator("body").inner_text()
    assert page.page.evaluate("() => window.pwned") is None


def test_figure_links_are_relative_and_reach_the_files(page, report):
    hrefs = page.page.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))")
    expected = {os.path.basename(p) for paths in report.figures.values() for p in paths.values()}
    assert set(hrefs) == expected
    for href in hrefs:
        assert not re.match(r"^([a-z]+:|/)", href), href
        assert os.path.isfile(os.path.join(os.path.dirname(report.report_path), urllib.parse.unquote(href)))
    sources = page.page.eval_on_selector_all("[src]", "els => els.map(e => e.getAttribute('src'))")
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
