"""Phase labelling on hand-built cell tables: every phase reachable, ties, noise, missing values, rule parsing."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.phases import PHASES, PhaseRules, label_phases


def cells_of(rows):
    """rows: (load, temperature, train_loss, mc, cka[, mc_std, mc_n]) -> a cells table."""
    out = []
    for r in rows:
        load, temp, loss, mc, cka = r[:5]
        std, n = (r[5], r[6]) if len(r) > 5 else (math.nan, 1)
        out.append(
            {
                "load_name": "width",
                "load_value": float(load),
                "temperature_name": "batch_size",
                "temperature_value": float(temp),
                "train_loss": loss,
                "mode_connectivity": mc,
                "cka": cka,
                "mode_connectivity_std": std,
                "mode_connectivity_n": n,
            }
        )
    return pd.DataFrame(out)


def phases(labelled):
    return {(r.load_value, r.temperature_value): r.phase for r in labelled.itertuples()}


def test_every_phase_is_reachable_with_documented_defaults():
    cells = cells_of(
        [
            (1, 16, 1.0, -10.0, 0.4),  # sharp, barrier            -> I
            (2, 16, 1.0, 3.0, 0.5),  # sharp, positive mc        -> II
            (1, 128, 0.001, -10.0, 0.5),  # flat, barrier             -> III
            (2, 128, 0.001, 0.0, 0.5),  # flat, connected, low CKA  -> IV-A
            (3, 128, 0.001, 0.0, 0.9),  # flat, connected, high CKA -> IV-B
            (3, 64, 0.0012, -0.5, 0.7),  # shallow barrier < 1 pp: connected; CKA at the median -> IV-B
        ]
    )
    out = label_phases(cells)
    # By hand: 5 % quantile of the losses is 0.001 (= loss_floor_min) -> sharp above 0.01 nats;
    # phase-IV CKA {0.5, 0.9, 0.7}: median 0.7.
    assert out["sharpness_threshold"].iloc[0] == pytest.approx(0.01)
    assert phases(out) == {
        (1, 16): "I",
        (2, 16): "II",
        (1, 128): "III",
        (2, 128): "IV-A",
        (3, 128): "IV-B",
        (3, 64): "IV-B",
    }
    assert set(out["phase"]) == set(PHASES)
    row = out[(out.load_value == 2) & (out.temperature_value == 128)].iloc[0]
    assert (row.sharpness_class, row.connectivity_class, row.cka_class) == ("flat", "well", "low")
    assert row.cka_split == pytest.approx(0.7)
    assert "train loss 0.001 <= 0.01: flat" in row.phase_reason and "CKA 0.5 < 0.7: low" in row.phase_reason
    assert out.loc[out.phase == "I", "cka_class"].isna().all()  # CKA decides phase IV only


def test_scale_free_on_a_demo_sized_run_with_a_higher_loss_floor():
    # A small CPU model converges to ~0.05 nats, not 1e-3: the same structure must come out.
    rows = [
        (1, 16, 1.0, -10.0, 0.4),
        (2, 16, 0.8, 3.0, 0.5),
        (1, 128, 0.05, -10.0, 0.5),
        (2, 128, 0.05, 0.0, 0.5),
        (3, 128, 0.05, 0.0, 0.9),
    ]
    out = label_phases(cells_of(rows))
    assert out["sharpness_threshold"].iloc[0] == pytest.approx(0.5)  # 10 x floor 0.05
    assert phases(out) == {(1, 16): "I", (2, 16): "II", (1, 128): "III", (2, 128): "IV-A", (3, 128): "IV-B"}


def test_values_exactly_at_thresholds_go_to_flat_connected_high_side():
    cells = cells_of([(1, 1, 0.5, -1.0, 0.6), (2, 1, 0.6, -1.0, 0.6), (3, 1, 0.5, -1.0000001, 0.6)])
    out = label_phases(cells, loss_threshold=0.5, mc_threshold=1.0, cka_threshold=0.6)
    got = out.set_index("load_value")
    assert got.loc[1.0, "sharpness_class"] == "flat"  # loss == threshold: not above it
    assert got.loc[1.0, "connectivity_class"] == "well"  # mc == -threshold: not below it
    assert got.loc[1.0, "phase"] == "IV-B"  # CKA == split: high side
    assert got.loc[2.0, "phase"] == "II"
    assert got.loc[3.0, "phase"] == "III"


def test_mc_threshold_grows_with_disagreement_between_pairs():
    # Same mean barrier -1.5 pp: 4 pairs that agree (std 0.2) vs 4 pairs that disagree (std 3, sem 1.5).
    cells = cells_of([(1, 1, 0.001, -1.5, 0.5, 0.2, 4), (2, 1, 0.001, -1.5, 0.5, 3.0, 4)])
    out = label_phases(cells).set_index("load_value")
    assert out.loc[1.0, "connectivity_threshold"] == pytest.approx(1.0)
    assert out.loc[1.0, "connectivity_class"] == "poor"
    assert out.loc[2.0, "connectivity_threshold"] == pytest.approx(2.0 * 3.0 / 2.0)
    assert out.loc[2.0, "connectivity_class"] == "well"


def test_single_lucky_cell_does_not_move_the_loss_floor():
    # 40 cells: one reaches 1e-6, the rest 0.01..0.02 (floor ~0.01): the lucky cell must not make them sharp.
    losses = [1e-6] + list(np.linspace(0.01, 0.02, 39))
    cells = cells_of([(i, 1, loss, 0.0, 0.5) for i, loss in enumerate(losses)])
    out = label_phases(cells, loss_floor_min=0.0)
    assert 0.09 < out["sharpness_threshold"].iloc[0] < 0.12
    assert (out["sharpness_class"] == "flat").all()


def test_loss_floor_min_treats_tiny_losses_as_converged():
    # Best cells at 1e-6: without the floor minimum a loss of 1e-4 would be called "sharp".
    cells = cells_of([(1, 1, 1e-6, 0.0, 0.5), (2, 1, 1e-6, 0.0, 0.5), (3, 1, 1e-4, 0.0, 0.5), (4, 1, 0.5, 0.0, 0.5)])
    out = label_phases(cells).set_index("load_value")
    assert out.loc[3.0, "sharpness_class"] == "flat"
    assert out.loc[4.0, "sharpness_class"] == "sharp"


def test_no_cka_crossover_when_phase_iv_cka_is_flat():
    cells = cells_of([(1, 1, 0.001, 0.0, 0.70), (2, 1, 0.001, 0.0, 0.72), (3, 1, 0.001, 0.0, 0.71)])
    out = label_phases(cells)
    assert (out["phase"] == "IV-B").all()
    assert "no crossover resolved" in out["phase_reason"].iloc[0]
    # An absolute split overrides the relative rule.
    out = label_phases(cells, cka_threshold=0.715)
    assert list(out["phase"]) == ["IV-A", "IV-B", "IV-A"]


def test_missing_values_give_null_phase_with_reason_never_a_crash():
    cells = cells_of(
        [
            (1, 1, math.nan, -5.0, 0.5),  # no train loss: poorly connected, so I or III
            (2, 1, 1.0, math.nan, 0.5),  # no mc: sharp, so I or II
            (3, 1, 0.001, 0.0, math.nan),  # phase IV without CKA
            (4, 1, math.nan, math.nan, math.nan),
            (5, 1, 0.001, 0.0, 0.8),
        ]
    )
    out = label_phases(cells).set_index("load_value")
    assert out["phase"].isna().sum() == 4 and out.loc[5.0, "phase"] == "IV-B"
    assert "train loss missing" in out.loc[1.0, "phase_reason"] and "I or III" in out.loc[1.0, "phase_reason"]
    assert "mode connectivity missing" in out.loc[2.0, "phase_reason"] and "I or II" in out.loc[2.0, "phase_reason"]
    assert "CKA missing" in out.loc[3.0, "phase_reason"] and "IV-A or IV-B" in out.loc[3.0, "phase_reason"]
    assert "undecided" in out.loc[4.0, "phase_reason"]


def test_all_missing_table_and_empty_table():
    out = label_phases(cells_of([(1, 1, math.nan, math.nan, math.nan)]))
    assert out["phase"].isna().all() and math.isnan(out["sharpness_threshold"].iloc[0])
    empty = label_phases(
        cells_of([]).reindex(
            columns=[
                "load_name",
                "load_value",
                "temperature_name",
                "temperature_value",
                "train_loss",
                "mode_connectivity",
                "cka",
            ]
        )
    )
    assert len(empty) == 0 and "phase" in empty.columns


def test_rules_from_cli_strings_and_keyword_overrides():
    rules = PhaseRules.from_mapping({"mc_threshold": "0.25", "cka_threshold": "none", "sharp_loss_ratio": 20})
    assert rules.mc_threshold == 0.25 and rules.cka_threshold is None and rules.sharp_loss_ratio == 20.0
    cells = cells_of([(1, 1, 0.001, -0.5, 0.5)])
    assert label_phases(cells)["connectivity_class"].iloc[0] == "well"
    assert label_phases(cells, {"mc_threshold": "0.25"})["connectivity_class"].iloc[0] == "poor"
    assert label_phases(cells, rules, mc_threshold=1.0)["connectivity_class"].iloc[0] == "well"


def test_bad_rules_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="Did you mean 'mc_threshold'"):
        PhaseRules.from_mapping({"mc_treshold": 1})
    with pytest.raises(ValueError, match="needs a number"):
        PhaseRules.from_mapping({"mc_threshold": "big"})
    with pytest.raises(ValueError, match="cka_split_quantile"):
        PhaseRules(cka_split_quantile=1.5)
    with pytest.raises(ValueError, match="lack column 'cka'"):
        label_phases(pd.DataFrame({"train_loss": [1.0], "mode_connectivity": [0.0]}))


def test_every_rule_is_documented():
    for r in PhaseRules().describe():
        assert r["doc"], f"rule {r['name']} has no documentation"
