"""`landscape compare` and analyze's change summary (analysis/compare.py), on synthetic runs and on the authors'
released results. No Ray: the runs' tables are written directly (tests/analysis_synthetic.py) or imported."""

import json
import os
import pathlib

import pytest
import yaml

from analysis.aggregate import aggregate_cells
from analysis.compare import compare_claims, config_differences
from analysis.phases import label_phases
from analysis.reference import import_reference
from analysis.tables import RunTables
from tests.analysis_synthetic import CELLS, EXPECTED_PHASES, write_synthetic_run
from tests.helpers import assert_clean_error, landscape_in_process, require_reference_archive
from tests.helpers import REFERENCE_ARCHIVE as ARCHIVE

# On the synthetic run, mc_threshold=4.5 turns exactly one cell from poorly to well connected: width 16, batch 64
# (mc -4.0; every other poorly connected cell has mc <= -5). It joins phase IV with CKA 0.50; the phase-IV CKA
# are then {0.50, 0.55, 0.60, 0.80, 0.85, 0.90}, median 0.70: no other IV-A/IV-B label moves.
SYNTHETIC_RULE = "mc_threshold=4.5"
SYNTHETIC_CHANGED = {(16.0, 64.0): ("III", "IV-A")}


def _files(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in pathlib.Path(folder).rglob("*")}


def _compare_json(*args):
    proc = landscape_in_process("compare", *args, "--json")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def _changed(doc) -> dict:
    return {(c["load_value"], c["temperature_value"]): (c["phase_a"], c["phase_b"]) for c in doc["changed_cells"]}


def _labels(run_dir, **rules) -> dict:
    """(load value, temperature value) -> phase, labelled here without analysis.compare or analysis.api."""
    tables = RunTables(str(run_dir))
    cells = label_phases(aggregate_cells(tables.read("models"), tables.read("pairs")), rules or None)
    return {(float(r.load_value), float(r.temperature_value)): r.phase for r in cells.itertuples()}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    run = tmp_path_factory.mktemp("cmp") / "run"
    write_synthetic_run(str(run))
    return run


def test_relabelling_lists_exactly_the_changed_cells(synthetic, tmp_path):
    before = _files(synthetic)
    doc = _compare_json(synthetic, synthetic, "--rule-b", SYNTHETIC_RULE, "--out", tmp_path)
    assert _changed(doc) == SYNTHETIC_CHANGED
    assert doc["phase_counts"]["III"] == {"a": 3, "b": 2} and doc["phase_counts"]["IV-A"] == {"a": 2, "b": 3}
    assert doc["cells_in_both"] == len(CELLS) and doc["only_in_a"] == doc["only_in_b"] == []
    assert doc["rules_diff"] == [{"rule": "mc_threshold", "a": 1.0, "b": 4.5}] and doc["config_diff"] == []
    cell = doc["changed_cells"][0]  # the deciding numbers of both sides travel with the cell
    assert cell["mode_connectivity_a"] == cell["mode_connectivity_b"] == pytest.approx(-4.0)
    assert (cell["connectivity_threshold_a"], cell["connectivity_threshold_b"]) == (1.0, 4.5)
    assert (cell["connectivity_class_a"], cell["connectivity_class_b"]) == ("poor", "well")
    assert len(doc["claims"]) > 0 and all("holds_a" in c and "p_holds_b" in c for c in doc["claims"])
    assert doc["figures"] == [str(tmp_path / "compare.png")]
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _files(synthetic) == before, "compare wrote into the run"


def test_text_summary_names_counts_cells_and_rules(synthetic, tmp_path):
    proc = landscape_in_process("compare", synthetic, synthetic, "--rule-b", SYNTHETIC_RULE, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "phases (A → B): I 3→3, II 5→5, III 3→2, IV-A 2→3, IV-B 3→3" in out
    assert "16 in both, 1 changed phase, 0 only in A, 0 only in B" in out
    assert "width 16, batch_size 64: III → IV-A  (connectivity poor → well)" in out
    assert "mc -4 < -1: poorly connected" in out and "mc -4 >= -4.5: well connected" in out
    assert "mc_threshold 1 → 4.5" in out and f"phase maps: {tmp_path / 'compare.png'}" in out


def test_bootstrap_option_sets_the_resamplings_behind_each_p(synthetic, tmp_path):
    """--bootstrap 0 skips the seed resampling (a quicker compare): claims keep their verdicts, without a p."""
    with_p = _compare_json(synthetic, synthetic, "--out", tmp_path)
    without = _compare_json(synthetic, synthetic, "--out", tmp_path, "--bootstrap", "0")
    assert any(c["p_holds_a"] is not None for c in with_p["claims"])
    assert all(c["p_holds_a"] is None and c["p_holds_b"] is None for c in without["claims"])
    assert [(c["id"], c["holds_a"]) for c in without["claims"]] == [(c["id"], c["holds_a"]) for c in with_p["claims"]]


def test_same_rules_change_nothing(synthetic, tmp_path):
    doc = _compare_json(synthetic, synthetic, "--out", tmp_path)
    assert doc["changed_cells"] == [] and doc["rules_diff"] == []
    assert not any(c["changed"] for c in doc["claims"])


def test_two_runs_of_one_grid_matched_by_knob_values(tmp_path):
    """Cells only one run has are listed as such; config differences are dotted keys."""
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    write_synthetic_run(str(run_a))
    kept = [c for c in CELLS if c != (8, 16)]
    write_synthetic_run(str(run_b), only=kept)
    (run_a / "config.yaml").write_text(yaml.safe_dump({"training": {"epochs": 10, "precision": "fp32"}, "seeds": [0]}))
    (run_b / "config.yaml").write_text(yaml.safe_dump({"training": {"epochs": 10, "precision": "bf16"}}))
    doc = _compare_json(run_a, run_b, "--out", tmp_path / "out")
    assert doc["only_in_a"] == [{"load_name": "width", "load_value": 8.0, "temperature_name": "batch_size",
                                 "temperature_value": 16.0}]
    assert doc["only_in_b"] == [] and doc["cells_in_both"] == len(CELLS) - 1
    assert doc["config_diff"] == [{"key": "seeds", "a": [0], "b": "(absent)"},
                                  {"key": "training.precision", "a": "fp32", "b": "bf16"}]
    # Each run labelled on its own; the changed cells are exactly those whose labels differ.
    la, lb = _labels(run_a), _labels(run_b)
    expected = {k: (la[k], lb[k]) for k in lb if la[k] != lb[k]}
    assert _changed(doc) == expected


def test_grids_with_different_knobs_are_one_clear_error(tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    write_synthetic_run(str(run_a))
    write_synthetic_run(str(run_b), temperature_name="learning_rate")
    proc = landscape_in_process("compare", run_a, run_b, "--out", tmp_path / "out")
    assert_clean_error(proc, "different knobs", "width × batch_size", "width × learning_rate")
    assert not (tmp_path / "out").exists()


def test_output_inside_b_is_refused(synthetic):
    before = _files(synthetic)
    proc = landscape_in_process("compare", synthetic, synthetic, "--out", synthetic / "cmp")
    assert_clean_error(proc, "inside RUN_B", "only reads")
    assert _files(synthetic) == before


def test_a_missing_run_is_one_clear_error(synthetic, tmp_path):
    proc = landscape_in_process("compare", synthetic, tmp_path / "nowhere", "--out", tmp_path / "out")
    assert_clean_error(proc, "nowhere", "does not exist")


def test_unknown_rule_is_one_clear_error(synthetic, tmp_path):
    proc = landscape_in_process("compare", synthetic, synthetic, "--rule-b", "mc_treshold=2", "--out", tmp_path)
    assert_clean_error(proc, "mc_treshold", "mc_threshold")


def test_claims_side_by_side_read_p_holds_where_present():
    a = [{"diagram": "d", "id": "c1", "holds": True, "p_holds": 0.9}, {"diagram": "d", "id": "c2", "holds": None}]
    b = [{"diagram": "d", "id": "c1", "holds": False, "p_holds": 0.3}, {"diagram": "d", "id": "c3", "holds": True}]
    rows = {r["id"]: r for r in compare_claims(a, b)}
    assert (rows["c1"]["holds_a"], rows["c1"]["holds_b"], rows["c1"]["p_holds_a"], rows["c1"]["p_holds_b"],
            rows["c1"]["changed"]) == (True, False, 0.9, 0.3, True)
    assert rows["c2"]["in_b"] is False and rows["c2"]["changed"] and rows["c2"]["p_holds_a"] is None
    assert rows["c3"]["in_a"] is False and rows["c3"]["changed"]


def test_an_unresolved_claim_reads_unresolved_and_a_change_of_status_is_a_change():
    """holds is None both for an unresolved claim and one that does not apply: the verdict words come from the
    claim's status, and unresolved -> not applicable is a change although holds stays None."""
    from analysis.compare_report import _verdict

    a = [{"diagram": "d", "id": "c", "holds": None, "status": "unresolved", "p_holds": 0.65}]
    b = [{"diagram": "d", "id": "c", "holds": None, "status": "not applicable"}]
    row = compare_claims(a, b)[0]
    assert (row["status_a"], row["status_b"], row["changed"]) == ("unresolved", "not applicable", True)
    assert _verdict(row["status_a"], row["p_holds_a"], row["in_a"]) == "unresolved (p 0.65)"
    assert compare_claims(a, a)[0]["changed"] is False
    assert compare_claims([{"id": "c", "holds": False}], [])[0]["status_a"] == "does not hold"  # older records


def test_config_differences_are_dotted_keys():
    a = {"training": {"lr": 0.1, "epochs": 5}, "grid": {"load": {"values": [8, 16]}}}
    b = {"training": {"lr": 0.1, "epochs": 6}, "grid": {"load": {"values": [8, 16, 32]}}}
    assert config_differences(a, b) == [("grid.load.values", [8, 16], [8, 16, 32]), ("training.epochs", 5, 6)]


def test_analyze_with_rule_prints_the_change_against_the_labels_it_replaces(tmp_path):
    run = tmp_path / "run"
    write_synthetic_run(str(run))
    first = landscape_in_process("analyze", run)
    assert first.returncode == 0, first.stderr
    assert "phases before → after" not in first.stdout  # nothing to compare with yet
    relabelled = landscape_in_process("analyze", run, "--rule", SYNTHETIC_RULE)
    assert relabelled.returncode == 0, relabelled.stderr
    assert (f"phases before → after (against the labels it replaced, {run}/analysis/cells.parquet): "
            "I 3→3, II 5→5, III 3→2, IV-A 2→3, IV-B 3→3; 1 cell(s) changed phase") in relabelled.stdout
    assert sorted(EXPECTED_PHASES.values()).count("III") == 3  # the "before" side is the default labelling


# ------------------------------------------------------------------------------------------------------------
# The authors' released results (tests/analysis/test_reference.py imports the same archive)


@pytest.fixture(scope="module")
def released_run(tmp_path_factory):
    require_reference_archive()
    out = tmp_path_factory.mktemp("released") / "run"
    import_reference(str(ARCHIVE), str(out))
    return out


def test_released_run_against_its_mc_threshold_2_relabelling(released_run, tmp_path):
    doc = _compare_json(released_run, released_run, "--rule-b", "mc_threshold=2", "--out", tmp_path)
    before, after = _labels(released_run), _labels(released_run, mc_threshold=2)
    expected = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert len(expected) >= 5  # the rule moves real cells on this map (10 with the current rules)
    assert _changed(doc) == expected
    for phase in ("I", "II", "III", "IV-A", "IV-B"):
        assert doc["phase_counts"][phase] == {"a": list(before.values()).count(phase),
                                              "b": list(after.values()).count(phase)}
    assert doc["cells_in_both"] == 210 and (tmp_path / "compare.png").stat().st_size > 0


def test_a_run_with_two_diagrams_is_compared_per_diagram(tmp_path):
    """Two temperature knobs in one run: labelled per diagram, one figure each, named by its knobs."""
    run = tmp_path / "run"
    write_synthetic_run(str(run))
    write_synthetic_run(str(run), temperature_name="learning_rate")
    doc = _compare_json(run, run, "--rule-b", SYNTHETIC_RULE, "--out", tmp_path / "out")
    changed = {(c["temperature_name"], c["load_value"], c["temperature_value"]): (c["phase_a"], c["phase_b"])
               for c in doc["changed_cells"]}
    assert changed == {(t, *cell): phases for t in ("batch_size", "learning_rate")
                       for cell, phases in SYNTHETIC_CHANGED.items()}
    assert sorted(os.path.basename(f) for f in doc["figures"]) == ["compare__width__batch_size.png",
                                                                   "compare__width__learning_rate.png"]
