"""analysis/placement.py: one group of models on the taxonomy, its deciding numbers, confidence and guidance."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from analysis.guidance import READS_LOW_CKA, READS_POOR_CONNECTIVITY
from analysis.placement import (
    CLEAR_Z,
    PHASE_GUIDANCE,
    POSITIVE_MC,
    RELEASED_CKA_SPLIT,
    absolute_rules,
    place_group,
    placement_text,
)


def models(*train_losses, **extra):
    return [{"status": "ok", "train_loss": loss, "train_acc": 0.9, "test_loss": 1.0, "test_acc": 0.7,
             "hessian_top_eigenvalue": 1.0, "hessian_trace": 10.0, **extra} for loss in train_losses]


def pairs(*values):
    """values: (mc, cka) per pair, over all pairs of len(values) + 1 ... models (numbered as given)."""
    index = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    return [{"status": "ok", "seed_a": a, "seed_b": b, "mode_connectivity": mc, "cka": cka, "l2_distance": 5.0}
            for (a, b), (mc, cka) in zip(index, values)]


def by_quantity(placement):
    return {d.quantity: d for d in placement.decisions}


def test_each_phase_from_its_numbers_with_the_thresholds_used():
    cases = {
        "I": (models(1.2, 1.3), pairs((-5.0, 0.8))),
        "II": (models(0.5, 0.6), pairs((0.2, 0.8))),
        "III": (models(0.002, 0.003), pairs((-4.0, 0.8))),
        "IV-A": (models(0.002, 0.003), pairs((-0.1, 0.5))),
        "IV-B": (models(0.002, 0.003), pairs((-0.1, 0.8))),
    }
    for phase, (m, p) in cases.items():
        placed = place_group(m, p)
        assert placed.phase == phase, (phase, placed.phase_reason)
        d = by_quantity(placed)
        assert d["train_loss"].threshold == pytest.approx(0.01)  # sharp_loss_ratio 10 x loss_floor_min 1e-3
        assert d["mode_connectivity"].threshold == -1.0  # mc_threshold, one pair: no noise term
        assert ("cka" in d) == phase.startswith("IV")
        if phase.startswith("IV"):
            assert d["cka"].threshold == RELEASED_CKA_SPLIT
        assert placed.guidance[: len(PHASE_GUIDANCE[phase])] == PHASE_GUIDANCE[phase]
        json.dumps(placed.to_dict(), allow_nan=False)  # strict JSON: no NaN anywhere
    assert READS_POOR_CONNECTIVITY in place_group(*cases["I"]).guidance[0]
    assert READS_LOW_CKA in place_group(*cases["IV-A"]).guidance[0]


def test_standard_errors_against_a_hand_computation():
    losses = [0.02, 0.03, 0.025]
    placed = place_group(models(*losses), pairs((-0.1, 0.8), (-0.3, 0.7), (0.1, 0.9)))
    d = by_quantity(placed)["train_loss"]
    sem = statistics.stdev(losses) / math.sqrt(3)
    assert d.mean == pytest.approx(statistics.mean(losses)) and d.n == 3
    assert d.standard_errors == pytest.approx((statistics.mean(losses) - 0.01) / sem)
    assert d.outcome == "sharp" and d.confidence == "clear"  # 5.2 standard errors
    mc = by_quantity(placed)["mode_connectivity"]
    mcs = [-0.1, -0.3, 0.1]
    assert mc.standard_errors == pytest.approx((statistics.mean(mcs) + 1.0) / (statistics.stdev(mcs) / math.sqrt(3)))
    assert placed.phase == "II" and placed.confidence == "clear"


def test_borderline_and_no_spread():
    near = place_group(models(0.008, 0.014), pairs((-0.2, 0.8)))  # mean 0.011 with a spread of 0.004
    d = by_quantity(near)["train_loss"]
    assert d.standard_errors < CLEAR_Z and d.confidence == "borderline"
    assert near.confidence == "borderline" and "train loss" in near.confidence_note
    assert any("borderline" in g for g in near.guidance)
    # Two checkpoints are one pair: mode connectivity has no spread, and the call says so.
    far = place_group(models(1.0, 1.1), pairs((-5.0, 0.8)))
    assert by_quantity(far)["mode_connectivity"].confidence == "no spread"
    assert far.confidence == "no spread" and "1 pair" in far.confidence_note and "3 or more" in far.confidence_note


def test_given_rules_replace_the_absolute_defaults():
    m, p = models(0.02, 0.03), pairs((-0.1, 0.75))
    assert place_group(m, p).phase == "II"
    relaxed = place_group(m, p, {"loss_threshold": 0.05})
    assert relaxed.phase == "IV-B" and by_quantity(relaxed)["train_loss"].threshold == 0.05
    assert "loss_threshold rule" in by_quantity(relaxed)["train_loss"].threshold_source
    assert place_group(m, p, {"loss_threshold": 0.05, "cka_threshold": 0.8}).phase == "IV-A"
    # The default absolute loss threshold follows the ratio and floor rules it is made of.
    rules, sources = absolute_rules({"sharp_loss_ratio": 20})
    assert rules.loss_threshold == pytest.approx(0.02) and "sharp_loss_ratio 20" in sources["loss_threshold"]
    with pytest.raises(ValueError, match="unknown phase rule"):
        place_group(m, p, {"loss_treshold": 0.05})


def test_positive_mode_connectivity_and_missing_values():
    hot = place_group(models(0.6, 0.7), pairs((12.0, 0.4)))
    assert hot.phase == "II" and POSITIVE_MC in hot.guidance
    diverged = [{"status": "diverged", "seed_a": 0, "seed_b": 1, "mode_connectivity": None, "cka": 0.8,
                 "l2_distance": 3.0}]
    undecided = place_group(models(0.6, 0.7), diverged)
    assert undecided.phase is None and undecided.confidence == "undecided"
    assert "mode connectivity missing" in undecided.phase_reason and "I or II" in undecided.phase_reason
    assert undecided.members["pairs_ok"] == 0 and "failed" in undecided.members["missing"]
    assert undecided.guidance[0].startswith("No phase")
    json.dumps(undecided.to_dict(), allow_nan=False)


def test_text_names_phase_numbers_thresholds_and_guidance():
    out = placement_text(place_group(models(1.2, 1.3), pairs((-5.0, 0.8))), ["header line"])
    lines = out.splitlines()
    assert lines[0] == "header line" and lines[1].startswith("phase: I (")
    assert "because: train loss 1.25 > 0.01: sharp; mc -5 < -1: poorly connected" in out
    assert "sharp vs flat: train_loss 1.25 nats" in out and "vs threshold 0.01 nats -> sharp [clear" in out
    assert "guidance (the paper's, section 4):" in out


def test_the_absolute_defaults_are_the_released_results_own_thresholds(released_cells):
    """RELEASED_CKA_SPLIT is the split the default rules draw on the authors' data; the default loss threshold
    (0.01 nats) is within 10% of the relative one they draw there (the module docstring's claims)."""
    iv = released_cells[released_cells["phase"].isin(["IV-A", "IV-B"])]
    assert len(iv) == 63
    assert iv["cka_split"].iloc[0] == pytest.approx(RELEASED_CKA_SPLIT, abs=5e-4)
    assert released_cells["sharpness_threshold"].iloc[0] == pytest.approx(absolute_rules()[0].loss_threshold, rel=0.1)


def test_seed_resamplings_give_the_phase_its_frequency_and_runner_up():
    # Two models at 0.008 and 0.014 nats around the 0.01 threshold: a resampling draws both (mean 0.011: sharp,
    # II) half the time, the sharp one twice a quarter, the flat one twice a quarter (0.008: flat, IV-B).
    near = place_group(models(0.008, 0.014), pairs((-0.2, 0.8)))
    assert near.phase == "II" and near.phase_runner_up == "IV-B"
    assert 0.65 < near.phase_confidence < 0.85
    assert "seed resamplings: " in placement_text(near) and "runner-up IV-B" in placement_text(near)
    far = place_group(models(1.0, 1.1), pairs((-5.0, 0.8)))
    assert far.phase_confidence == 1.0 and far.phase_runner_up is None
    # One model: nothing to resample.
    alone = place_group(models(1.0), [])
    assert alone.phase_confidence is None and "seed resamplings" not in placement_text(alone)
