"""workloads.experiment, one model or pair (the engine's cohort of one), on tiny settings (no Ray).

Values in the rows are checked against independent recomputations from the returned weights, so a row that
reports numbers of the wrong model, the wrong data or the wrong units fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.schemas import CURVES_SCHEMA, MODELS_SCHEMA, PAIRS_SCHEMA
from analysis.tables import RunTables
from workloads.cohort_experiment import hessian_points, load_trained
from workloads.experiment import ModelSpec, PairSpec, measure_pair, train_and_measure
from workloads.rows import train_loss_drop
from workloads.settings import HessianSettings

from tests.helpers import tiny_cell

PROVENANCE_COLUMNS = {"run_id", "config_hash", "package_version", "library_versions", "schema_version"}
CALLER_COLUMNS = PROVENANCE_COLUMNS | {"node_id", "model_uri", "weights_sha256"}  # set where the weights are stored
# Set by the orchestrator: the cohort a row was computed in (a model trained alone here is a cohort of one).
CALLER_COLUMNS |= {"cohort"}


@pytest.fixture(scope="module")
def two_models():
    cell = tiny_cell()
    return cell, train_and_measure(ModelSpec(cell, 0)), train_and_measure(ModelSpec(cell, 1))


def test_model_row_is_complete_and_matches_the_schema(two_models, tmp_path):
    cell, a, _ = two_models
    row = a.row
    assert row["status"] == "ok" and row["error"] is None
    expected = set(MODELS_SCHEMA.names) - CALLER_COLUMNS - {"error"}
    missing = sorted(c for c in expected if row.get(c) is None)
    assert not missing, f"null metrics: {missing}"
    assert row["train_size"] == 1437 and row["epochs_completed"] == 2
    assert row["hessian_samples"] == 300 and row["hessian_backend"] == "lanczos"
    assert 0 <= row["train_acc"] <= 1 and 0 <= row["test_acc"] <= 1  # fractions, not percent
    assert row["finished_at"].tzinfo is not None
    # The row fits the table (the caller adds provenance).
    RunTables(str(tmp_path)).write_part("models", "k", [dict(row, run_id="r", config_hash="h")])


def test_train_loss_drop_compares_the_last_tenth_of_the_epochs_with_the_tenth_before():
    history = [{"train_loss": v} for v in [5.0] * 16 + [2.0, 2.0, 1.0, 1.0]]  # 20 epochs: windows of 2
    assert train_loss_drop(history) == pytest.approx(1 - 1.0 / 2.0)
    assert train_loss_drop([{"train_loss": 0.3}] * 30) == pytest.approx(0.0)  # a plateau
    assert train_loss_drop([{"train_loss": 4.0}, {"train_loss": 3.0}, {"train_loss": 1.0}]) == pytest.approx(2 / 3)
    assert train_loss_drop([{"train_loss": 1.0}]) is None
    assert train_loss_drop([{"train_loss": 0.0}, {"train_loss": 0.0}]) is None


def test_model_row_records_the_drop_of_its_own_history(two_models):
    _, a, _ = two_models
    assert a.row["train_loss_drop"] == pytest.approx(train_loss_drop(a.history))
    assert len(a.history) == 2 and a.row["train_loss_drop"] == pytest.approx(
        1 - a.history[1]["train_loss"] / a.history[0]["train_loss"])


def test_reported_losses_are_those_of_the_returned_weights(two_models):
    cell, a, _ = two_models
    data = cell.data()
    model = load_trained(cell, 0, a.state_dict, data, "cpu")
    with torch.no_grad():
        logits = model(data.test_x)
    test_loss = float(F.cross_entropy(logits, data.test_y))
    test_acc = int((logits.argmax(1) == data.test_y).sum()) / len(data.test_y)
    assert a.row["test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert a.row["test_acc"] == pytest.approx(test_acc, abs=1e-9)
    with torch.no_grad():
        train_loss = float(F.cross_entropy(model(data.train_x), data.train_y))
    assert a.row["train_loss"] == pytest.approx(train_loss, rel=1e-5)


def test_training_is_deterministic_and_seeds_differ(two_models):
    cell, a, b = two_models
    again = train_and_measure(ModelSpec(cell, 0))
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], again.state_dict[k])
    assert again.row["hessian_top_eigenvalue"] == a.row["hessian_top_eigenvalue"]
    assert not all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_temperature_and_load_are_applied():
    cell = tiny_cell(temperature_name="learning_rate", temperature_value=0.3)
    tc = cell.train_config(5, "cpu")
    assert (tc.lr, tc.batch_size, tc.seed) == (0.3, 128, 5)
    cell = tiny_cell(temperature_name="weight_decay", temperature_value=1e-3)
    assert cell.train_config(0, "cpu").weight_decay == 1e-3
    assert tiny_cell(temperature_name="batch_size", temperature_value=32).train_config(0, "cpu").batch_size == 32
    # Load: the width, a class-balanced fraction of the data, or label noise; the data seed is the cell's.
    assert tiny_cell(load_value=16).model_width() == 16
    assert tiny_cell(load_name="train_fraction", load_value=0.5, width=12).model_width() == 12
    half = tiny_cell(load_name="train_fraction", load_value=0.5).data()
    assert abs(half.train_size - 1437 / 2) <= 10
    noisy = tiny_cell(load_name="label_noise", load_value=0.2).data()
    clean = tiny_cell().data()
    changed = float((noisy.train_y != clean.train_y).float().mean())
    assert changed == pytest.approx(0.2, abs=1 / 1437)
    assert torch.equal(noisy.train_y, tiny_cell(load_name="label_noise", load_value=0.2).data().train_y)


def test_label_noise_row_records_the_realised_fraction():
    out = train_and_measure(ModelSpec(tiny_cell(load_name="label_noise", load_value=0.3, width=8), 0))
    assert out.row["label_noise_realised"] == pytest.approx(0.3, abs=1 / 1437)
    assert out.row["load_name"] == "label_noise" and out.row["load_value"] == 0.3


def test_hessian_points_are_shared_by_the_seeds_of_a_cell():
    data = tiny_cell().data()
    x1, y1 = hessian_points(data, HessianSettings(samples=200, seed=0))
    x2, _ = hessian_points(data, HessianSettings(samples=200, seed=0))
    x3, _ = hessian_points(data, HessianSettings(samples=200, seed=1))
    assert x1.shape[0] == 200 and torch.equal(x1, x2) and not torch.equal(x1, x3)
    xa, _ = hessian_points(data, HessianSettings(samples=10_000))
    assert xa.shape[0] == data.train_size  # all points when the set is smaller


def test_diverged_training_is_a_status_not_an_exception():
    cell = tiny_cell(temperature_name="learning_rate", temperature_value=1e6)
    out = train_and_measure(ModelSpec(cell, 0))
    assert out.status == "diverged" and "diverged" in out.row["error"]
    assert out.state_dict is None
    assert out.row["train_loss"] is None and out.row["hessian_trace"] is None


def test_pair_row_and_curve_match_independent_recomputations(two_models, tmp_path):
    cell, a, b = two_models
    out = measure_pair(PairSpec(cell, 1, 0), b.state_dict, a.state_dict)  # order does not matter
    row = out.row
    assert (row["seed_a"], row["seed_b"]) == (0, 1)
    assert row["status"] == "ok", row["error"]
    expected = set(PAIRS_SCHEMA.names) - CALLER_COLUMNS - {"error"}
    missing = sorted(c for c in expected if row.get(c) is None)
    assert not missing, f"null metrics: {missing}"
    # L2 from the state dicts directly.
    l2 = math.sqrt(sum(float(((a.state_dict[k].double() - b.state_dict[k].double()) ** 2).sum()) for k in a.state_dict))
    assert row["l2_distance"] == pytest.approx(l2, rel=1e-9)
    # The curve: 5 points from t=0 to 1; its endpoints are the trained models' train errors (percent).
    ts = [r["t"] for r in out.curve_rows]
    assert ts == pytest.approx(list(np.linspace(0, 1, 5)))
    errors = np.array([r["train_error"] for r in out.curve_rows])
    assert errors[0] == pytest.approx(100 * (1 - a.row["train_acc"]), abs=1e-6)
    assert errors[-1] == pytest.approx(100 * (1 - b.row["train_acc"]), abs=1e-6)
    # mc = mean endpoint error - e(t*), with t* the point farthest from that mean.
    mean_end = (errors[0] + errors[-1]) / 2
    star = int(np.argmax(np.abs(mean_end - errors)))
    assert row["mode_connectivity"] == pytest.approx(mean_end - errors[star])
    assert row["t_star"] == pytest.approx(ts[star])
    assert 0 <= row["cka"] <= 1 and row["cka_status"] == "ok"
    assert row["started_at"] <= row["finished_at"]
    tables = RunTables(str(tmp_path))
    tables.write_part("pairs", "p", [dict(row, run_id="r")])
    tables.write_part("curves", "p", [dict(r, run_id="r") for r in out.curve_rows])
    assert set(out.curve_rows[0]) <= set(CURVES_SCHEMA.names)


def test_cka_of_a_model_with_itself_is_one(two_models):
    cell, a, _ = two_models
    out = measure_pair(PairSpec(cell, 0, 1), a.state_dict, a.state_dict)
    assert out.row["cka"] == pytest.approx(1.0, abs=1e-9)
    assert out.row["l2_distance"] == 0.0
