"""Seed noise (analysis.bootstrap): resampled seeds re-aggregated, re-labelled and the claims re-checked; p_holds
decides the verdict, phase_confidence marks the labels another set of seeds would change."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import aggregate_cells
from analysis.bootstrap import labelled_draws, phase_confidence, resample_cells
from analysis.claims import RunFacts, evaluate_claims
from analysis.phases import PhaseRules, label_phases
from analysis.plot_data import UNCERTAIN_KEY, phase_map_data
from analysis.report_panels import phase_key_html, phase_map_svg, phase_tip
from tests.analysis_synthetic import (
    FIG2_BATCHES,
    FIG2_LAYOUT,
    FIG2_VALUES,
    FIG2_WIDTHS,
    fig2_cells,
    labelled_cells,
    layout_tables,
)

CLEAN = RunFacts("width", "batch_size", 0.0)
DRAWS = 200


def checked(models, pairs, *, draws=DRAWS, seed=0) -> tuple[pd.DataFrame, dict]:
    """(labelled cells with their confidence, claim records by id) of per-seed tables, as analyze_run does it."""
    cells = aggregate_cells(models, pairs)
    labelled = label_phases(cells)
    resampled, why = labelled_draws(models, pairs, cells, PhaseRules(), draws=draws, seed=seed)
    labelled["phase_confidence"], labelled["phase_runner_up"] = phase_confidence(labelled, resampled)
    records = evaluate_claims(labelled, CLEAN, draws=resampled, no_draws=why)
    return labelled, {r["id"]: r for r in records}


def test_a_noiseless_grid_has_certain_labels_and_claims():
    cells, v = checked(*layout_tables(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, FIG2_VALUES))
    expected = {(float(w), float(t)): p for t, line in zip(FIG2_BATCHES, FIG2_LAYOUT)
                for w, p in zip(FIG2_WIDTHS, line.split())}
    assert {(r.load_value, r.temperature_value): r.phase for r in cells.itertuples()} == expected
    assert (cells["phase_confidence"] == 1.0).all() and cells["phase_runner_up"].isna().all()
    for cid in ("sharp-phases-hot", "poor-phases-narrow", "best-in-iv-b", "tenfold-loss-drop"):
        assert v[cid]["holds"] is True and v[cid]["p_holds"] == 1.0, v[cid]["summary"]
        assert v[cid]["summary"].startswith(f"holds (p = 1.00 over {DRAWS} seed resamplings)")


# The best IV-B cell (width 128, batch 64) at 0.90; the best other cell (phase II, width 128, batch 16) below it by
# a chosen number of standard errors; every other cell at most 0.84. Seed spread 0.01: each mean has standard
# error 0.01 / sqrt(5), the lead's joint standard error sqrt(2) times that.
SPREAD = 0.01
JOINT_SE = math.sqrt(2) * SPREAD / math.sqrt(5)


def _best_cell_race(lead_in_se: float) -> dict:
    acc = {(128, 64): 0.90, (128, 16): 0.90 - lead_in_se * JOINT_SE}
    return checked(*layout_tables(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, FIG2_VALUES, acc_spread=SPREAD,
                                  acc=acc))[1]["best-in-iv-b"]


@pytest.mark.parametrize("lead_in_se", [0.3, 0.9])
def test_a_best_cell_leading_by_less_than_one_standard_error_is_unresolved(lead_in_se):
    r = _best_cell_race(lead_in_se)
    assert r["evidence"]["lead_in_standard_errors"] == pytest.approx(lead_in_se, abs=0.02)
    assert r["holds"] is None and r["status"] == "unresolved", r["summary"]
    assert 0.1 < r["p_holds"] < 0.9
    assert r["summary"].startswith("unresolved (p = ")
    assert "between 0.1 and 0.9" in r["evidence"]["resampling"]["why_unresolved"]
    assert r["evidence"]["best_outside"]["phase"] == "II"


def test_a_best_cell_leading_by_more_than_three_standard_errors_holds_and_trailing_fails():
    r = _best_cell_race(3.5)
    assert r["holds"] is True and r["p_holds"] >= 0.9, r["summary"]
    r = _best_cell_race(-3.5)
    assert r["holds"] is False and r["p_holds"] <= 0.1, r["summary"]


def test_draws_are_seeded():
    tables = layout_tables(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, FIG2_VALUES, acc_spread=SPREAD,
                           acc={(128, 64): 0.90, (128, 16): 0.90 - 0.5 * JOINT_SE})
    first, again = checked(*tables)[1], checked(*tables)[1]
    assert first == again
    other = checked(*tables, seed=1)[1]
    assert other["best-in-iv-b"]["p_holds"] != first["best-in-iv-b"]["p_holds"]  # a different seed, other draws


def test_a_correlation_over_three_cells_is_unresolved():
    # Three phase-IV cells: Spearman can only be +-1 or +-0.5.
    cells = labelled_cells(["I    II   II", "III  IV-A IV-B", "III  III  IV-B"], [8, 16, 32], [16, 32, 64],
                           FIG2_VALUES)
    r = {c["id"]: c for c in evaluate_claims(cells, CLEAN)}["cka-tracks-accuracy"]
    assert r["holds"] is None and r["status"] == "unresolved" and r["summary"].startswith("unresolved:")
    assert r["evidence"]["phase_iv_cells"] == 3
    # Nine phase-IV cells (the Fig. 2 grid) resolve it.
    assert {c["id"]: c for c in evaluate_claims(fig2_cells(), CLEAN)}["cka-tracks-accuracy"]["holds"] is True


def test_the_tenfold_drop_is_measured_across_the_boundary_not_between_class_medians():
    cells = fig2_cells()
    cells.loc[cells.temperature_value == 32, "train_loss"] = 0.05  # the sharp row next to the flat ones
    r = {c["id"]: c for c in evaluate_claims(cells, CLEAN)}["tenfold-loss-drop"]
    assert r["holds"] is False, r["summary"]
    # Per width: 0.05 over 0.012 (III, widths 8, 16) or 0.01 (IV-B, widths 32-128): median 5.
    assert r["evidence"]["median_ratio"] == pytest.approx(5.0)
    assert r["evidence"]["boundary_pairs"] == 5
    # The class medians would have said "holds": sharp cells lie above 10 x the floor by the rules' definition.
    assert r["evidence"]["class_median_ratio_by_definition"] > 10


def test_no_seeds_to_resample_keeps_the_verdicts_on_the_means_and_says_so():
    models, pairs = layout_tables(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, FIG2_VALUES)
    models = models[models.seed == 0]
    pairs = pairs.iloc[0:0]
    assert resample_cells(models, pairs, aggregate_cells(models, pairs)) is None
    cells = fig2_cells()  # labelled as if the pairs were there
    resampled, why = labelled_draws(models, pairs, aggregate_cells(models, pairs), PhaseRules())
    assert resampled is None and why.startswith("no seeds to resample")
    conf, runner = phase_confidence(cells, resampled)
    assert all(math.isnan(c) for c in conf) and runner == [None] * len(cells)
    r = {c["id"]: c for c in evaluate_claims(cells, CLEAN, draws=resampled, no_draws=why)}["best-in-iv-b"]
    assert r["holds"] is True and r["p_holds"] is None and r["status"] == "holds"
    assert "no seeds to resample" in r["summary"] and "seed noise not measured" in r["summary"]
    assert r["evidence"]["resampling"] == {"draws": 0, "why": why}


def test_a_pair_goes_with_its_seeds_and_a_single_connected_pair_is_always_kept():
    # One cell, 5 seeds, CKA on every pair, mode connectivity on the pair (0, 1) only (as the authors connect).
    models, pairs = layout_tables(["IV-B"], [64], [128], FIG2_VALUES, acc_spread=SPREAD)
    pairs["cka"] = [0.1 * (a + b) for a, b in zip(pairs.seed_a, pairs.seed_b)]
    pairs.loc[~((pairs.seed_a == 0) & (pairs.seed_b == 1)), "mode_connectivity"] = np.nan
    cells = aggregate_cells(models, pairs)
    draws = resample_cells(models, pairs, cells, draws=300)
    mc_n = np.array([d["mode_connectivity_n"].iloc[0] for d in draws])
    # The mc pair counts count(0) x count(1) >= 1 times: a draw without both of its seeds is redrawn.
    assert (mc_n >= 1).all() and all(d["mode_connectivity"].iloc[0] == 0.0 for d in draws)
    # CKA pairs count(a) x count(b) times for a != b: at most 10 (all 5 seeds once) ... 6 (two seeds, 3 + 2).
    cka_n = np.array([d["cka_n"].iloc[0] for d in draws])
    assert cka_n.max() <= 10 and cka_n.min() >= 4
    # The resampled means scatter around the cell's mean, with the spread of a mean of 5 seeds: the redraws for mc
    # (which always hold seeds 0 and 1, the least accurate here) do not bias the models' metrics.
    acc = np.array([d["test_acc"].iloc[0] for d in draws])
    assert abs(acc.mean() - cells["test_acc"].iloc[0]) < 0.002
    assert 0.5 * SPREAD / math.sqrt(5) < acc.std() < 1.2 * SPREAD / math.sqrt(5)


def test_the_phase_map_shows_uncertain_labels():
    cells = fig2_cells()
    cells["phase_confidence"] = 1.0
    cells["phase_runner_up"] = None
    shaky = (cells.load_value == 32) & (cells.temperature_value == 64)
    cells.loc[shaky, "phase_confidence"] = 0.6
    cells.loc[shaky, "phase_runner_up"] = "IV-A"
    data = phase_map_data(cells)
    i, j = data.grid.position(32.0, 64.0)
    expected = np.zeros(data.grid.shape, dtype=bool)
    expected[i, j] = True
    assert (data.uncertain == expected).all()
    tip = phase_tip(data, i, j)
    assert "label in 60% of seed resamplings; runner-up IV-A" in tip
    assert "every resampling agrees" in phase_tip(data, 0, 0)
    svg = phase_map_svg(data, section="d0")
    assert svg.count('class="uncertain"') == 1
    assert "fewer than 80% of seed resamplings" in phase_key_html(data)
    assert "80%" in UNCERTAIN_KEY
    # Without resampling nothing is drawn as uncertain.
    assert not phase_map_data(fig2_cells()).uncertain.any()


def test_the_phase_map_figure_draws_the_uncertain_cells_with_a_key(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from analysis.plots import draw_phase_map

    cells = fig2_cells()
    cells["phase_confidence"] = np.where(cells.load_value == 8, 0.5, 1.0)
    cells["phase_runner_up"] = None
    ax = Figure().add_subplot(1, 1, 1)
    draw_phase_map(ax, phase_map_data(cells))
    hatched = [p for p in ax.patches if p.get_hatch() == "///"]
    assert len(hatched) == len(FIG2_BATCHES)  # the 5 cells of width 8
    assert any(UNCERTAIN_KEY in t.get_text() for t in ax.get_legend().get_texts())


def test_analyze_bootstrap_zero_switches_resampling_off(tmp_path):
    import json

    from tests.analysis_synthetic import write_synthetic_run
    from tests.helpers import landscape_in_process

    run = tmp_path / "run"
    write_synthetic_run(str(run), only=[(8, 16), (16, 16), (8, 128), (16, 128)])
    proc = landscape_in_process("analyze", run, "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    records = json.loads((run / "analysis" / "claims.json").read_text(encoding="utf-8"))
    measured = [r for r in records if r["holds"] is not None]
    assert measured and all(r["p_holds"] is None and "resampling switched off" in r["summary"] for r in measured)
    assert pd.read_parquet(run / "analysis" / "cells.parquet")["phase_confidence"].isna().all()
