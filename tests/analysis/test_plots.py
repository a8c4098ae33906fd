"""Plot data (orientation, values, colour ranges, boundaries, curves) tested as numbers; drawing smoke-tested."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import aggregate_cells
from analysis.curve_data import curve_data, representative_cells
from analysis.phases import label_phases
from analysis.plot_data import (
    PAPER_COLOR_RANGES,
    cell_grid,
    choose_color_range,
    heatmap_data,
    phase_boundaries,
    phase_map_data,
)
from analysis.plots import panel_layout, save_curves, save_panels, save_phase_map
from tests.analysis_synthetic import CELLS, EXPECTED_PHASES, write_synthetic_run


def grid_cells(temperature_name="batch_size", temps=(16.0, 128.0, 32.0), loads=(4.0, 1.0)):
    rows = [
        {
            "load_name": "width",
            "load_value": lv,
            "temperature_name": temperature_name,
            "temperature_value": tv,
            "test_acc": lv / 10 + tv / 1000,
        }
        for lv in loads
        for tv in temps
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    tables = write_synthetic_run(str(tmp_path_factory.mktemp("run")))
    cells = label_phases(aggregate_cells(tables.read("models"), tables.read("pairs")))
    return cells, tables.read("curves"), tables.read("pairs")


def test_hot_end_on_top_for_each_temperature_knob():
    g = cell_grid(grid_cells("batch_size"))
    assert g.y_values == (16.0, 32.0, 128.0) and g.x_values == (1.0, 4.0)  # small batch = hot = top row
    assert cell_grid(grid_cells("learning_rate", temps=(0.1, 0.4, 0.2))).y_values == (0.4, 0.2, 0.1)
    assert cell_grid(grid_cells("weight_decay", temps=(1e-4, 5e-4))).y_values == (5e-4, 1e-4)
    assert g.x_labels == ["1", "4"] and g.y_labels == ["16", "32", "128"]


def test_heatmap_values_sit_at_their_cells_and_missing_cells_are_nan():
    cells = grid_cells().drop(index=0)  # drop (load 4, temperature 16)
    h = heatmap_data(cells, "test_acc")
    assert h.values.shape == (3, 2)
    # row 0 = batch 16, column 0 = width 1
    assert h.values[0, 0] == pytest.approx(0.1 + 0.016)
    assert h.values[2, 0] == pytest.approx(0.1 + 0.128)
    assert math.isnan(h.values[0, 1]) and h.values[1, 1] == pytest.approx(0.4 + 0.032)


def test_colour_range_policy():
    inside = np.array([[0.6, 0.7], [0.8, 0.9]])
    assert choose_color_range("test_acc", inside) == (*PAPER_COLOR_RANGES["test_acc"], "paper")
    demo = np.array([[0.3, 0.4], [0.5, 0.7]])  # a CPU demo: 1 of 4 cells inside 0.56-0.91
    lo, hi, source = choose_color_range("test_acc", demo)
    assert (lo, hi) == (0.3, 0.7) and source.startswith("data") and "25%" in source
    assert choose_color_range("test_acc", demo, "paper")[:2] == PAPER_COLOR_RANGES["test_acc"]
    assert choose_color_range("test_acc", inside, (0.0, 1.0)) == (0.0, 1.0, "user")
    # diverging map: symmetric data range about 0
    assert choose_color_range("mode_connectivity", np.array([-80.0, 5.0]), "data")[:2] == (-80.0, 80.0)
    with pytest.raises(ValueError, match="low < high"):
        choose_color_range("cka", inside, (1.0, 0.0))
    with pytest.raises(ValueError, match="'paper' or 'data'"):
        choose_color_range("cka", inside, "auto")


def test_mode_connectivity_panel_is_centred_at_zero(labelled):
    cells, _, _ = labelled
    h = heatmap_data(cells, "mode_connectivity")
    assert h.center == 0.0 and h.vmin == -30 and h.vmax == 30 and h.cmap == "RdBu_r"


def test_phase_boundaries_by_hand():
    labels = np.array([["I", "II"], ["I", None]], dtype=object)
    segs = phase_boundaries(labels)
    # I|II between columns 0 and 1 in row 0; II above None in column 1; I|None in row 1. Not I above I.
    assert sorted(segs) == sorted(
        [
            ((0.5, -0.5), (0.5, 0.5)),
            ((0.5, 0.5), (1.5, 0.5)),
            ((0.5, 0.5), (0.5, 1.5)),
        ]
    )
    assert phase_boundaries(np.array([["I", "I"], ["I", "I"]], dtype=object)) == []


def test_phase_map_data_matches_labels(labelled):
    cells, _, _ = labelled
    pm = phase_map_data(cells)
    for (w, b), phase in EXPECTED_PHASES.items():
        i, j = pm.grid.position(w, b)
        assert pm.labels[i, j] == phase and pm.phases[pm.codes[i, j]] == phase
    assert pm.counts == {"I": 3, "II": 5, "III": 3, "IV-A": 2, "IV-B": 3, "unlabelled": 0}
    assert pm.grid.y_values[0] == 16.0  # hot on top
    # Boundary count by hand from the layout in the synthetic run's docstring: vertical edges per row
    # 1 + 1 + 2 + 2, horizontal edges between rows 1 + 4 + 2.
    assert len(pm.boundaries) == 13


def test_curve_data_and_representative_cells(labelled):
    cells, curves, pairs = labelled
    picks = representative_cells(cells, curves)
    assert len(picks) == 5  # one per phase
    assert {cells.set_index(["load_value", "temperature_value"]).loc[p, "phase"] for p in picks} == {
        "I",
        "II",
        "III",
        "IV-A",
        "IV-B",
    }
    cd = curve_data(curves, 8, 16, cells=cells, pairs=pairs)
    assert cd.phase == "I" and len(cd.series) == 1
    s = cd.series[0]
    assert list(s.t) == [0.0, 0.25, 0.5, 0.75, 1.0]
    mc = CELLS[(8, 16)][1]
    assert s.train_error[2] == pytest.approx(2.0 - (mc - 0.1)) and s.mode_connectivity == pytest.approx(mc - 0.1)
    with pytest.raises(ValueError, match="no curves stored"):
        curve_data(curves, 999, 16)


def test_one_diagram_needs_one_load_and_one_temperature():
    mixed = pd.concat([grid_cells(), grid_cells("learning_rate")])
    with pytest.raises(ValueError, match="one load and one temperature"):
        cell_grid(mixed)


def test_figures_are_written_as_png_and_pdf_and_are_not_blank(labelled, tmp_path):
    from matplotlib.image import imread

    cells, curves, pairs = labelled
    paths = [
        save_phase_map(cells, str(tmp_path / "phase_map")),
        save_panels(cells, str(tmp_path / "panels")),
        save_curves([curve_data(curves, 8, 16, cells=cells, pairs=pairs)], str(tmp_path / "curves")),
    ]
    for p in paths:
        with open(p["pdf"], "rb") as fh:
            assert fh.read(5) == b"%PDF-"
        image = imread(p["png"])
        assert image.ndim == 3 and image[..., :3].std() > 0.05  # more than one flat colour
    assert save_curves([], str(tmp_path / "none")) is None
    with pytest.raises(ValueError, match="not panels"):
        save_panels(cells, str(tmp_path / "x"), color_ranges={"accuracy": (0, 1)})


def test_train_loss_is_on_a_log_scale_from_the_floor_min_to_the_papers_top():
    from analysis.plot_data import LOG_SCALE_FLOOR, PANEL_BY_METRIC

    assert PANEL_BY_METRIC["train_loss"].log_scale and "log colour scale" in PANEL_BY_METRIC["train_loss"].title
    lo, hi, source = choose_color_range("train_loss", np.array([0.005, 0.05, 0.5, 2.0]))
    assert (lo, hi, source) == (LOG_SCALE_FLOOR, 3.0, "paper")
    # Data range on a log scale: positive values only.
    lo, hi, _ = choose_color_range("train_loss", np.array([0.0, 1e-5, 1e-4]), "data")
    assert (lo, hi) == (1e-5, 1e-4)
    with pytest.raises(ValueError, match="log scale"):
        choose_color_range("train_loss", np.array([0.1]), (0.0, 1.0))
    # Every log drawn is named the natural log.
    for metric in ("log_hessian_top_eigenvalue", "log_hessian_trace"):
        assert "natural log" in PANEL_BY_METRIC[metric].title


def test_colour_bar_labels_say_which_range_and_why_in_words():
    from analysis.plot_data import range_label

    assert range_label("paper", 0.56, 0.91) == "the paper's fixed range 0.56 to 0.91"
    assert range_label("data (25% of cells inside the paper's 0.56-0.91)", 0.3, 0.7) == (
        "this run's range 0.3 to 0.7:\nonly 25% of cells in the paper's 0.56-0.91")
    assert range_label("user", 0, 1) == "range set by the user: 0 to 1"
    h = heatmap_data(grid_cells(), "test_acc")
    assert h.range_label.startswith("this run's range") and h.print_values
    assert h.cell_text(0, 0) == f"{0.1 + 0.016:.2f}"


def test_values_are_printed_only_in_small_grids():
    from analysis.plot_data import MAX_PRINTED_CELLS

    big = grid_cells(temps=tuple(float(t) for t in range(1, 40)), loads=(1.0, 2.0))
    assert heatmap_data(big, "test_acc").values.size > MAX_PRINTED_CELLS
    assert not heatmap_data(big, "test_acc").print_values


def test_phase_map_key_explains_every_phase(labelled, tmp_path):
    from analysis.plot_data import PHASE_KEY

    assert set(PHASE_KEY) == {"I", "II", "III", "IV-A", "IV-B"}
    assert PHASE_KEY["IV-B"] == "flat, well connected, higher CKA" and PHASE_KEY["I"] == "sharp, poorly connected"
    from matplotlib.figure import Figure

    from analysis.plots import draw_phase_map

    ax = Figure().add_subplot(1, 1, 1)
    draw_phase_map(ax, phase_map_data(labelled[0]))
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == "I: sharp, poorly connected (3)" and texts[4] == "IV-B: flat, well connected, higher CKA (3)"


def test_mode_connectivity_in_nats_is_titled_so_and_drawn_on_its_own_range():
    # mc on the train loss (metrics.curve.mc_on: loss): a few hundredths of a nat, all inside the authors' -30..30 pp.
    cells = grid_cells().assign(mode_connectivity=[-0.08, -0.02, 0.0, -0.05, 0.01, -0.03])
    in_pp = heatmap_data(cells, "mode_connectivity")
    assert in_pp.title == "mode connectivity (pp)" and (in_pp.vmin, in_pp.vmax, in_pp.range_source) == (-30, 30, "paper")
    in_nats = heatmap_data(cells, "mode_connectivity", mc_unit="nats")
    assert in_nats.title == "mode connectivity (nats)" and in_nats.range_source == "data"
    assert in_nats.vmax - in_nats.vmin < 1  # the data's range, not one that would draw every cell as 0
    assert heatmap_data(cells, "test_acc", mc_unit="nats").title == heatmap_data(cells, "test_acc").title


def test_the_report_table_heads_mode_connectivity_in_the_runs_unit():
    from analysis.report import table_columns

    headers = {col: header for col, header, _ in table_columns()}
    assert headers["mode_connectivity"] == "mc (pp)"
    assert {col: h for col, h, _ in table_columns(mc_unit="nats")}["mode_connectivity"] == "mc (nats)"


def test_panel_rows_are_as_even_as_they_can_be():
    assert [panel_layout(n) for n in (1, 4, 5, 8, 9, 10, 13)] == [(1, 1), (1, 4), (2, 3), (2, 4), (3, 3), (3, 4),
                                                                   (4, 4)]


def test_a_long_panel_title_is_squeezed_into_the_report_panel_not_clipped():
    import dataclasses
    import re

    from analysis.report_panels import heatmap_svg

    data = heatmap_data(grid_cells(), "test_acc")
    short = heatmap_svg(data, section="s")
    long = heatmap_svg(dataclasses.replace(data, title="ln weight spectral norm " * 4), section="s")
    assert "textLength" not in re.search(r"<text[^>]*class=\"title\"[^>]*>", short)[0]
    assert 'lengthAdjust="spacingAndGlyphs"' in re.search(r"<text[^>]*class=\"title\"[^>]*>", long)[0]
