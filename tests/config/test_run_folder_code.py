"""A shared run folder must not run code on the machine of whoever reads it (issue #18, items 1, 8 and 9).

Somebody with write access to a run folder can put anything in its config.yaml (a dataset, model, metric or probe
maker named as ``module:function``, loggers) and a ``module.py`` beside it. The commands that only read
(status, analyze, plot, the --out checks of run) import and call none of it; resume says which modules it will
import and from where before importing any, looks for them neither in the working directory nor in the run
folder unless told (--code-dir), and leaves off loggers that would send data off the machine unless --log asks.
Through the CLI as a user runs it (in process: none of these commands gets as far as starting Ray).
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import yaml

from orchestrator.config.run_config import load_run_config
from tests.analysis_synthetic import BATCHES, SEEDS, WIDTHS, write_synthetic_run
from tests.helpers import assert_clean_error, landscape_in_process

MODULE = "evilcode"  # the module every reference of the crafted config names

# Writes a marker when imported and when any of its functions is called; its metric spec is a valid MetricSpec.
EVIL_SOURCE = textwrap.dedent("""
    import os
    MARKERS = {markers!r}

    def _mark(what):
        with open(os.path.join(MARKERS, what), "w") as f:
            f.write(what)

    _mark("imported-from-" + os.path.basename(os.path.dirname(os.path.abspath(__file__))))
    print("IMPORTED-EVILCODE")

    def data(*, root, seed):
        _mark("dataset-called")

    def build(*, width, num_classes, input_shape):
        _mark("model-called")

    def probes(train_x, *, num, seed):
        _mark("probes-called")

    from workloads.metric_specs import MetricSpec
    SPEC = MetricSpec("evil_metric", "model", "", "a metric whose module marks its import",
                      compute="evilcode:measure")

    def measure(model, data):
        _mark("metric-called")
        return 0.0
""")


def crafted_config(**changes) -> dict:
    """A run's config.yaml over the synthetic run's grid, naming the module in every place code can be named."""
    raw = {
        "name": "shared-run",
        "workload": {"dataset": f"{MODULE}:data", "model": f"{MODULE}:build"},
        "load": {"name": "width", "values": WIDTHS},
        "temperature": {"name": "batch_size", "values": BATCHES},
        "seeds": SEEDS,
        "metrics": {"cka_probe_maker": f"{MODULE}:probes", "extra": [f"{MODULE}:SPEC"]},
    }
    for dotted, value in changes.items():
        node = raw
        *path, last = dotted.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """(run folder with results and the crafted config, a folder of the user's holding the module too, the
    markers folder). Neither folder is on sys.path; the module is not imported yet."""
    run, elsewhere, markers = tmp_path / "run", tmp_path / "elsewhere", tmp_path / "markers"
    for folder in (elsewhere, markers):
        folder.mkdir()
    write_synthetic_run(str(run))
    (run / "config.yaml").write_text(yaml.safe_dump(crafted_config()))
    for folder in (run, elsewhere):
        (folder / f"{MODULE}.py").write_text(EVIL_SOURCE.format(markers=str(markers)))
    # "" is the working directory ("python -m pytest" puts it first): the folders a test moves to must not be on it.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(run), str(elsewhere))])
    sys.modules.pop(MODULE, None)
    yield run, elsewhere, markers
    sys.modules.pop(MODULE, None)


def no_markers(markers) -> None:
    assert sorted(os.listdir(markers)) == [], "code named by the run folder's config ran"
    assert MODULE not in sys.modules


# Everything named by the module, or (issue #18's 1b) a built-in workload with only metrics.extra naming it: a
# config without other user code used to be validated in full, which imported metrics.extra.
ONLY_METRICS = {"workload.dataset": "mnist1d", "workload.model": "mlp", "metrics.cka_probe_maker": "mixup"}


@pytest.mark.parametrize("names", ["everything", "metrics.extra only"])
@pytest.mark.parametrize("where", ["run", "elsewhere"])
def test_read_only_commands_import_and_call_nothing_the_run_folder_names(shared, monkeypatch, where, names):
    """status, analyze, plot and run --out, from inside the run folder (its module.py beside config.yaml) and
    from a folder of the user's that holds the module too: no marker."""
    run, elsewhere, markers = shared
    if names != "everything":
        (run / "config.yaml").write_text(yaml.safe_dump(crafted_config(**ONLY_METRICS)))
    # The rows carry this config's hash, as a run's do (analyze leaves out rows of other settings); the hash is
    # computed from the config as data (nothing imported: the markers below check it).
    write_synthetic_run(str(run), config_hash=load_run_config(str(run)).config_hash())
    monkeypatch.chdir(run if where == "run" else elsewhere)

    status = landscape_in_process("status", str(run))
    # The synthetic rows have no weights files: status says so (exit 1), and that is its only problem.
    assert status.returncode == 1 and status.stderr.startswith("problem: 48 finished model(s) without usable "
                                                               "weights"), status.stderr
    assert "stage 1 models: 48 expected · 48 ok" in status.stdout, status.stdout
    assert f"metrics.extra ['{MODULE}:SPEC']: not checked" in status.stdout  # said, not imported
    no_markers(markers)

    analyze = landscape_in_process("analyze", str(run), "--out-dir", str(run.parent / "analysis"))
    assert analyze.returncode == 0, analyze.stderr
    assert (run.parent / "analysis" / "report.html").exists()
    no_markers(markers)

    plot = landscape_in_process("plot", str(run), "--cell", "width=8,batch_size=16")
    # The synthetic run has no training history: one clear error, after reading the tables.
    assert_clean_error(plot, "no training history")
    no_markers(markers)

    out = landscape_in_process("run", "smoke", "--out", str(run), "--no-analysis")
    assert_clean_error(out, f"--out {run} is a run of another config ('shared-run')")
    no_markers(markers)
    saved = crafted_config(**(ONLY_METRICS if names != "everything" else {}))
    assert yaml.safe_load((run / "config.yaml").read_text()) == saved  # nothing of the folder changed


def test_status_with_recorded_facts_reports_missing_added_metrics_without_importing(shared):
    """A run's RUN_DIR/facts.json (written by run and resume) gives status the added metrics' names as data:
    the ok models lacking evil_metric are reported as to be measured, and nothing is imported."""
    import json
    import zipfile

    from analysis.tables import RunTables
    from orchestrator.planning.run_facts import FORMAT, VERSION

    run, _, markers = shared
    (run / "models").mkdir()
    for key in RunTables(str(run)).part_keys("models"):  # weights files, as a finished run has them
        with zipfile.ZipFile(run / "models" / f"{key}.pt", "w"):
            pass
    (run / "facts.json").write_text(json.dumps({
        "format": FORMAT, "version": VERSION, "dataset": f"{MODULE}:data", "model": f"{MODULE}:build",
        "train_size": 1000, "input_shape": [5], "num_classes": 3, "parameters": {"8": 100, "64": 5000},
        "added_metrics": ["weight_spectral_norm", "evil_metric"]}))
    status = landscape_in_process("status", str(run))
    assert status.returncode == 0, status.stderr
    assert "48 ok model(s) lack an added metric" in status.stdout, status.stdout
    assert "not checked" not in status.stdout
    no_markers(markers)


def test_a_dataset_naming_a_library_function_empties_no_file(tmp_path, monkeypatch):
    """The reproduction of #18: dataset logging:basicConfig with dataset_args that open a file for writing.
    status leaves the file alone; resume says what it would import and refuses the standard library."""
    precious = tmp_path / "precious.txt"
    precious.write_text("finished work\n")
    run = tmp_path / "run"
    run.mkdir()
    raw = crafted_config(**{"workload.dataset": "logging:basicConfig",
                            "workload.dataset_args": {"filename": str(precious), "filemode": "w", "force": True},
                            "workload.model": "mlp", "metrics": {}})
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(run)

    status = landscape_in_process("status", ".")
    assert status.returncode == 0, status.stderr
    assert "48 missing" in status.stdout
    assert precious.read_text() == "finished work\n"

    resume = landscape_in_process("resume", ".")
    assert "workload.dataset 'logging:basicConfig': module logging of Python's standard library" in resume.stdout
    assert_clean_error(resume, "workload.dataset", "names Python's standard library (logging)")
    assert precious.read_text() == "finished work\n"


def test_resume_names_the_modules_it_will_import_before_importing_and_only_from_code_dir(shared, monkeypatch):
    """Without --code-dir the module beside config.yaml (and in the working directory) is not imported: the
    notice says where resume looks; with --code-dir the notice names the file, and the import comes after it."""
    run, elsewhere, markers = shared
    raw = crafted_config(**{"workload.dataset": "mnist1d", "metrics": {}})
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    for cwd in (run, elsewhere):
        monkeypatch.chdir(cwd)
        proc = landscape_in_process("resume", str(run))
        assert f"workload.model '{MODULE}:build': module {MODULE}: not found" in proc.stdout, proc.stdout
        assert_clean_error(proc, f"no module named '{MODULE}'", "--code-dir")
        no_markers(markers)

    proc = landscape_in_process("resume", str(run), "--code-dir", str(elsewhere))
    notice = f"workload.model '{MODULE}:build': module {MODULE} from {elsewhere / (MODULE + '.py')}"
    assert notice in proc.stdout and "IMPORTED-EVILCODE" in proc.stdout, proc.stdout
    assert proc.stdout.index("note: resume imports and runs the code that") < proc.stdout.index(notice) \
        < proc.stdout.index("IMPORTED-EVILCODE")
    # Its build returns no model: one error, after the import (and the call) that the notice announced.
    assert_clean_error(proc, "workload.model", "returned a NoneType, not a torch.nn.Module")
    assert sorted(os.listdir(markers)) == ["imported-from-elsewhere", "model-called"]
    assert str(elsewhere) not in sys.path  # --code-dir is on sys.path while resume runs only


def test_resume_leaves_off_a_logger_that_sends_data_away_unless_asked_on_its_command_line(tmp_path, monkeypatch):
    """The run's config lists wandb: resume says it leaves it off; --log wandb asks for it (checked: here the
    wandb package is not installed, which is the error that proves it is in the list)."""
    import importlib.util

    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    raw = crafted_config(**{"workload.dataset": "mnist1d", "workload.model": "mlp", "metrics": {},
                            "logging": ["tensorboard", "wandb"]})
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    # A changed training setting stops resume after its logger choice and before Ray starts.
    proc = landscape_in_process("resume", str(run), "--set", "training.epochs=3")
    assert "turns on wandb, which would send this sweep's data off this machine: left off for this resume " \
           "(add --log wandb to use it)" in proc.stdout, proc.stdout
    assert_clean_error(proc, "other training/metric settings")
    asked = landscape_in_process("resume", str(run), "--log", "wandb", "--set", "training.epochs=3")
    assert "left off" not in asked.stdout
    if importlib.util.find_spec("wandb") is None:
        assert_clean_error(asked, "wandb needs the wandb package")
    else:  # pragma: no cover - a machine with wandb: the logger is kept and the run stops at the same place
        assert_clean_error(asked, "other training/metric settings")


def test_loggers_for_resume_keep_local_loggers_and_drop_remote_ones(monkeypatch):
    from orchestrator.driver.loggers import loggers_for_resume

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    saved = ("tensorboard", "wandb", "mlflow")
    # mlflow to RUN_DIR/mlruns stays; wandb goes unless asked.
    assert loggers_for_resume(saved, (), "/runs/x") == (("tensorboard", "mlflow"), ("wandb",))
    assert loggers_for_resume(saved, ("wandb",), "/runs/x") == (("tensorboard", "wandb", "mlflow"), ())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org")
    assert loggers_for_resume(saved, (), "/runs/x") == (("tensorboard",), ("wandb", "mlflow"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///tmp/mlflow.db")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert loggers_for_resume(saved, (), "/runs/x") == (saved, ())


@pytest.mark.parametrize("command", ["status", "resume", "analyze", "run"])
def test_an_oversized_or_linked_config_is_one_error_line(tmp_path, command):
    """Item 9 (in part): a 40 MB config.yaml is refused from its size (not parsed: it took 20 s and 750 MB), a
    symlinked one is not followed; each one error line naming the file."""
    big, linked = tmp_path / "big", tmp_path / "linked"
    big.mkdir()
    linked.mkdir()
    with open(big / "config.yaml", "w") as f:
        f.write("name: big\ndescription: '")
        f.write("x" * (40 * 1024 * 1024))
        f.write("'\n")
    (tmp_path / "elsewhere.yaml").write_text(yaml.safe_dump(crafted_config()))
    (linked / "config.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    for folder, fragment in ((big, "40.0 MiB, over the 1 MiB"), (linked, "is a symbolic link")):
        args = ("run", "smoke", "--out", str(folder)) if command == "run" else (command, str(folder))
        proc = landscape_in_process(*args)
        if command == "analyze":  # the analysis reads the tables first: no tables, one error, config unread
            assert_clean_error(proc)
        else:
            assert_clean_error(proc, "config.yaml", fragment)


def test_recorded_facts_are_read_back_only_as_the_data_run_writes(tmp_path):
    """RUN_DIR/facts.json round-trips what run measured; anything else in it (other types, absurd sizes, another
    workload, a symlink, a huge file) is ignored, and the assumed facts need no code."""
    import json

    from orchestrator.config import load_config
    from orchestrator.planning.run_facts import assumed, for_reading, measure, record, recorded, to_json

    cfg = load_config("smoke", check_data=False)
    run = tmp_path / "run"
    run.mkdir()
    assert recorded(str(run), cfg) is None and for_reading(str(run), cfg).source == "assumed"
    facts = measure(cfg)
    record(str(run), facts, cfg)
    back = recorded(str(run), cfg)
    assert back is not None and back.source == "recorded"
    assert (back.train_size, back.input_shape, back.num_classes, back.parameters, back.added_metrics) == \
        (facts.train_size, facts.input_shape, facts.num_classes, facts.parameters, facts.added_metrics)
    good = json.loads(to_json(facts, cfg))
    for change in ({"train_size": "4000"}, {"train_size": True}, {"train_size": 10**13}, {"input_shape": []},
                   {"input_shape": [40] * 9}, {"parameters": {"w": 5}}, {"parameters": {"8": -1}},
                   {"added_metrics": [{"name": 1}]}, {"model": "other:build"}, {"version": 2}):
        (run / "facts.json").write_text(json.dumps({**good, **change}))
        assert recorded(str(run), cfg) is None, change
    (run / "facts.json").write_text("[" * 100_000)  # nested too deeply for json
    assert recorded(str(run), cfg) is None
    (run / "facts.json").unlink()
    (tmp_path / "elsewhere.json").write_bytes(to_json(facts, cfg))
    (run / "facts.json").symlink_to(tmp_path / "elsewhere.json")
    assert recorded(str(run), cfg) is None
    guess = assumed(cfg)
    assert (guess.train_size, guess.input_shape, guess.num_classes) == (4000, (40,), 10)  # mnist1d, known
    assert guess.params(64) == 4 * guess.params(32)
