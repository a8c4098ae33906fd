"""The Parquet contract: round trips, one part per key, atomic replacement, clear errors."""

import pandas as pd
import pytest

from analysis.schemas import SCHEMA_VERSION, TableError, field_units
from analysis.tables import RunTables, format_value, model_key, pair_key


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
    assert [k for k, _ in tables.scan("models").unreadable] == [key]
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


def _drop_columns(uri, names):
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(uri).drop_columns(names), uri)


def test_a_column_added_later_reads_as_null_in_older_parts(tmp_path):
    """Reading is additive: a part written before a column existed (here: without weights_sha256, as every
    models part before it was added) is read with that column null, not reported as unreadable, so a resume
    never recomputes a finished run because the schema grew. A column this version does not know is ignored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = RunTables(str(tmp_path))
    old = tables.write_part("models", model_key("width", 8, "batch_size", 16, 0), [_model_row(weights_sha256="ab")])
    _drop_columns(old, ["weights_sha256", "hessian_trace"])
    newer = tables.write_part("models", model_key("width", 8, "batch_size", 16, 1), [_model_row(1)])
    pq.write_table(pq.read_table(newer).append_column("a_future_column", pa.array([1.5])), newer)
    scan = tables.scan("models")
    df, bad = scan.frame, scan.unreadable
    assert bad == [] and len(df) == 2 and "a_future_column" not in df.columns
    assert df.weights_sha256.isna().all() and df.hessian_trace.isna().all()
    assert df.set_index("seed").loc[0, "train_loss"] == 0.5


def test_a_part_without_its_key_columns_is_unreadable(tmp_path):
    tables = RunTables(str(tmp_path))
    uri = tables.write_part("models", "k", [_model_row()])
    _drop_columns(uri, ["seed"])
    assert tables.scan("models").unreadable == [("k", "TableError: missing columns ['seed']")]


def test_a_newer_schema_version_says_to_upgrade(tmp_path):
    tables = RunTables(str(tmp_path))
    tables.write_part("models", "k", [_model_row(schema_version=SCHEMA_VERSION + 1)])
    with pytest.raises(TableError, match="newer landscape wrote it: upgrade"):
        tables.scan("models")


def test_a_failed_write_leaves_no_temporary_file_and_keeps_the_old_part(tmp_path, monkeypatch):
    """A full disk in the middle of writing a part: the error propagates, the half-written temporary file is
    removed, and the part written before stays as it was."""
    import errno

    import pyarrow.parquet as pq

    tables = RunTables(str(tmp_path))
    tables.write_part("models", "k", [_model_row(train_loss=0.5)])
    real = pq.write_table

    def disk_full(table, where, **kwargs):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a part")
        raise OSError(errno.ENOSPC, "No space left on device", where)

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        tables.write_part("models", "k", [_model_row(train_loss=0.25)])
    monkeypatch.setattr(pq, "write_table", real)
    assert sorted(p.name for p in (tmp_path / "tables" / "models").iterdir()) == ["k.parquet"]
    assert tables.read("models").train_loss.tolist() == [0.5]


def test_a_scan_finds_misnamed_and_duplicated_parts(tmp_path):
    import shutil

    tables = RunTables(str(tmp_path))
    k0, k1, k2 = (model_key("width", 8, "batch_size", 16, s) for s in (0, 1, 2))
    for seed, key in ((0, k0), (1, k1)):
        tables.write_part("models", key, [_model_row(seed)])
    folder = tmp_path / "tables" / "models"
    shutil.copy(folder / f"{k0}.parquet", folder / f"{k0} (copy).parquet")  # a duplicate
    shutil.copy(folder / f"{k1}.parquet", folder / f"{k2}.parquet")  # seed 1's row under seed 2's name
    scan = tables.scan("models")
    assert len(scan.frame) == 4 and sorted(set(scan.row_parts)) == sorted([k0, k1, k2, f"{k0} (copy)"])
    assert set(scan.misnamed()) == {f"{k0} (copy)", k2} and k1 in scan.misnamed()[k2]
    assert scan.duplicates() == {f"{k0} (copy)", k2}  # both repeat a row that is stored under its own name
    assert sorted(scan.rows_without(scan.misnamed()).seed) == [0, 1]
