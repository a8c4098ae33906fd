"""The practitioner guidance never advises the impossible or the backwards: no cooling beyond the grid's coldest
value, no cooling for cells that only lacked steps, and it says when the tables cannot tell the causes apart."""

from __future__ import annotations

from analysis.guidance import STILL_FALLING, practitioner_guidance
from tests.analysis_synthetic import FIG2_VALUES, labelled_cells

WIDTHS, BATCHES = [8, 16, 32], [16, 64, 256]


def _cells(layout, drop=None, temps=BATCHES, temperature_name="batch_size"):
    cells = labelled_cells(layout, WIDTHS, temps, FIG2_VALUES, temperature_name=temperature_name)
    if drop is not None:
        cells["train_loss_drop"] = drop
    return cells


def _topics(cells):
    return {f.topic: f for f in practitioner_guidance(cells)}


def test_a_width_sharp_at_every_temperature_is_told_to_grow_not_to_cool():
    # Width 8 is sharp down to the coldest batch of the grid: no "larger batch" exists that would help.
    found = _topics(_cells(["I II II", "I IV-B IV-B", "I IV-A IV-A"]))
    assert sorted(found["capacity"].cells) == [(8.0, 16.0), (8.0, 64.0), (8.0, 256.0)]
    assert "larger model" in found["capacity"].message and "larger batch" not in found["capacity"].message
    # The hot row of widths 16 and 32 levelled off while batch 64 is flat: SGD noise, cool down to batch 64.
    assert sorted(found["sgd-noise"].cells) == [(16.0, 16.0), (32.0, 16.0)]
    assert "a larger batch size: batch_size 64 is flat" in found["sgd-noise"].message


def test_cells_still_converging_are_told_to_train_longer_not_to_cool():
    found = _topics(_cells(["II II II", "IV-B IV-B IV-B", "IV-A IV-A IV-A"], drop=STILL_FALLING + 0.1))
    assert set(found) >= {"under-training"} and "sgd-noise" not in found and "capacity" not in found
    assert "Train longer" in found["under-training"].message
    assert "larger batch" not in found["under-training"].message


def test_without_a_training_curve_the_guidance_says_it_cannot_tell():
    found = _topics(_cells(["II II II", "IV-B IV-B IV-B", "IV-A IV-A IV-A"], drop=float("nan")))
    assert "sgd-noise" not in found and "under-training" not in found
    assert "no training curve" in found["convergence"].message


def test_hot_when_large_knobs_cool_down_by_lowering_them():
    found = _topics(_cells(["II II II", "IV-B IV-B IV-B", "IV-A IV-A IV-A"], temps=[0.4, 0.1, 0.025],
                           temperature_name="learning_rate"))
    assert "a smaller learning rate: learning_rate 0.1 is flat" in found["sgd-noise"].message


def test_iv_a_at_the_hottest_temperature_is_not_told_to_heat_up():
    found = _topics(_cells(["IV-A IV-A IV-B", "IV-B IV-B IV-B", "IV-B IV-B IV-B"]))
    assert "smaller batch sizes" not in found["similarity"].message and "larger width" in found["similarity"].message
    found = _topics(_cells(["IV-B IV-B IV-B", "IV-B IV-B IV-B", "IV-A IV-A IV-B"]))
    assert "larger width and smaller batch sizes" in found["similarity"].message
