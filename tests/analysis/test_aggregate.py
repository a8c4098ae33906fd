"""Per-cell aggregation: means and spreads over ok members only, every shortfall marked, Hessian as log of mean."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import aggregate_cells, cell_columns
from analysis.tables import RunTables, model_key, pair_key
from tests.analysis_synthetic import CELLS, write_synthetic_run

CELL = {"load_name": "width", "load_value": 4.0, "temperature_name": "batch_size", "temperature_value": 32.0}


def write_models(tables, rows):
    for r in rows:
        tables.write_part(
            "models", model_key("width", r["load_value"], "batch_size", r["temperature_value"], r["seed"]), [r]
        )


def write_pairs(tables, rows):
    for r in rows:
        tables.write_part(
            "pairs",
            pair_key("width", r["load_value"], "batch_size", r["temperature_value"], r["seed_a"], r["seed_b"]),
            [r],
        )


def model(seed, status="ok", **metrics):
    return {**CELL, "seed": seed, "status": status, **metrics}


def pair(a, b, status="ok", **metrics):
    return {**CELL, "seed_a": a, "seed_b": b, "status": status, **metrics}


@pytest.fixture
def tables(tmp_path):
    return RunTables(str(tmp_path / "run"))


def test_means_and_spreads_use_ok_members_only_and_mark_the_rest(tables):
    write_models(
        tables,
        [
            model(0, train_loss=0.1, test_acc=0.80, hessian_top_eigenvalue=1.0, hessian_trace=10.0),
            model(1, train_loss=0.3, test_acc=0.90, hessian_top_eigenvalue=math.e**2, hessian_trace=30.0),
            model(2, status="diverged", train_loss=float("nan"), error="loss became NaN at epoch 3"),
            model(3, status="failed", error="out of memory"),
        ],
    )
    # seed 4 trained in another cell only: expected here too, so it is "missing".
    write_models(tables, [{**model(4, train_loss=0.2), "load_value": 8.0}])
    write_pairs(
        tables,
        [
            pair(0, 1, mode_connectivity=-2.0, cka=0.6, cka_status="ok", l2_distance=5.0),
            pair(0, 2, status="failed", error="endpoint diverged"),
        ],
    )
    cells = aggregate_cells(tables.read("models"), tables.read("pairs"))
    assert list(cells.columns) == cell_columns()
    c = cells[cells.load_value == 4.0].iloc[0]
    assert c.train_loss == pytest.approx(0.2) and c.train_loss_std == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert c.train_loss_n == 2 and c.test_acc == pytest.approx(0.85)
    # log of the mean, not mean of the logs (which would be 1.0)
    assert c.log_hessian_top_eigenvalue == pytest.approx(math.log((1 + math.e**2) / 2))
    assert c.log_hessian_trace == pytest.approx(math.log(20.0))
    assert (c.n_models_expected, c.n_models, c.n_models_ok, c.n_diverged, c.n_failed) == (5, 4, 2, 1, 1)
    assert (c.n_pairs, c.n_pairs_ok, c.n_pairs_failed) == (2, 1, 1)
    assert c.mode_connectivity == -2.0 and c.mode_connectivity_n == 1 and math.isnan(c.mode_connectivity_std)
    assert not c.complete
    for words in ("seed 4 missing", "seed 2 diverged", "seed 3 failed", "1 of 2 pairs failed"):
        assert words in c.members_missing


def test_means_of_skewed_members_are_means(tables):
    """Three members with one outlier: the mean differs from the median and the log of the mean from the mean
    of the logs, so neither can stand in for it."""
    write_models(tables, [model(s, train_loss=loss, test_acc=acc, hessian_top_eigenvalue=top, hessian_trace=tr)
                          for s, loss, acc, top, tr in ((0, 0.1, 0.5, 1.0, 1.0), (1, 0.1, 0.5, 1.0, 1.0),
                                                        (2, 0.7, 0.8, 7.0, 100.0))])
    write_pairs(tables, [pair(a, b, mode_connectivity=mc, cka=k, cka_status="ok", l2_distance=d)
                         for (a, b), mc, k, d in (((0, 1), -1.0, 0.9, 1.0), ((0, 2), -1.0, 0.9, 1.0),
                                                  ((1, 2), -10.0, 0.3, 7.0))])
    c = aggregate_cells(tables.read("models"), tables.read("pairs")).iloc[0]
    assert c.train_loss == pytest.approx(0.3) and c.test_acc == pytest.approx(0.6)
    assert c.train_loss_std == pytest.approx(np.std([0.1, 0.1, 0.7], ddof=1))
    assert c.hessian_top_eigenvalue == pytest.approx(3.0) and c.log_hessian_top_eigenvalue == pytest.approx(math.log(3))
    assert c.log_hessian_trace == pytest.approx(math.log(34.0))
    assert c.mode_connectivity == pytest.approx(-4.0) and c.cka == pytest.approx(0.7)
    assert c.l2_distance == pytest.approx(3.0) and c.mode_connectivity_n == 3


def test_complete_cell_is_marked_complete(tmp_path):
    tables = write_synthetic_run(str(tmp_path / "run"))
    cells = aggregate_cells(tables.read("models"), tables.read("pairs"))
    assert len(cells) == len(CELLS) and cells["complete"].all() and cells["members_missing"].isna().all()
    c = cells[(cells.load_value == 64) & (cells.temperature_value == 128)].iloc[0]
    loss, mc, cka, acc = CELLS[(64, 128)]
    assert c.train_loss == pytest.approx(loss) and c.mode_connectivity == pytest.approx(mc)
    assert c.cka == pytest.approx(cka) and c.test_acc == pytest.approx(acc)
    assert (c.n_models_ok, c.n_pairs_ok, c.mode_connectivity_n) == (3, 3, 3)


def test_undefined_cka_is_left_out_and_counted(tables):
    write_models(tables, [model(s, train_loss=0.1) for s in range(3)])
    write_pairs(
        tables,
        [
            pair(0, 1, cka=0.5, cka_status="ok", l2_distance=1.0),
            pair(0, 2, cka=0.7, cka_status="ok", l2_distance=1.0),
            pair(1, 2, cka=None, cka_status="constant output of model 1", l2_distance=1.0),
        ],
    )
    c = aggregate_cells(tables.read("models"), tables.read("pairs")).iloc[0]
    assert c.cka == pytest.approx(0.6) and c.cka_n == 2 and c.cka_undefined == 1
    assert not c.complete and "cka from 2 of 3 pairs" in c.members_missing


def test_metric_missing_for_some_models_is_marked(tables):
    write_models(tables, [model(0, train_loss=0.1, test_acc=0.5), model(1, train_loss=0.1, test_acc=None)])
    write_pairs(tables, [pair(0, 1, cka=0.5, cka_status="ok", l2_distance=1.0)])
    c = aggregate_cells(tables.read("models"), tables.read("pairs")).iloc[0]
    assert c.test_acc == 0.5 and c.test_acc_n == 1 and "test_acc from 1 of 2 models" in c.members_missing


def test_all_members_failed_gives_null_means_not_a_crash(tables):
    write_models(tables, [model(0, status="diverged"), model(1, status="diverged")])
    c = aggregate_cells(tables.read("models"), tables.read("pairs")).iloc[0]
    assert math.isnan(c.train_loss) and c.train_loss_n == 0 and math.isnan(c.log_hessian_trace)
    assert c.n_diverged == 2 and "no pairs measured" in c.members_missing


def test_negative_mean_eigenvalue_has_no_log(tables):
    write_models(tables, [model(0, hessian_top_eigenvalue=-0.5, hessian_trace=0.0)])
    c = aggregate_cells(tables.read("models"), tables.read("pairs"), expected_seeds=[0]).iloc[0]
    assert (
        c.hessian_top_eigenvalue == -0.5
        and math.isnan(c.log_hessian_top_eigenvalue)
        and math.isnan(c.log_hessian_trace)
    )


def test_expected_seeds_and_cells_known_only_from_pairs(tables):
    write_models(tables, [model(0, train_loss=0.1)])
    write_pairs(tables, [{**pair(0, 1, cka=0.5, cka_status="ok", l2_distance=1.0), "load_value": 16.0}])
    cells = aggregate_cells(tables.read("models"), tables.read("pairs"), expected_seeds=[0, 1])
    assert sorted(cells.load_value) == [4.0, 16.0]
    only_pairs = cells[cells.load_value == 16.0].iloc[0]
    assert only_pairs.n_models == 0 and "seeds 0,1 missing" in only_pairs.members_missing


def test_missing_columns_are_a_clear_error():
    with pytest.raises(ValueError, match="models table lacks column"):
        aggregate_cells(pd.DataFrame({"seed": [0]}), pd.DataFrame())
