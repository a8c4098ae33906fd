"""`landscape analyze` on bad input: one clear `error:` line (exit 2), and nothing already written is lost.

Every case runs in-process through click's runner on a synthetic run (no Ray, no training).
"""

from __future__ import annotations

import errno
import os

import pytest

from analysis.phases import PhaseRules
from tests.analysis_synthetic import write_synthetic_run
from tests.helpers import assert_clean_error, landscape_in_process, snapshot


def analyze(*args):
    """`landscape analyze ARGS` through click's runner, answered like a process."""
    return landscape_in_process("analyze", *args)


@pytest.fixture
def analysed_run(tmp_path):
    """A synthetic run with a good analysis already written (the thing a bad re-analysis must not destroy)."""
    run = str(tmp_path / "run")
    write_synthetic_run(run)
    first = analyze(run)
    assert first.returncode == 0, (first.stdout, first.stderr)
    return run


def test_unreadable_models_parts_fail_and_keep_the_earlier_analysis(analysed_run):
    before = snapshot(os.path.join(analysed_run, "analysis"))
    models_dir = os.path.join(analysed_run, "tables", "models")
    parts = sorted(os.listdir(models_dir))
    for name in parts:
        with open(os.path.join(models_dir, name), "wb") as fh:
            fh.write(b"garbage, not parquet")
    proc = analyze(analysed_run)
    assert_clean_error(proc, "nothing to analyse", f"{len(parts)} unreadable", f"landscape resume {analysed_run}")
    assert snapshot(os.path.join(analysed_run, "analysis")) == before


def test_no_model_rows_fail_and_keep_the_earlier_analysis(analysed_run):
    before = snapshot(os.path.join(analysed_run, "analysis"))
    models_dir = os.path.join(analysed_run, "tables", "models")
    for name in os.listdir(models_dir):
        os.remove(os.path.join(models_dir, name))
    proc = analyze(analysed_run)  # the pairs are still there: still nothing to label without models
    assert_clean_error(proc, "nothing to analyse", "no models")
    assert snapshot(os.path.join(analysed_run, "analysis")) == before


def test_models_without_measured_pairs_warn_how_to_get_phases(analysed_run):
    pairs_dir = os.path.join(analysed_run, "tables", "pairs")
    for name in os.listdir(pairs_dir):
        os.remove(os.path.join(pairs_dir, name))
    proc = analyze(analysed_run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    warning = [line for line in proc.stderr.splitlines() if "mode connectivity" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: "), proc.stderr
    assert f"landscape resume {analysed_run}" in warning[0]
    report = open(os.path.join(analysed_run, "analysis", "report.html"), encoding="utf-8").read()
    assert "mode connectivity" in report  # the report says it too, not only the terminal


def test_a_missing_run_directory_creates_nothing(tmp_path):
    missing = tmp_path / "nonexist"
    proc = analyze(str(missing))
    assert_clean_error(proc, str(missing), "does not exist")
    assert not missing.exists()


def test_an_unwritable_analysis_folder_suggests_out_dir(tmp_path, monkeypatch):
    run = str(tmp_path / "ro")
    write_synthetic_run(run)
    real_makedirs = os.makedirs

    def read_only(path, *args, **kwargs):  # a read-only mount, as root sees it too (chmod would not stop root)
        if os.path.abspath(path).startswith(os.path.abspath(run)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", read_only)
    proc = analyze(run)
    assert_clean_error(proc, "cannot write the analysis folder", os.path.join(run, "analysis"),
                       "Read-only file system", "--out DIR")
    assert "[Errno" not in proc.stderr
    monkeypatch.undo()
    elsewhere = str(tmp_path / "elsewhere")
    proc = analyze(run, "--out", elsewhere)  # the suggested fix works (--out-dir, its old name, too)
    assert proc.returncode == 0 and os.path.exists(os.path.join(elsewhere, "report.html")), proc.stderr


@pytest.mark.parametrize("value", ["1e400", ".inf", "-.inf", ".nan"])
def test_non_finite_rules_are_refused_by_name(tmp_path, value):
    run = str(tmp_path / "run")
    write_synthetic_run(run, only=[(8, 16)])
    proc = analyze(run, "--rule", f"mc_threshold={value}")
    assert_clean_error(proc, "mc_threshold", "finite number")
    assert not os.path.exists(os.path.join(run, "analysis"))  # refused before anything is written


@pytest.mark.parametrize("name", ["sharp_loss_ratio", "loss_threshold", "cka_threshold", "cka_min_range"])
def test_every_rule_must_be_finite(name):
    with pytest.raises(ValueError, match=rf"{name}=inf .*finite number"):
        PhaseRules.from_mapping({name: float("inf")})


def test_another_analysis_writing_at_the_same_time_is_not_clobbered(tmp_path):
    """Two `landscape analyze` of one run at once: each writes its own temporary files. The temporary file
    another analysis is still writing (under the fixed names of the old writer) is neither used nor replaced."""
    run = str(tmp_path / "run")
    write_synthetic_run(run, only=[(8, 16), (16, 16)])
    out = os.path.join(run, "analysis")
    os.makedirs(out)
    theirs = {name: f"half of another analysis's {name}".encode() for name in
              ("cells.parquet.tmp", "report.html.tmp", "phase_rules.json.tmp")}
    for name, data in theirs.items():
        with open(os.path.join(out, name), "wb") as fh:
            fh.write(data)
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    files = snapshot(out)
    for name, data in theirs.items():
        assert files[name] == data, name
    assert b"</html>" in files["report.html"] and files["cells.parquet"].startswith(b"PAR1")
    assert not [n for n in files if n.endswith(".tmp") and n not in theirs]  # none of its own left behind


def test_a_copied_part_is_not_counted_as_another_seed(tmp_path):
    """A duplicate of a part (`K (copy).parquet`, what a file manager makes) repeats K's row: left out, with a
    warning, instead of making a third seed of a two-seed cell."""
    import shutil

    import pandas as pd

    from analysis.tables import model_key

    run = str(tmp_path / "run")
    write_synthetic_run(run, only=[(8, 16)])
    models_dir = os.path.join(run, "tables", "models")
    key = model_key("width", 8, "batch_size", 16, 0)
    shutil.copy(os.path.join(models_dir, f"{key}.parquet"), os.path.join(models_dir, f"{key} (copy).parquet"))
    proc = analyze(run)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert f"{key} (copy).parquet" in proc.stderr and "left out" in proc.stderr
    cells = pd.read_parquet(os.path.join(run, "analysis", "cells.parquet"))
    assert cells.n_models.tolist() == [3]  # the synthetic cell's three seeds, not four
