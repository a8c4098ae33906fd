"""The Parquet contract: round trips, one part per key, atomic replacement, clear errors."""

import pandas as pd
import pytest

from analysis.tables import (
    SCHEMA_VERSION,
    RunTables,
    TableError,
    field_units,
    format_value,
    model_key,
    pair_key,
)


def _model_row(seed=0, **kw):
    row = dict(
        run_id="r1", config_hash="abc", package_version="0.1.0", library_versions="{}",
        load_name="width", load_value=8.0, temperature_name="batch_size", temperature_value=16.0,
        seed=seed, status="ok", train_loss=0.5, train_acc=0.9, test_loss=0.7, test_acc=0.8,
    )
    row.update(kw)
    return row


def test_round_trip_and_one_part_per_key(tmp_path):
    tables = RunTables(str(tmp_path))
    for seed in (0, 1):
        tables.write_part("models", model_key("width", 8, "batch_size", 16, seed), [_model_row(seed)])
    # Re-running a key replaces its part instead of adding a row.
    tables.write_part("models", model_key("width", 8, "batch_size", 16, 1), [_model_row(1, train_loss=0.25)])
    df = tables.read("models")
    assert len(df) == 2
    assert df.set_index("seed").loc[1, "train_loss"] == 0.25
    assert (df["schema_version"] == SCHEMA_VERSION).all()
    assert df["hessian_trace"].isna().all()  # columns not given are null, not missing


def test_empty_table_has_the_schema_columns(tmp_path):
    df = RunTables(str(tmp_path)).read("pairs")
    assert df.empty and "mode_connectivity" in df.columns


def test_unknown_column_is_an_error_not_silently_dropped(tmp_path):
    with pytest.raises(TableError, match="no column"):
        RunTables(str(tmp_path)).write_part("models", "k", [_model_row(train_los=1.0)])


def test_truncated_part_is_reported_with_the_fix(tmp_path):
    tables = RunTables(str(tmp_path))
    key = model_key("width", 8, "batch_size", 16, 0)
    uri = tables.write_part("models", key, [_model_row()])
    tables.write_part("models", model_key("width", 8, "batch_size", 16, 1), [_model_row(1)])
    data = open(uri, "rb").read()
    open(uri, "wb").write(data[: len(data) // 2])
    with pytest.raises(TableError, match="resume"):
        tables.read("models")
    assert [k for k, _ in tables.corrupt_parts("models")] == [key]
    assert len(tables.read("models", on_corrupt="skip")) == 1


def test_no_temporary_files_left_behind(tmp_path):
    tables = RunTables(str(tmp_path))
    tables.write_part("models", "k", [_model_row()])
    assert sorted(p.name for p in (tmp_path / "tables" / "models").iterdir()) == ["k.parquet"]


def test_other_schema_version_is_refused(tmp_path):
    tables = RunTables(str(tmp_path))
    tables.write_part("models", "k", [_model_row(schema_version=SCHEMA_VERSION + 1)])
    with pytest.raises(TableError, match="schema version"):
        tables.read("models")


def test_keys_are_filename_safe_and_distinct():
    assert format_value(16.0) == "16" and format_value(0.0015625) == "0.0015625"
    assert model_key("width", 8, "batch_size", 16, 2) == "width=8__batch_size=16__seed=2"
    assert pair_key("width", 8, "batch_size", 16, 3, 1) == pair_key("width", 8, "batch_size", 16, 1, 3)
    assert model_key("label_noise", 0.1, "learning_rate", 0.2, 0) != model_key("label_noise", 0.1, "learning_rate", 0.25, 0)


def test_units_come_from_field_metadata():
    units = field_units("pairs")
    assert units["mode_connectivity"] == "percentage points"
    assert field_units("curves")["train_error"] == "percent"


def test_unknown_table_names_the_known_ones(tmp_path):
    with pytest.raises(TableError, match="models"):
        RunTables(str(tmp_path)).read("modles")
