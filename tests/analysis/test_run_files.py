"""analysis.run_files: a run directory's files are read only as regular files, within their size limit."""

from __future__ import annotations

import os

import pytest

from analysis.run_files import SIZE_LIMITS, RunFileError, read_run_file


def test_reads_a_regular_file(tmp_path):
    (tmp_path / "run.json").write_text('{"run_id": "x"}')
    assert read_run_file(str(tmp_path / "run.json"), "json", root=str(tmp_path)) == b'{"run_id": "x"}'


def test_refuses_a_symlink_to_a_secret(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("token")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").symlink_to(secret)
    with pytest.raises(RunFileError, match="symbolic link"):
        read_run_file(str(run / "config.yaml"), "config", root=str(run))


def test_refuses_a_device_behind_a_symlink_and_a_fifo(tmp_path):
    (tmp_path / "provenance.json").symlink_to("/dev/zero")
    with pytest.raises(RunFileError, match="symbolic link"):
        read_run_file(str(tmp_path / "provenance.json"), "json")
    os.mkfifo(tmp_path / "run.json")
    with pytest.raises(RunFileError, match="FIFO"):
        read_run_file(str(tmp_path / "run.json"), "json")  # returns at once: O_NONBLOCK, no writer needed


def test_refuses_a_linked_folder_and_a_path_outside(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.parquet").write_bytes(b"x")
    run = tmp_path / "run"
    (run / "tables").mkdir(parents=True)
    (run / "tables" / "models").symlink_to(elsewhere)
    with pytest.raises(RunFileError, match="symbolic link"):
        read_run_file(str(run / "tables" / "models" / "a.parquet"), "table", root=str(run))
    with pytest.raises(RunFileError, match="outside the run directory"):
        read_run_file(str(run / ".." / "elsewhere" / "a.parquet"), "table", root=str(run))


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    monkeypatch.setitem(SIZE_LIMITS, "json", 10)
    (tmp_path / "big.json").write_bytes(b"x" * 11)
    with pytest.raises(RunFileError, match="over the"):
        read_run_file(str(tmp_path / "big.json"), "json")
    (tmp_path / "ok.json").write_bytes(b"x" * 10)
    assert read_run_file(str(tmp_path / "ok.json"), "json") == b"x" * 10


def test_missing_file_and_unknown_kind(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_run_file(str(tmp_path / "nope.json"), "json")
    with pytest.raises(ValueError, match="unknown kind"):
        read_run_file(str(tmp_path / "nope.json"), "pickle")
