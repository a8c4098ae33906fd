"""The Python API (`import landscape`): a sweep run, resumed and read from Python, its errors raised (never an
exit), and a researcher's own analysis.py in the working directory changing nothing.

Ray starts in one test only (a subprocess: a fresh interpreter outside the repository, as a researcher's script);
everything else reads synthetic runs or fails before Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

import landscape
from landscape.columns import with_knob_columns
from tests.analysis_synthetic import BATCHES, WIDTHS, write_synthetic_run
from tests.helpers import assert_clean_error, hygienic_env, landscape_in_process
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
# A researcher's own analysis.py, as it sits beside their notebooks: it must never be imported in the tool's place.
USER_ANALYSIS = "import pandas as pd\n\n\ndef summarize(df):\n    return df.describe()\n"


def python_in(folder, code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -c CODE`` run in ``folder``: Python puts that folder first on sys.path, as for a script there."""
    env = env or {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_importing_landscape_loads_neither_ray_nor_torch(tmp_path):
    """A notebook that only reads runs pays for neither (Ray is started by run and resume only)."""
    proc = python_in(tmp_path, "import sys, landscape\nprint(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------
# Reading a run


def test_a_run_reads_as_dataframes_with_the_knobs_own_columns(tmp_path):
    write_synthetic_run(str(tmp_path / "run"))
    run = landscape.load_run(tmp_path / "run")
    models = run.models
    assert len(models) == len(WIDTHS) * len(BATCHES) * 3
    assert (models["width"] == models["load_value"]).all() and (models["batch_size"] == models["temperature_value"]).all()
    assert str(models["width"].dtype) == "Int64" and str(models["batch_size"].dtype) == "Int64"
    cols = list(models.columns)
    assert cols.index("width") == cols.index("load_value") + 1  # beside the generic columns
    assert run.config is None  # a synthetic run has no config.yaml
    with pytest.raises(landscape.LandscapeError, match=r"no analysis yet .*run.analyze\(\)"):
        run.cells
    assert run.analyze() is run
    cells = run.cells
    assert len(cells) == len(WIDTHS) * len(BATCHES)
    assert not cells.duplicated(["width", "batch_size"]).any()
    assert set(cells["width"]) == set(WIDTHS) and set(cells["batch_size"]) == set(BATCHES)
    claims = landscape.load_run(tmp_path / "run").claims
    assert isinstance(claims, pd.DataFrame) and len(claims) > 0
    assert {"id", "claim", "holds", "summary"} <= set(claims.columns)


def test_several_knobs_on_one_axis_each_get_their_column():
    df = pd.DataFrame({"load_name": ["width", "width", "label_noise"], "load_value": [8.0, 64.0, 0.2],
                       "temperature_name": ["batch_size"] * 3, "temperature_value": [32.0, 32.0, 256.0],
                       "lr": [0.1, 0.1, 0.1]})
    out = with_knob_columns(df)
    assert list(out.columns) == ["load_name", "load_value", "width", "label_noise", "temperature_name",
                                 "temperature_value", "batch_size", "lr"]
    assert out["width"].tolist()[:2] == [8, 64] and pd.isna(out["width"][2])
    assert out["label_noise"].isna().tolist() == [True, True, False] and out["label_noise"][2] == 0.2
    assert str(out["label_noise"].dtype) == "float64"
    assert list(with_knob_columns(df.iloc[:0]).columns) == list(df.columns)  # no rows: no knob columns


def test_reading_what_is_not_a_run_raises_the_packages_error(tmp_path):
    with pytest.raises(landscape.InputError, match="is not a run directory"):
        landscape.load_run(tmp_path)
    write_synthetic_run(str(tmp_path / "run"))
    with pytest.raises(landscape.InputError, match="has no training history"):
        landscape.load_run(tmp_path / "run").plot("width=8,batch_size=16")
    with pytest.raises(landscape.InputError, match="width"):
        landscape.load_run(tmp_path / "run").plot({"width": 3, "batch_size": 16})


# ---------------------------------------------------------------------------------------------------------
# Failing before Ray: raised, never an exit, nothing written


@pytest.mark.parametrize("config, overrides, fragment", [
    ("no-such-config", (), "neither a built-in config nor an existing file"),
    ("smoke", {"training.epochs": -1}, "training.epochs"),
    ("smoke", ["training.epochz=3"], "epochz"),
    ({"name": "x"}, (), "load.name"),
])
def test_a_config_that_fails_validation_raises_an_input_error(tmp_path, config, overrides, fragment):
    out = tmp_path / "run"
    with pytest.raises(landscape.InputError, match=fragment) as info:
        landscape.run(config, out=out, overrides=overrides)
    assert isinstance(info.value, landscape.LandscapeError) and "\n" not in str(info.value)
    assert not out.exists()


def test_resuming_what_is_not_a_run_raises_an_input_error(tmp_path):
    with pytest.raises(landscape.InputError, match="not a run directory"):
        landscape.resume(tmp_path / "nothing")


def test_a_run_into_somebody_elses_folder_raises_and_keeps_their_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(landscape.InputError, match="is not empty"):
        landscape.run("smoke", out=tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_mapping_overrides_keep_their_types():
    from landscape.sweeps import override_items

    from orchestrator.config import apply_overrides

    items = override_items({"training.lr": 1e-5, "seeds": [0, 1], "description": "a: b", "run.storage": None})
    raw = apply_overrides({}, items)
    assert raw == {"training": {"lr": 1e-5}, "seeds": [0, 1], "description": "a: b", "run": {"storage": None}}


# ---------------------------------------------------------------------------------------------------------
# A researcher's analysis.py in the working directory


def test_a_users_analysis_py_in_the_working_directory_changes_nothing(tmp_path):
    (tmp_path / "analysis.py").write_text(USER_ANALYSIS)
    write_synthetic_run(str(tmp_path / "run"))
    proc = python_in(tmp_path, textwrap.dedent("""
        import sys
        assert sys.path[0] == ""  # this folder first, before the tool's own
        import landscape, analysis.tables
        from orchestrator.cli.main import main
        print(analysis.__file__)
        print(len(landscape.load_run("run").models))
        sys.argv = ["landscape", "validate", "smoke"]
        main()
    """))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == os.path.join(ROOT, "analysis", "__init__.py"), lines
    assert lines[1] == str(len(WIDTHS) * len(BATCHES) * 3)
    assert lines[2].startswith("ok: smoke:") and "Traceback" not in proc.stderr, proc.stderr


def test_a_plug_in_named_like_one_of_the_tools_packages_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "analysis.py").write_text(USER_ANALYSIS + "\n\ndef build(*, width, num_classes, input_shape):\n"
                                          "    raise AssertionError('never imported')\n")
    monkeypatch.chdir(tmp_path)
    proc = landscape_in_process("validate", "smoke", "--set", "workload.model=analysis:build")
    assert_clean_error(proc, "'analysis:build'", str(tmp_path / "analysis.py"), "landscape's own package 'analysis'",
                       "rename your module")
    with pytest.raises(landscape.InputError, match="landscape's own package 'analysis'"):
        landscape.run("smoke", out=tmp_path / "run", overrides={"workload.model": "analysis:build"})
    # The tool's own modules stay reachable by reference, and without a clashing file nothing changes.
    (tmp_path / "analysis.py").unlink()
    assert landscape_in_process("validate", "smoke", "--set", "workload.model=workloads.models:build_mlp",
                                "--set", "workload.model_args={}").returncode == 0


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_sweep_from_python_raises_when_incomplete_then_resumes_and_reads(tmp_path, ray_tmpdir):
    """One fresh interpreter outside the repository, in a folder holding the researcher's analysis.py: a smoke
    sweep with one job made to fail raises SweepIncomplete (the interpreter goes on), resume finishes it, and
    the run reads back with the knobs' columns, cells and claims. Nothing is printed."""
    from orchestrator.rundir.fault_hook import FAULT_INJECT_ENV

    (tmp_path / "analysis.py").write_text(USER_ANALYSIS)
    failing = "width=64__batch_size=256__seed=1"
    (tmp_path / "faults.json").write_text(json.dumps({"crash": [{"key": failing, "mode": "raise"}]}))
    (tmp_path / "study.py").write_text(textwrap.dedent(f"""
        import json, os, sys
        import landscape

        out = {{}}
        try:
            landscape.run("smoke", out="run", overrides={{"run.max_failures": 0}})
        except landscape.SweepIncomplete as exc:
            out["incomplete"] = [type(exc).__name__, str(exc), isinstance(exc, landscape.LandscapeError)]
        del os.environ[{FAULT_INJECT_ENV!r}]
        run = landscape.resume("run")
        cells = run.cells
        out["cells"] = cells[["width", "batch_size", "phase"]].astype(str).values.tolist()
        out["log"] = [text for _, text in run.log]
        loaded = landscape.load_run("run")
        out["claims"] = [type(loaded.claims).__name__, len(loaded.claims)]
        models = loaded.models
        out["models"] = [len(models), sorted(set(models.status)), sorted(set(models.width.astype(int))),
                         sorted(set(models.batch_size.astype(int))), int(models.weight_spectral_norm.notna().sum())]
        out["analysis"] = sys.modules["analysis"].__file__
        out["plot"] = os.path.basename(loaded.plot({{"width": 64, "batch_size": 32}}))
        out["relabelled"] = sorted(set(loaded.analyze(rules={{"mc_threshold": 50.0}}).cells.connectivity_class))
        print("RESULT " + json.dumps(out))
    """))
    env = hygienic_env(ray_tmpdir, PYTHONPATH=ROOT, **{FAULT_INJECT_ENV: str(tmp_path / "faults.json")})
    proc = subprocess.run([sys.executable, "study.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1700)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result_lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(result_lines) == 1, proc.stdout[-3000:]
    out = json.loads(result_lines[0][len("RESULT "):])
    kind, message, is_landscape_error = out["incomplete"]
    assert kind == "SweepIncomplete" and is_landscape_error
    assert message.startswith("sweep incomplete: ") and "landscape resume" in message, message
    assert sorted((w, b) for w, b, _ in out["cells"]) == sorted((str(w), str(b)) for w in (8, 64) for b in (32, 256))
    assert out["models"] == [8, ["ok"], [8, 64], [32, 256], 8]
    assert out["claims"][0] == "DataFrame" and out["claims"][1] > 0
    assert out["analysis"] == os.path.join(ROOT, "analysis", "__init__.py")
    assert any(line.startswith("sweep finished") for line in out["log"]), out["log"]
    assert out["plot"] == "training__width=64__batch_size=32.png" and out["relabelled"] == ["well"]
    # Nothing of the sweep's own output was printed (Ray's and Tune's loggers are theirs): it is in Run.log.
    printed = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if not line.startswith("RESULT "))
    for line in ("sweep finished", "landscape smoke:", "models 8/8", "sweep incomplete", "[8/8 models]"):
        assert line not in printed, (line, printed[-3000:])


def test_readmes_python_example_uses_only_what_the_api_has():
    """README's example (run in substance by the test above: run, cells, claims, analyze, plot, load_run,
    resume) names only functions and attributes the API has."""
    import ast
    import re

    with open(os.path.join(ROOT, "README.md")) as f:
        match = re.search(r"### From Python\n.*?```python\n(.*?)```", f.read(), re.S)
    assert match, "README.md has no Python example under 'From Python'"
    tree = ast.parse(match.group(1))
    used = {(node.value.id, node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)}
    assert {("landscape", "run"), ("landscape", "load_run"), ("landscape", "resume"), ("run", "cells")} <= used
    for owner, attr in used:
        target = landscape if owner == "landscape" else landscape.Run if owner == "run" else None
        if target is not None:
            assert hasattr(target, attr), f"README uses {owner}.{attr}, which the API does not have"


def test_compare_from_python_lists_the_cells_a_rule_moves(tmp_path):
    """landscape.compare is `landscape compare`: a run against its relabelling changes exactly the cells whose
    label differs between the two analyses, and its text is the command line's."""
    write_synthetic_run(str(tmp_path / "run"))
    run = landscape.load_run(tmp_path / "run")
    default = run.analyze(out_dir=str(tmp_path / "a")) and pd.read_parquet(tmp_path / "a" / "cells.parquet")
    run.analyze(rules={"mc_threshold": 4.5}, out_dir=str(tmp_path / "b"))
    relabelled = pd.read_parquet(tmp_path / "b" / "cells.parquet")
    moved = default.merge(relabelled, on=["load_value", "temperature_value"], suffixes=("_a", "_b"))
    moved = moved[moved["phase_a"] != moved["phase_b"]]
    assert len(moved) > 0, "the rule must move some cell, or this test shows nothing"
    cmp = landscape.compare(run, tmp_path / "run", rules_b={"mc_threshold": 4.5}, bootstrap_draws=0)
    changed = cmp.changed
    assert sorted(zip(changed["load_value"], changed["temperature_value"])) == \
        sorted(zip(moved["load_value"], moved["temperature_value"]))
    assert "mc_threshold 1 → 4.5" in cmp.text() and len(cmp.to_json()["changed_cells"]) == len(moved)
    with pytest.raises(landscape.InputError):
        landscape.compare(tmp_path / "run", tmp_path / "nothing-here")
