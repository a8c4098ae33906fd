"""The adaptive-sweep policy (analysis/adaptive.py) and its replay on the released results (benchmarks/adaptive.py).

No training and no Ray: the policy is a pure function of settings, grid and tables, and the replay reveals rows of
tables that already exist.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.adaptive import (
    AdaptiveSettings,
    Grid,
    cell_means,
    coarse_cells,
    fill_map,
    interpolate,
    next_wave,
)
from analysis.aggregate import aggregate_cells
from tests.helpers import REFERENCE_ARCHIVE, require_reference_archive
from tests.helpers import REPO_ROOT

ROOT = pathlib.Path(REPO_ROOT)
ARCHIVE = REFERENCE_ARCHIVE
CELL = {"load_name": "width", "temperature_name": "batch_size"}


def _benchmark():
    if "adaptive_benchmark" in sys.modules:
        return sys.modules["adaptive_benchmark"]
    spec = importlib.util.spec_from_file_location("adaptive_benchmark", ROOT / "benchmarks" / "adaptive.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


def synthetic_tables(grid: Grid, loss_of, mc_of=lambda i, j: 0.0, cka_of=lambda i, j: 0.9):
    """Full tables of ``grid``: every seed of every cell ok, every pair of seeds connected; values by grid index."""
    models, pairs = [], []
    for i, lv in enumerate(grid.load_values):
        for j, tv in enumerate(grid.temperature_values):
            cell = {**CELL, "load_value": lv, "temperature_value": tv}
            for s in grid.seeds:
                models.append({**cell, "seed": s, "status": "ok", "train_loss": loss_of(i, j)})
            for a in grid.seeds:
                for b in grid.seeds:
                    if a < b:
                        pairs.append({**cell, "seed_a": a, "seed_b": b, "status": "ok",
                                      "mode_connectivity": mc_of(i, j), "cka": cka_of(i, j)})
    return pd.DataFrame(models), pd.DataFrame(pairs)


def reveal(models, pairs, asked):
    """The rows of the (load, temperature, seed)s asked for; pairs whose two seeds were both asked for."""
    m = models[[(lv, tv, s) in asked for lv, tv, s in zip(models.load_value, models.temperature_value, models.seed)]]
    p = pairs[[(lv, tv, a) in asked and (lv, tv, b) in asked
               for lv, tv, a, b in zip(pairs.load_value, pairs.temperature_value, pairs.seed_a, pairs.seed_b)]]
    return m.reset_index(drop=True), p.reset_index(drop=True)


def drive(settings, grid, models, pairs, max_waves=20):
    """Run the policy against full tables until it is done: the waves and the rows it ended with."""
    asked, waves = set(), []
    shown_m, shown_p = models.iloc[0:0], pairs.iloc[0:0]
    for _ in range(max_waves):
        wave = next_wave(settings, grid, shown_m, shown_p)
        if wave.done:
            return waves, shown_m, shown_p
        waves.append(wave)
        asked |= {(c.load_value, c.temperature_value, s) for c in wave.cells for s in c.seeds}
        shown_m, shown_p = reveal(models, pairs, asked)
    raise AssertionError(f"the policy did not stop within {max_waves} waves")


GRID = Grid("width", tuple(float(2 ** (k / 2)) for k in range(12)), "batch_size",
            tuple(float(16 * 2 ** (k / 2)) for k in range(12)), (0, 1, 2, 3, 4))


def straight_boundary_tables():
    """Sharp (loss 1) for load index < 6, flat (loss 1e-3) from 6 on; well connected, one CKA: II | IV-B."""
    return synthetic_tables(GRID, lambda i, j: 1.0 if i < 6 else 1e-3)


def test_first_wave_is_the_coarse_grid_at_the_starting_seeds():
    settings = AdaptiveSettings(coarse_step=3, coarse_offset=(1, 2))
    wave = next_wave(settings, GRID, pd.DataFrame(), pd.DataFrame())
    got = {(c.load_value, c.temperature_value) for c in wave.cells}
    loads = [GRID.load_values[i] for i in (0, 1, 4, 7, 10, 11)]  # offset 1, step 3, plus both edges
    temps = [GRID.temperature_values[j] for j in (0, 2, 5, 8, 11)]
    assert got == {(lv, tv) for lv in loads for tv in temps} == set(coarse_cells(GRID, settings))
    assert {c.seeds for c in wave.cells} == {(0, 1)}
    assert {c.reason for c in wave.cells} == {"coarse"}
    assert wave.models == 2 * len(loads) * len(temps)


def test_the_policy_is_deterministic_and_ignores_row_order():
    models, pairs = straight_boundary_tables()
    settings = AdaptiveSettings()
    coarse = next_wave(settings, GRID, models.iloc[0:0], pairs.iloc[0:0])
    asked = {(c.load_value, c.temperature_value, s) for c in coarse.cells for s in c.seeds}
    shown_m, shown_p = reveal(models, pairs, asked)
    first = next_wave(settings, GRID, shown_m, shown_p)
    again = next_wave(settings, GRID, shown_m.copy(), shown_p.copy())
    shuffled = next_wave(settings, GRID, shown_m.sample(frac=1, random_state=3), shown_p.sample(frac=1, random_state=4))
    assert not first.done
    assert first == again == shuffled
    assert first.to_json() == shuffled.to_json()


def test_a_straight_boundary_is_refined_and_the_deep_interior_is_not():
    models, pairs = straight_boundary_tables()
    settings = AdaptiveSettings(coarse_step=3)  # coarse load indices 0, 3, 6, 9, 11
    waves, shown_m, shown_p = drive(settings, GRID, models, pairs)
    requested = [(c, GRID.index(c.load_value, c.temperature_value)[0]) for w in waves[1:] for c in w.cells]
    boundary_rows = {i for c, i in requested if c.reason == "boundary"}
    # the true boundary lies between load indices 5 and 6; the coarse rows 3 and 6 bracket it, and the
    # interpolated map puts it within a cell of the truth: only rows next to it are refined
    assert boundary_rows and boundary_rows <= {4, 5, 6, 7}
    assert len({c.temperature_value for c, _ in requested}) == len(GRID.temperature_values)  # along the whole line
    trained_rows = {GRID.index(lv, tv)[0] for lv, tv in zip(shown_m.load_value, shown_m.temperature_value)}
    assert not trained_rows & {1, 2, 8, 10}  # the deep interior stays untrained
    assert not any(c.reason == "top-up" for c, _ in requested)  # no seed noise, no value near a threshold
    final = fill_map(GRID, shown_m, shown_p, settings)
    truth = np.where(np.arange(len(GRID.load_values)) < 6, "II", "IV-B").repeat(len(GRID.temperature_values))
    assert list(final["phase"]) == list(truth)


def test_cells_without_measurements_are_interpolated_and_marked():
    models, pairs = straight_boundary_tables()
    settings = AdaptiveSettings()
    first = next_wave(settings, GRID, models.iloc[0:0], pairs.iloc[0:0])
    shown_m, shown_p = reveal(models, pairs, {(c.load_value, c.temperature_value, s)
                                              for c in first.cells for s in c.seeds})
    filled = fill_map(GRID, shown_m, shown_p, settings)
    coarse = set(coarse_cells(GRID, settings))
    marked = {(lv, tv) for lv, tv, x in zip(filled.load_value, filled.temperature_value, filled.interpolated) if x}
    assert marked == set(GRID.cells()) - coarse
    assert filled.loc[~filled.interpolated, "n_models_trained"].eq(2).all()
    assert filled.loc[filled.interpolated, "n_models_trained"].eq(0).all()
    assert filled["phase"].notna().all()
    # the harmonic fill of log train loss falls monotonically from the sharp coarse row 3 to the flat row 6
    loss = filled["train_loss"].to_numpy().reshape(GRID.shape)
    assert (np.diff(np.log(loss[3:7]), axis=0) < 0).all()
    rows, cols = [0, 3, 6, 9, 11], [0, 3, 6, 9, 11]
    assert np.allclose(loss[np.ix_(rows, cols)], np.where(np.array(rows) < 6, 1.0, 1e-3)[:, None])  # measured kept
    assert (loss > 1e-3 * 0.999).all() and (loss < 1.0 * 1.001).all()  # a harmonic fill never leaves their range


def test_interpolation_is_linear_between_measured_cells_and_nearest_averages_ties():
    values = np.full((1, 7), np.nan)
    values[0, 0], values[0, 6] = 0.0, 6.0
    assert np.allclose(interpolate(values, "linear"), np.arange(7.0)[None, :])
    near = interpolate(values, "nearest")
    assert list(near[0]) == [0, 0, 0, 3, 6, 6, 6]
    assert np.isnan(interpolate(np.full((2, 2), np.nan))).all()
    with pytest.raises(ValueError, match="unknown interpolation"):
        interpolate(values, "cubic")


def near_threshold_tables():
    """One flat, well-connected region; the cell at index (3, 3) has mc -1.1, right at the -1 pp threshold."""
    return synthetic_tables(GRID, lambda i, j: 1e-3, mc_of=lambda i, j: -1.1 if (i, j) == (3, 3) else 0.0)


def top_ups_of(waves) -> list[tuple[int, tuple[int, int], tuple[int, ...]]]:
    """(wave number, cell index, seeds) of every top-up request."""
    return [(k, GRID.index(c.load_value, c.temperature_value), c.seeds)
            for k, w in enumerate(waves) for c in w.cells if c.reason == "top-up"]


def test_an_uncertain_cell_is_topped_up_to_the_full_seeds_at_once():
    models, pairs = near_threshold_tables()
    waves, _, _ = drive(AdaptiveSettings(coarse_step=3, top_up_seeds=None), GRID, models, pairs)
    assert [(cell, seeds) for _, cell, seeds in top_ups_of(waves)] == [((3, 3), (2, 3, 4))]
    assert "mc -1.1 near -1" in next(c for w in waves for c in w.cells if c.reason == "top-up").detail


def test_by_default_a_top_up_adds_one_seed_a_wave_while_the_cell_stays_uncertain():
    models, pairs = near_threshold_tables()  # every seed pair of the cell at -1.1: it never clears
    waves, _, _ = drive(AdaptiveSettings(coarse_step=3), GRID, models, pairs)
    top_ups = top_ups_of(waves)
    assert [(cell, seeds) for _, cell, seeds in top_ups] == [((3, 3), (2,)), ((3, 3), (3,)), ((3, 3), (4,))]
    assert [k for k, _, _ in top_ups] == sorted({k for k, _, _ in top_ups})  # one wave each, in seed order


def test_a_cell_whose_label_clears_after_one_more_seed_gets_no_more():
    models, pairs = near_threshold_tables()
    cell = (pairs.load_value == GRID.load_values[3]) & (pairs.temperature_value == GRID.temperature_values[3])
    pairs.loc[cell & ((pairs.seed_a == 2) | (pairs.seed_b == 2)), "mode_connectivity"] = 0.0
    waves, shown_m, _ = drive(AdaptiveSettings(coarse_step=3), GRID, models, pairs)
    assert [(cell, seeds) for _, cell, seeds in top_ups_of(waves)] == [((3, 3), (2,))]  # mean mc -0.37: clear
    trained = shown_m[(shown_m.load_value == GRID.load_values[3]) & (shown_m.temperature_value == GRID.temperature_values[3])]
    assert sorted(trained.seed) == [0, 1, 2]


def test_budget_keeps_the_most_valuable_cells_and_stops():
    models, pairs = straight_boundary_tables()
    coarse = len(coarse_cells(GRID, AdaptiveSettings())) * 2
    settings = AdaptiveSettings(budget_models=coarse + 5)
    waves, shown_m, _ = drive(settings, GRID, models, pairs)
    assert len(shown_m) <= coarse + 5
    assert waves[1].models == 4 and "budget of" in waves[1].note  # two cells of 2 seeds fit, the third does not
    assert next_wave(settings, GRID, shown_m, pairs.iloc[0:0]).done


def test_a_wave_serialises_to_json_with_its_reasons():
    models, pairs = straight_boundary_tables()
    waves, _, _ = drive(AdaptiveSettings(), GRID, models, pairs)
    doc = json.loads(waves[1].to_json())
    assert doc["done"] is False and doc["models"] == waves[1].models
    assert {c["reason"] for c in doc["cells"]} == {"boundary"}
    assert all(c["detail"] and len(c["seeds"]) == 2 for c in doc["cells"])
    assert json.loads(json.dumps(AdaptiveSettings().to_dict()))["rules"]["sharp_loss_ratio"] == 10.0


@pytest.mark.parametrize("bad, fragment", [
    ({"coarse_step": 0}, "coarse_step=0"),
    ({"coarse_offset": (3, 0)}, "coarse_offset"),
    ({"start_seeds": 3, "full_seeds": 2}, "full_seeds=2"),
    ({"interpolation": "cubic"}, "interpolation"),
    ({"neighbours": 6}, "neighbours=6"),
    ({"start_seeds": 1}, "start_seeds=1 is invalid: it must be an integer >= 2"),
])
def test_invalid_settings_are_refused_by_name(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        AdaptiveSettings(**bad)


# ---------------------------------------------------------------------------------------------
# The released results (ResNet18 width x batch size, 5 runs per cell; curves between runs 0 and 1 only)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    require_reference_archive()
    bench = _benchmark()
    return bench.reference_tables(str(ARCHIVE))


def test_cell_means_equal_aggregate_cells(released):
    models, pairs = released
    grid = Grid.from_tables(models)
    ours = cell_means(grid, models, pairs).sort_values(["load_value", "temperature_value"]).reset_index(drop=True)
    theirs = aggregate_cells(models, pairs)
    for col in ("train_loss", "mode_connectivity", "cka", "mode_connectivity_n"):
        assert np.allclose(ours[col].astype(float), theirs[col].astype(float), equal_nan=True), col


def test_replay_on_the_released_results_reaches_the_full_map(released):
    """Issue #22's target for the default policy (coarse step 3 with edges, 2 starting seeds, boundary waves,
    top-ups one seed at a time): over all 9 coarse offsets (seeds 0 and 1 first: the archive's only curve is
    between them), the worst start agrees with the full 5-seed map on >= 98% of the cells at <= 40% of the model
    trainings (measured: 99.5% at 30.3-32.4%; the former top-up rule, 100% at 36.1-39.6%)."""
    bench = _benchmark()
    models, pairs = released
    summary = bench.run_one("released", models, pairs, AdaptiveSettings(), 0, False, log=lambda *_: None)
    assert summary["starts"] == 9
    assert min(summary["agreement"]) >= 0.98
    assert max(summary["models"]) <= 0.40
    assert max(summary["curves"]) <= 0.65  # fewer seeds save trainings, not curves: every trained cell has one
    assert summary["target_met"]


def test_replay_over_ten_seed_choices_with_the_curve_standing_in(released):
    """Other starting seeds than {0, 1}: the cell's one released curve stands in for the first pair trained
    (benchmarks/adaptive.py --mc-stand-in). 10 of the 90 (offset, seed pair) starts, spread evenly; measured:
    every start agrees with the full map on >= 98% of the cells at <= 40% of the model trainings (over all 90
    starts: 98.6-100% at 26.8-33.3%)."""
    bench = _benchmark()
    models, pairs = released
    summary = bench.run_one("released", models, pairs, AdaptiveSettings(), 10, True, log=lambda *_: None)
    assert summary["starts"] == 10
    assert len({tuple(s) for s in summary["seed_choices"]}) >= 4
    assert min(summary["agreement"]) >= 0.98
    assert max(summary["models"]) <= 0.40


def test_settings_from_a_config_mapping():
    settings = AdaptiveSettings.from_mapping({"coarse_step": "4", "coarse_offset": "1,2", "refine_iv": "false",
                                              "budget_models": "none", "mc_margin": 0.25,
                                              "rules": {"mc_threshold": "0.5"}})
    assert settings == AdaptiveSettings(coarse_step=4, coarse_offset=(1, 2), refine_iv=False, mc_margin=0.25,
                                        rules=AdaptiveSettings().rules.from_mapping({"mc_threshold": 0.5}))
    with pytest.raises(ValueError, match="unknown adaptive setting 'coarse_stp'. Did you mean 'coarse_step'"):
        AdaptiveSettings.from_mapping({"coarse_stp": 3})
    with pytest.raises(ValueError, match="start_seeds='two' is invalid"):
        AdaptiveSettings.from_mapping({"start_seeds": "two"})


def test_a_grid_with_fewer_seeds_than_a_start_is_refused():
    with pytest.raises(ValueError, match="the grid has 1 seed"):
        next_wave(AdaptiveSettings(), GRID.with_seeds((0,)), pd.DataFrame(), pd.DataFrame())


def test_a_trained_cell_without_a_measured_pair_is_topped_up():
    models, pairs = straight_boundary_tables()
    gone = (pairs.load_value == GRID.load_values[9]) & (pairs.temperature_value == GRID.temperature_values[9])
    models.loc[(models.load_value == GRID.load_values[9]) & (models.temperature_value == GRID.temperature_values[9])
               & (models.seed == 1), "status"] = "diverged"
    waves, _, _ = drive(AdaptiveSettings(top_up_seeds=None), GRID, models, pairs[~gone])
    top_ups = [c for w in waves for c in w.cells if c.reason == "top-up"]
    assert [(GRID.index(c.load_value, c.temperature_value), c.seeds) for c in top_ups] == [((9, 9), (2, 3, 4))]
    assert "not measured" in top_ups[0].detail
