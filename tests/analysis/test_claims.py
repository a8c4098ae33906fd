"""The paper's claims (analysis.claims): every Fig. 2/3 claim holds on the authors' released results, each claim
holds on a cell table built to show it and fails on one built to break it, and analyze_run writes them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.claims import CLAIM_BY_ID, CLAIMS, RunFacts, evaluate_claims, ordered_pairs, spearman
from tests.analysis_synthetic import (
    FIG2_BATCHES,
    FIG2_LAYOUT,
    FIG2_VALUES,
    FIG2_WIDTHS,
    fig2_cells,
    labelled_cells,
    write_synthetic_run,
)

WIDTH_CLAIMS = ["sharp-phases-hot", "poor-phases-narrow", "iv-b-hotter-than-iv-a", "all-phases-present",
                "tenfold-loss-drop", "hessian-larger-when-sharp", "best-in-iv-b", "best-in-phase-iv",
                "cka-tracks-accuracy", "iii-flat-but-worse"]
CLEAN = RunFacts("width", "batch_size", 0.0)
NOISY = RunFacts("width", "batch_size", 0.1)


def verdicts(cells, facts=CLEAN) -> dict:
    return {r["id"]: r for r in evaluate_claims(cells, facts)}


def test_every_claim_is_declared_once_with_its_figure():
    assert len(CLAIM_BY_ID) == len(CLAIMS)
    for c in CLAIMS:
        assert c.figure and c.text.endswith(".") and c.rule


def test_spearman_and_ordered_pairs_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2], [1, 2]) != spearman([1, 2], [1, 2])  # NaN below 3 pairs
    cells = pd.DataFrame({"load_value": [1, 1, 1, 2], "phase": ["I", "III", "III", "I"]})
    # At load 1: I at position 5 vs III at 3 and 7 -> one of two pairs has I larger; load 2 has no III.
    assert ordered_pairs(cells, ("I",), ("III",), same="load_value", position=pd.Series([5, 3, 7, 0]).to_numpy()) == (1, 2)


# ------------------------------------------------------------------------------------------------------------
# A cell table with the paper's layout: every width claim holds; the others do not apply


def test_every_width_claim_holds_on_a_paper_like_grid():
    v = verdicts(fig2_cells())
    for cid in WIDTH_CLAIMS:
        assert v[cid]["applies"] and v[cid]["holds"] is True, (cid, v[cid]["summary"])
        assert v[cid]["summary"].startswith("holds (not resampled")
    for cid in set(CLAIM_BY_ID) - set(WIDTH_CLAIMS):
        assert v[cid]["holds"] is None and not v[cid]["applies"], cid
        assert v[cid]["summary"].startswith("not applicable:")
    ev = v["sharp-phases-hot"]["evidence"]
    # 2 sharp x 3 flat cells per width, 5 widths: 30 pairs, all with the sharp cell hotter.
    assert (ev["agreeing"], ev["pairs"], ev["fraction"]) == (30, 30, 1.0)
    assert v["best-in-iv-b"]["evidence"]["best_in_phase"]["phase"] == "IV-B"


def _layout(*replace):
    """FIG2_LAYOUT with text replacements applied to every row."""
    rows = list(FIG2_LAYOUT)
    for old, new in replace:
        rows = [r.replace(old, new) for r in rows]
    return rows


def _values(**changes):
    """FIG2_VALUES with some fields of some phases changed: _values(II={"test_acc": 0.95})."""
    names = ("train_loss", "mc", "cka", "test_acc", "log_lambda", "log_trace")
    out = dict(FIG2_VALUES)
    for phase, fields in changes.items():
        phase = phase.replace("_", "-")
        current = dict(zip(names, out[phase]))
        current.update(fields)
        out[phase] = tuple(current[n] for n in names)
    return out


# Each claim, and a cell table that breaks it (and nothing about the claim's own logic is special-cased).
BROKEN = {
    "sharp-phases-hot": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES[::-1], FIG2_VALUES),
    "poor-phases-narrow": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS[::-1], FIG2_BATCHES, FIG2_VALUES),
    "iv-b-hotter-than-iv-a": lambda: labelled_cells(
        FIG2_LAYOUT[:2] + [FIG2_LAYOUT[4], FIG2_LAYOUT[3], FIG2_LAYOUT[2]], FIG2_WIDTHS, FIG2_BATCHES, FIG2_VALUES),
    "all-phases-present": lambda: labelled_cells(_layout(("III", "I  ")), FIG2_WIDTHS, FIG2_BATCHES, FIG2_VALUES),
    "tenfold-loss-drop": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES,
                                                _values(I={"train_loss": 0.08}, II={"train_loss": 0.06})),
    "hessian-larger-when-sharp": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES,
                                                        _values(I={"log_lambda": 0.5}, II={"log_lambda": 0.5})),
    "best-in-iv-b": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, _values(II={"test_acc": 0.95})),
    "best-in-phase-iv": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, _values(III={"test_acc": 0.95})),
    "cka-tracks-accuracy": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES,
                                                  _values(IV_A={"cka": 0.9}, IV_B={"cka": 0.5})),
    "iii-flat-but-worse": lambda: labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, _values(III={"test_acc": 0.75})),
}


@pytest.mark.parametrize("claim_id", WIDTH_CLAIMS)
def test_each_width_claim_fails_on_a_grid_built_to_break_it(claim_id):
    r = verdicts(BROKEN[claim_id]())[claim_id]
    assert r["applies"] and r["holds"] is False, r["summary"]
    assert r["summary"].startswith("does not hold (") and r["evidence"]


def test_best_in_phase_iv_accepts_iv_a_where_best_in_iv_b_does_not():
    v = verdicts(labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, FIG2_BATCHES, _values(IV_A={"test_acc": 0.95})))
    assert v["best-in-iv-b"]["holds"] is False and v["best-in-phase-iv"]["holds"] is True
    assert v["best-in-phase-iv"]["evidence"]["best_in_phase"]["phase"] == "IV-A"
    assert v["best-in-phase-iv"]["relaxation_of"] == "best-in-iv-b"


def test_a_claim_without_cells_to_measure_is_null_and_says_why():
    # Only sharp cells: no flat cell to compare with, no phase IV.
    cells = labelled_cells(["I II", "I II"], [8, 64], [16, 32], FIG2_VALUES)
    v = verdicts(cells)
    for cid in ("sharp-phases-hot", "tenfold-loss-drop", "iv-b-hotter-than-iv-a", "cka-tracks-accuracy"):
        assert v[cid]["applies"] and v[cid]["holds"] is None, cid
        assert v[cid]["summary"].startswith("cannot be measured:"), v[cid]["summary"]
    assert v["best-in-iv-b"]["holds"] is False  # measured: the best cell is II


def test_learning_rate_and_weight_decay_are_hot_when_large():
    # The same layout with the temperature reversed and named learning_rate: large lr on top is hot.
    cells = labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, [0.4, 0.2, 0.1, 0.05, 0.025], FIG2_VALUES,
                           temperature_name="learning_rate")
    v = verdicts(cells, RunFacts("width", "learning_rate"))
    assert v["sharp-phases-hot"]["holds"] and v["iv-b-hotter-than-iv-a"]["holds"]
    cells = labelled_cells(FIG2_LAYOUT, FIG2_WIDTHS, [1e-4, 1e-3, 1e-2, 2e-2, 4e-2], FIG2_VALUES,
                           temperature_name="weight_decay")
    assert verdicts(cells, RunFacts("width", "weight_decay"))["sharp-phases-hot"]["holds"] is False


# ------------------------------------------------------------------------------------------------------------
# Noisy labels (Fig. 4)

# Width x batch on noisy labels: the flat cells nearest the boundary are the worst (the dark band), and in the
# columns through III the sharp cells above are better than III.
NOISY_LAYOUT = [
    "I    I    II   II",
    "I    I    II   II",
    "III  III  IV-A IV-B",
    "III  III  IV-B IV-B",
]


def _noisy_cells(dip: bool):
    cells = labelled_cells(NOISY_LAYOUT, [8, 16, 32, 64], [16, 32, 64, 128], FIG2_VALUES)
    flat_first_row = (cells.temperature_value == 64) & (cells.sharpness_class == "flat")
    cells.loc[cells.phase.isin(["I", "II"]), "test_acc"] = 0.65
    cells.loc[cells.phase == "III", "test_acc"] = 0.62
    if dip:  # the flat cells right below the boundary dip below both neighbours
        cells.loc[flat_first_row, "test_acc"] = 0.50
    else:  # monotone: accuracy only rises from hot to cold
        cells.loc[cells.phase.isin(["I", "II"]), "test_acc"] = 0.45
        cells.loc[flat_first_row & (cells.phase == "III"), "test_acc"] = 0.55
        cells.loc[flat_first_row & (cells.phase != "III"), "test_acc"] = 0.70
    return cells


def test_dark_band_and_sharp_beats_iii_hold_on_noisy_labels():
    v = verdicts(_noisy_cells(dip=True), NOISY)
    assert v["dark-band-at-boundary"]["holds"] is True, v["dark-band-at-boundary"]["summary"]
    assert v["dark-band-at-boundary"]["evidence"]["lines_with_dip"] >= 4
    assert v["sharp-beats-iii-on-noisy-labels"]["holds"] is True
    # Clean labels: the paper does not claim them.
    assert verdicts(_noisy_cells(dip=True))["dark-band-at-boundary"]["applies"] is False


def test_dark_band_and_sharp_beats_iii_fail_without_the_dip():
    v = verdicts(_noisy_cells(dip=False), NOISY)
    assert v["dark-band-at-boundary"]["holds"] is False, v["dark-band-at-boundary"]["summary"]
    assert v["sharp-beats-iii-on-noisy-labels"]["holds"] is False


def test_a_dip_within_seed_noise_is_no_dip():
    cells = _noisy_cells(dip=True)
    cells["test_acc_std"] = 0.5  # standard error 0.29: no dip of 0.15 is resolved
    assert verdicts(cells, NOISY)["dark-band-at-boundary"]["holds"] is False


# ------------------------------------------------------------------------------------------------------------
# Label noise and training-set size as load (Fig. 7, 6)


def _trend_cells(load_name, loads, temps, metrics):
    """Cells of a load x temperature grid; metrics(i_load, i_temp) -> dict of cell columns."""
    rows = []
    for i, lv in enumerate(loads):
        for j, tv in enumerate(temps):
            rows.append({"load_name": load_name, "load_value": float(lv), "temperature_name": "batch_size",
                         "temperature_value": float(tv), "phase": "IV-B", "sharpness_class": "flat",
                         "test_acc_std": 0.0, "test_acc_n": 3, "train_loss": 0.01, **metrics(i, j)})
    return pd.DataFrame(rows)


NOISE, TEMPS = [0.0, 0.2, 0.4, 0.6], [16, 64, 256]


@pytest.mark.parametrize("sign, holds", [(-1, True), (+1, False)])
def test_label_noise_claims_follow_the_trends(sign, holds):
    cells = _trend_cells("label_noise", NOISE, TEMPS, lambda i, j: {
        "mode_connectivity": sign * 3.0 * i, "cka": 0.8 + sign * 0.1 * i, "test_acc": 0.7,
        "log_hessian_trace": 6.0 - j + (0.0 if holds else 1.5 * i)})
    v = verdicts(cells, RunFacts("label_noise", "batch_size"))
    assert v["mc-falls-with-label-noise"]["holds"] is holds
    assert v["cka-falls-with-label-noise"]["holds"] is holds
    assert v["trace-insensitive-to-label-noise"]["holds"] is holds, v["trace-insensitive-to-label-noise"]["summary"]
    assert v["mc-falls-with-label-noise"]["evidence"]["rows"] == 3
    assert v["poor-phases-narrow"]["applies"] is False and v["cka-rises-with-data"]["applies"] is False


@pytest.mark.parametrize("sign, holds", [(+1, True), (-1, False)])
def test_data_size_claims_follow_the_trends(sign, holds):
    cells = _trend_cells("train_fraction", [0.1, 0.3, 0.6, 1.0], TEMPS, lambda i, j: {
        "cka": 0.5 + sign * 0.1 * i, "test_acc": 0.5 + sign * 0.05 * i, "mode_connectivity": -sign * 1.0 * i,
        "log_hessian_trace": 5.0})
    v = verdicts(cells, RunFacts("train_fraction", "batch_size"))
    for cid in ("cka-rises-with-data", "accuracy-rises-with-data", "mc-falls-with-data"):
        assert v[cid]["holds"] is holds, (cid, v[cid]["summary"])


# ------------------------------------------------------------------------------------------------------------
# On real and written runs


def test_every_fig2_claim_holds_on_the_released_results(released_cells):
    v = verdicts(released_cells)
    for cid in WIDTH_CLAIMS:
        assert v[cid]["holds"] is True, (cid, v[cid]["summary"])


def test_every_fig2_claim_holds_under_seed_noise_on_the_released_results(released_tables, released_cells):
    # The released results have 5 seeds per cell, CKA on all 10 pairs and mode connectivity on one pair (0, 1):
    # every draw keeps that pair for mc (analysis.bootstrap), the rest is resampled.
    from analysis.aggregate import aggregate_cells
    from analysis.bootstrap import labelled_draws, phase_confidence
    from analysis.phases import PhaseRules

    models, pairs = released_tables
    draws, why = labelled_draws(models, pairs, aggregate_cells(models, pairs), PhaseRules(), draws=50)
    assert draws is not None, why
    confidence, _ = phase_confidence(released_cells, draws)
    assert sum(c < 0.8 for c in confidence) < 0.1 * len(confidence)  # a few cells near a boundary are shaky
    v = {r["id"]: r for r in evaluate_claims(released_cells, CLEAN, draws=draws)}
    for cid in WIDTH_CLAIMS:
        assert v[cid]["holds"] is True and v[cid]["p_holds"] >= 0.9, (cid, v[cid]["summary"])


def test_analyze_writes_claims_json_and_a_report_section(tmp_path):
    from analysis.api import analyze_run

    run = tmp_path / "run"
    write_synthetic_run(str(run))
    result = analyze_run(str(run))
    with open(result.claims_path, encoding="utf-8") as fh:
        records = json.load(fh)
    assert [r["id"] for r in records] == [c.id for c in CLAIMS]
    for r in records:
        assert {"claim", "figure", "holds", "p_holds", "status", "evidence", "summary", "diagram"} <= set(r)
        assert r["holds"] in (True, False, None)
        if r["p_holds"] is not None:  # measured on 200 seed resamplings: the verdict follows p
            assert r["holds"] is (True if r["p_holds"] >= 0.9 else False if r["p_holds"] <= 0.1 else None), r
            assert r["evidence"]["resampling"]["draws"] == 200
    assert records == result.claims
    assert sum(r["p_holds"] is not None for r in records) >= 8  # every width claim measured on the run's cells
    page = open(result.report_path, encoding="utf-8").read()
    assert "The paper's claims, checked on this run" in page
    assert CLAIM_BY_ID["best-in-iv-b"].text in page
    assert "p = " in page and "fraction of seed resamplings" in page
    # Every cell's label with the frequency the resamplings give it (3 seeds per cell: some labels are shaky).
    cells = pd.read_parquet(result.cells_path)
    confidence = cells["phase_confidence"]
    assert confidence.between(0, 1).all() and (confidence == 1.0).any()
    assert cells.loc[confidence < 1, "phase_runner_up"].notna().all()
    assert cells.loc[confidence == 1, "phase_runner_up"].isna().all()
