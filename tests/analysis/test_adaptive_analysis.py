"""`landscape analyze` of an adaptive run (issue #22): every grid cell in cells.parquet, the untrained ones
interpolated and marked; no "seed missing" for cells trained at the starting seeds only; claims on trained cells
only; the phase map and the report show which cells were trained, topped up and interpolated.

Synthetic tables (tests/analysis_synthetic.py: a 4 x 4 grid, 3 seeds, phases known by construction) with a
config.yaml that says search: adaptive; no training, no Ray.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import yaml

from analysis.adaptive import fill_map
from analysis.adaptive_cells import SAMPLING, adaptive_search
from analysis.api import analyze_run, label_run
from analysis.claims import evaluate_claims
from analysis.plot_data import cell_grid, heatmap_data, phase_map_data
from analysis.tables import RunTables, model_key
from orchestrator.driver.analysis_step import summary_lines
from tests.analysis_synthetic import BATCHES, EXPECTED_PHASES, SEEDS, WIDTHS, fig2_cells, write_synthetic_run
from tests.helpers import assert_clean_error, landscape_in_process

# The interior of the grid was never trained; three edge cells were trained at the starting seeds (0, 1) only;
# the other edge cells were topped up to all three seeds.
UNTRAINED = {(16, 32), (32, 32), (16, 64), (32, 64)}
START_ONLY = {(8, 16), (64, 16), (8, 128)}
CONFIG = {"name": "synthetic", "load": {"name": "width", "values": WIDTHS},
          "temperature": {"name": "batch_size", "values": BATCHES}, "seeds": SEEDS, "search": "adaptive",
          "adaptive": {"coarse_step": 3, "start_seeds": 2}}
DRAWS = 20  # seed resamplings: enough to exercise the bootstrap path, few enough to be quick


def write_adaptive_run(run_dir: str, config: dict | None = CONFIG) -> RunTables:
    trained = [(w, b) for w in WIDTHS for b in BATCHES if (w, b) not in UNTRAINED]
    tables = write_synthetic_run(run_dir, only=trained, drop=[(w, b, 2) for w, b in START_ONLY],
                                 pairs_of_dropped=False)
    if config is not None:
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f)
    return tables


def cell_set(cells: pd.DataFrame, mask) -> set[tuple[int, int]]:
    rows = cells[mask]
    return {(int(w), int(b)) for w, b in zip(rows["load_value"], rows["temperature_value"])}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("adaptive") / "run")
    write_adaptive_run(run_dir)
    result = analyze_run(run_dir, bootstrap_draws=DRAWS)
    return run_dir, result, pd.read_parquet(result.cells_path)


def test_cells_parquet_has_every_grid_cell_and_marks_exactly_the_untrained_ones(analysed):
    _, _, cells = analysed
    assert len(cells) == len(WIDTHS) * len(BATCHES)
    assert cell_set(cells, cells["interpolated"]) == UNTRAINED
    assert cells["interpolated"].dtype == bool and cells["trained_seeds"].dtype.kind == "i"
    by_cell = {(int(w), int(b)): r for w, b, r in zip(cells.load_value, cells.temperature_value,
                                                       cells.to_dict("records"))}
    for cell, row in by_cell.items():
        want = "interpolated" if cell in UNTRAINED else "start seeds" if cell in START_ONLY else "topped up"
        assert row["sampling"] == want, cell
        assert row["trained_seeds"] == {"interpolated": 0, "start seeds": 2, "topped up": 3}[want], cell
    # Interpolated cells get values from their trained neighbours, a label by the same rules, no seed noise.
    interpolated = cells[cells["interpolated"]]
    assert interpolated[["train_loss", "mode_connectivity", "cka"]].notna().all().all()
    assert interpolated["phase"].notna().all() and interpolated["phase_confidence"].isna().all()
    assert (interpolated["members_missing"].str.startswith("not trained")).all()
    assert cells.loc[~cells["interpolated"], "phase_confidence"].notna().all()
    # The trained cells keep their phases by construction; so do the interpolated ones on this smooth layout.
    for cell, row in by_cell.items():
        assert row["phase"] == EXPECTED_PHASES[cell], cell


def test_cells_at_the_starting_seeds_are_complete_and_real_failures_still_named(analysed, tmp_path):
    _, result, cells = analysed
    start = cells[cells["sampling"] == "start seeds"]
    assert len(start) == len(START_ONLY)
    assert start["complete"].all() and start["members_missing"].isna().all()
    assert (start["n_models_expected"] == 2).all()
    assert not any("seed 2" in w for w in result.warnings)
    assert not any(f.topic == "completeness" for found in result.findings.values() for f in found)

    # A starting seed that is lost is still named: the cell expects its starting seeds.
    run_dir = str(tmp_path / "run")
    tables = write_adaptive_run(run_dir)
    os.remove(tables.part_uri("models", model_key("width", 64, "batch_size", 16, 1)))
    labelled = label_run(run_dir, bootstrap_draws=0)
    row = labelled.cells[(labelled.cells.load_value == 64) & (labelled.cells.temperature_value == 16)].iloc[0]
    assert row["sampling"] == "start seeds" and not row["complete"]
    assert row["members_missing"] == "seed 1 missing"


def test_claims_rest_on_trained_cells_only(analysed):
    _, result, cells = analysed
    trained = int((~cells["interpolated"]).sum())
    applying = [c for c in result.claims if c["applies"]]
    assert applying and all(c["cells_used"] == trained for c in applying)
    assert all(c["interpolated_cells_left_out"] == len(UNTRAINED) for c in result.claims)
    written = json.load(open(os.path.join(os.path.dirname(result.cells_path), "claims.json")))
    assert {c["id"]: c["cells_used"] for c in written} == {c["id"]: c["cells_used"] for c in result.claims}


def test_a_claim_only_interpolated_cells_could_decide_is_unresolved():
    cells = fig2_cells()
    cells["interpolated"] = cells["phase"] == "IV-A"  # every IV-A cell untrained
    plain = {c["id"]: c for c in evaluate_claims(fig2_cells())}
    marked = {c["id"]: c for c in evaluate_claims(cells)}
    assert plain["iv-b-hotter-than-iv-a"]["status"] == "holds"
    claim = marked["iv-b-hotter-than-iv-a"]
    assert claim["status"] == "unresolved" and claim["holds"] is None
    assert "interpolated only" in claim["summary"]
    assert claim["cells_used"] == len(cells) - int(cells["interpolated"].sum())
    assert claim["interpolated_cells_left_out"] == 4
    # A grid run's cells (no interpolated column, or none marked) are measured on every cell.
    assert plain["sharp-phases-hot"]["cells_used"] == len(cells) and plain["sharp-phases-hot"][
        "interpolated_cells_left_out"] == 0


def test_phase_map_and_report_show_the_sampling(analysed):
    run_dir, result, cells = analysed
    png = result.figures["phase_map"]["png"]
    assert os.path.getsize(png) > 0
    # The metric panels show measurements: an interpolated cell is missing there, labelled on the phase map.
    grid = cell_grid(cells)
    untrained = [grid.position(w, b) for w, b in UNTRAINED]
    loss = heatmap_data(cells, "train_loss", grid=grid).values
    assert all(not pd.notna(loss[p]) for p in untrained) and pd.notna(loss[grid.position(8, 16)])
    phase_map = phase_map_data(cells, grid=grid)
    assert {tuple(int(v) for v in p) for p in zip(*phase_map.interpolated.nonzero())} == set(untrained)
    assert phase_map.start_seeds_only.sum() == len(START_ONLY) and not phase_map.uncertain[phase_map.interpolated].any()
    report = open(result.report_path, encoding="utf-8").read()
    assert "Adaptive search: trained and interpolated cells" in report
    assert "12 of 16 cells trained (9 topped up, 3 at the starting seeds only), 4 interpolated" in report
    # Interpolated cells expect no members: they are counted apart, not as incomplete cells.
    assert "12 of 12 trained cells complete (all expected members and metrics present); 4 interpolated" in report
    assert report.count('class="interpolated"') == len(UNTRAINED)  # the SVG phase map marks them
    lines = summary_lines(cells, result.claims, None)
    assert any("4 interpolated (not trained)" in line for line in lines)


def test_trained_labels_agree_with_the_policys_filled_map(analysed):
    """Labelled as one filled grid, the analysis gives every cell the label the policy's fill_map shows (the
    same relative thresholds), the interpolated ones included."""
    run_dir, _, cells = analysed
    tables = RunTables(run_dir)
    search = adaptive_search(CONFIG)
    policy = fill_map(search.grid, tables.read("models"), tables.read("pairs"), search.settings)
    ours = cells.set_index(["load_value", "temperature_value"])
    theirs = policy.set_index(["load_value", "temperature_value"])
    assert (ours.loc[theirs.index, "phase"] == theirs["phase"]).all()
    assert ours["sharpness_threshold"].iloc[0] == pytest.approx(theirs["sharpness_threshold"].iloc[0])


def test_a_grid_run_has_constant_sampling_columns(tmp_path):
    run_dir = str(tmp_path / "run")
    write_adaptive_run(run_dir, config={**CONFIG, "search": "grid", "adaptive": {}})
    cells = label_run(run_dir, bootstrap_draws=0).cells
    assert len(cells) == len(WIDTHS) * len(BATCHES) - len(UNTRAINED)  # no config search: nothing interpolated
    assert not cells["interpolated"].any() and set(cells["sampling"]) == {"full"}
    assert (cells["trained_seeds"] == cells["n_models_ok"]).all()
    # ... and every cell expects every seed: a seed the run never trained is named missing.
    assert set(cells.loc[cells["n_models_ok"] == 2, "members_missing"]) == {"seed 2 missing"}


def test_a_bad_adaptive_block_is_named_and_the_run_analysed_as_trained(tmp_path):
    with pytest.raises(ValueError, match="search: adaptive.*coarse_step"):
        adaptive_search({**CONFIG, "adaptive": {"coarse_step": 0}})
    assert adaptive_search({**CONFIG, "search": "grid"}) is None and adaptive_search(None) is None
    run_dir = str(tmp_path / "run")
    write_adaptive_run(run_dir, config={**CONFIG, "adaptive": {"coarse_step": 0}})
    labelled = label_run(run_dir, bootstrap_draws=0)
    assert any("cannot be read" in w and "left out, not interpolated" in w for w in labelled.warnings)
    assert not labelled.cells["interpolated"].any() and set(labelled.cells["sampling"]) <= set(SAMPLING)


def test_compare_names_the_changed_cells_that_were_interpolated(analysed):
    """A rule that moves untrained cells: `compare` lists them with their sampling, so no one reads an
    interpolated label change as a measured one."""
    from analysis.compare import compare_runs
    from analysis.compare_report import comparison_json, comparison_text

    run_dir, _, _ = analysed
    result = compare_runs(run_dir, run_dir, rules_b={"mc_threshold": 10}, bootstrap_draws=0)
    changed = result.changed
    moved_untrained = cell_set(changed, changed["interpolated_a"].astype(bool))
    assert moved_untrained and moved_untrained <= UNTRAINED
    assert cell_set(changed, ~changed["interpolated_a"].astype(bool)).isdisjoint(UNTRAINED)
    text = comparison_text(result)
    assert text.count("[interpolated in A and B: not trained]") == len(moved_untrained)
    doc = comparison_json(result)
    assert sum(c["sampling_a"] == "interpolated" for c in doc["changed_cells"]) == len(moved_untrained)


def test_plotting_an_interpolated_cell_says_it_was_never_trained(analysed):
    run_dir, _, _ = analysed
    assert_clean_error(landscape_in_process("plot", run_dir, "--cell", "width=16,batch_size=32"),
                       "width=16, batch_size=32 was not trained in this adaptive run",
                       "interpolated from the trained cells", "plot a trained cell")
    # a trained cell of the same run is not called interpolated (this synthetic run has no history table)
    proc = landscape_in_process("plot", run_dir, "--cell", "width=8,batch_size=32")
    assert proc.returncode != 0 and "no training history" in proc.stderr and "interpolated" not in proc.stderr
