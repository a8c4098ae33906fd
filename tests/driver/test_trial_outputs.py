"""What Tune's own tools see of a sweep (orchestrator/worker/trial_outputs.py): trials named by what they train, one
curve per model of a cohort, each member's hyperparameters and final metrics, and a tune folder that
tune.ExperimentAnalysis reads.

The end-to-end test runs `landscape run smoke --log tensorboard` (1 epoch, cohorts as `auto` makes them; Tune's
JSON files are on by default) and reads the result back with TensorBoard's event reader and Tune's
ExperimentAnalysis, checking every number against the run's tables.
"""

from __future__ import annotations

import glob
import math
import os
import re
import subprocess

import pytest

from analysis.tables import RunTables
from orchestrator.config import load_config
from orchestrator.planning.jobs import model_job, pair_job
from orchestrator.worker.trial_outputs import (MAX_DIRNAME, TrialNamer, dirname_of, final_member_metrics, member_hparams,
                                        member_labels, seed_ranges, trial_name)
from tests.helpers import assert_clean_error, hygienic_env, landscape_cmd, landscape_in_process

MLFLOW_METRIC_NAME = re.compile(r"^[/\w.\- ]*$")  # what MLflow accepts in a metric or param name


@pytest.fixture(scope="module")
def smoke():
    return load_config("smoke", [])


def test_trials_are_named_by_the_knob_values_and_seeds_they_train(smoke):
    cohort = model_job(smoke, [[64, 32, s] for s in range(5)])
    assert trial_name(smoke, cohort) == "model width=64,batch_size=32,seeds=0-4"
    assert trial_name(smoke, model_job(smoke, [(64, 32, 3)])) == "model width=64,batch_size=32,seed=3"
    assert trial_name(smoke, pair_job(smoke, [(64, 32, 1, 0)])) == "pair width=64,batch_size=32,seeds=0-1"
    pairs = pair_job(smoke, [[8, 256, 1, 2], [8, 256, 0, 1], [8, 256, 0, 2]])
    assert trial_name(smoke, pairs) == "pair width=8,batch_size=256,pairs=0-1+0-2+1-2"
    mixed = model_job(smoke, [[8, 32, 0], [8, 256, 0], [8, 32, 2]])
    assert trial_name(smoke, mixed) == "model width=8,batch_size=32+256,seeds=0+2"
    assert seed_ranges([7, 0, 1, 2, 4, 6]) == "0-2+4+6-7"


def test_a_trial_folder_is_safe_short_and_never_shared(smoke):
    assert dirname_of("model width=64,batch_size=32,seeds=0-4") == "model_width=64,batch_size=32,seeds=0-4"
    assert dirname_of("model a/b=..\\x") == "model_a_b=.._x"
    long_a, long_b = "model " + "w" * 300 + "a", "model " + "w" * 300 + "b"
    assert len(dirname_of(long_a)) == MAX_DIRNAME and dirname_of(long_a) != dirname_of(long_b)

    class Trial:
        def __init__(self, trial_id, config):
            self.trial_id, self.config = trial_id, config

    namer = TrialNamer(smoke)
    first, again = Trial("t1", model_job(smoke, [(8, 32, 0)])), Trial("t2", model_job(smoke, [(8, 32, 0)]))
    assert namer.dirname(first) == "model_width=8,batch_size=32,seed=0"
    assert namer.dirname(first) == namer.dirname(first)  # Tune may ask twice: the same answer
    assert namer.dirname(again).startswith("model_width=8,batch_size=32,seed=0~")  # a name taken: another folder
    assert namer.name(again) == "model width=8,batch_size=32,seed=0"


def test_each_member_has_its_own_label_and_hyperparameters(smoke):
    cohort = model_job(smoke, [[64, 32, 0], [64, 32, 3]])
    assert member_labels(smoke, cohort) == ["seed_0", "seed_3"]
    mixed = model_job(smoke, [[64, 32, 0], [64, 256, 0]])
    assert member_labels(smoke, mixed) == ["batch_size_32/seed_0", "batch_size_256/seed_0"]  # distinct
    assert member_labels(smoke, pair_job(smoke, [(8, 32, 1, 0)])) == ["seeds_0-1"]
    assert member_hparams(smoke, cohort)["seed_3"] == {"width": 64.0, "batch_size": 32, "seed": 3, "lr": 0.05,
                                                       "weight_decay": 5e-4, "epochs": 3}
    assert member_hparams(smoke, pair_job(smoke, [(8, 32, 1, 0)]))["seeds_0-1"] == {
        "width": 8.0, "batch_size": 32.0, "seed_a": 0, "seed_b": 1, "curve_epochs": 2, "curve_lr": 0.05}
    # The temperature sets the learning rate: the member's lr is its knob value, not training.lr
    lr_sweep = load_config("smoke", ["temperature.name=learning_rate", "temperature.values=[0.01, 0.2]"])
    assert member_hparams(lr_sweep, model_job(lr_sweep, [(8, 0.2, 1)]))["seed_1"]["lr"] == 0.2
    for label in member_labels(smoke, mixed) + member_labels(smoke, pair_job(smoke, [[8, 32, 0, 1]])):
        assert MLFLOW_METRIC_NAME.match(f"{label}/epoch_train_loss"), label


def test_final_metrics_are_each_members_finite_numbers(smoke):
    cohort = model_job(smoke, [[64, 32, 0], [64, 32, 1]])
    result = {"kind": "model", "key": cohort["cohort"], "status": "ok", "members": [
        {"key": "width=64__batch_size=32__seed=0", "status": "ok", "test_acc": 0.5, "hessian_top_eigenvalue": 12.0,
         "hessian_trace": 40.0},
        {"key": "width=64__batch_size=32__seed=1", "status": "diverged", "test_acc": None,
         "hessian_top_eigenvalue": float("nan")}]}
    assert final_member_metrics(smoke, cohort, result) == {
        "seed_0/test_acc": 0.5, "seed_0/hessian_top_eigenvalue": 12.0, "seed_0/hessian_trace": 40.0}
    pair = {"kind": "pair", "key": "pairs-1", "status": "ok", "members": [
        {"key": "width=8__batch_size=32__seeds=0-1", "status": "ok", "mode_connectivity": -1.5, "cka": 0.9,
         "l2_distance": 3.0}]}
    assert final_member_metrics(smoke, pair_job(smoke, [(8, 32, 0, 1)]), pair) == {
        "seeds_0-1/mode_connectivity": -1.5, "seeds_0-1/cka": 0.9, "seeds_0-1/l2_distance": 3.0}


def test_epoch_reports_give_every_member_its_own_numbers():
    from orchestrator.worker.history import epoch_result

    one = {"epoch": 0, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "seconds": 2.0, "test_loss": None,
           "test_acc": None}
    # member 1 diverged earlier: entries are the members still training, each naming its index
    result = epoch_result("C", [{**one, "member": 0}, {**one, "member": 2, "train_loss": 3.0}],
                          ["seed_0", "seed_1", "seed_2"])
    assert result["epoch_train_loss"] == 2.0  # the mean stays
    assert (result["seed_0/epoch_train_loss"], result["seed_2/epoch_train_loss"]) == (1.0, 3.0)
    assert not any(k.startswith("seed_1/") for k in result) and "seed_0/epoch_test_acc" not in result
    # a plain model job's one entry (no member index) is its only model
    assert epoch_result("K", [one], ["seed_4"])["seed_4/epoch_train_loss"] == 1.0


def test_tensorboard_without_its_package_is_one_error_naming_the_extra(tmp_path, monkeypatch):
    from orchestrator.driver import loggers

    monkeypatch.setattr(loggers, "installed", lambda package: package != "tensorboardX")
    out = str(tmp_path / "run")
    assert_clean_error(landscape_in_process("run", "smoke", "--out", out, "--log", "tensorboard"),
                       "tensorboard needs the tensorboardX package", "pip install 'landscape[tensorboard]'")
    assert not os.path.exists(out)
    # Tune's JSON and CSV loggers need nothing beyond Ray
    assert landscape_in_process("validate", "smoke", "--set", "logging=[json, csv]").returncode == 0


def _hparams(events) -> dict:
    """The HParams plugin's hyperparameters of one trial's event file."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            return {k: v.number_value for k, v in data.session_start_info.hparams.items() if v.HasField("number_value")}
    return {}


def test_tensorboard_and_experiment_analysis_see_every_model_of_a_smoke_run(short_tmp):
    pytest.importorskip("tensorboard")
    from ray import tune
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = os.path.join(short_tmp, "smoke")
    # The acceptance command: Tune's JSON files (what ExperimentAnalysis reads) are on by default
    proc = subprocess.run(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis", "--log", "tensorboard",
                                             "--set", "training.epochs=1"],
                          capture_output=True, text=True, timeout=300, env=hygienic_env())
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    tables = RunTables(run_dir)
    models, pairs, history = tables.read("models"), tables.read("pairs"), tables.read("history")
    assert len(models) == 8 and len(pairs) == 4 and models.cohort.nunique() < len(models)  # cohorts trained

    [experiment] = glob.glob(os.path.join(run_dir, "tune", "*"))
    folders = sorted(glob.glob(os.path.join(experiment, "*_width=*")))
    expected_names = set()
    train_loss_series, test_accs, hparams_seen, pair_metrics = {}, {}, {}, {}
    for folder in folders:
        name = os.path.basename(folder)
        events = EventAccumulator(folder)
        events.Reload()
        scalars = events.Tags()["scalars"]
        hparams = _hparams(events)
        # The trial's knob values; a knob with several (joined by '+') is in each member's label instead.
        named = dict(re.findall(r"(width|batch_size)=([\d.+]+)", name))
        for tag in scalars:
            found = re.fullmatch(r"ray/tune/(?:width_(\d+)/)?(?:batch_size_(\d+)/)?seed_(\d+)/epoch_train_loss", tag)
            if found:
                member = (float(found.group(1) or named["width"]), float(found.group(2) or named["batch_size"]),
                          int(found.group(3)))
                assert member not in train_loss_series, f"{member} twice"
                train_loss_series[member] = [p.value for p in events.Scalars(tag)]
                test_accs[member] = events.Scalars(tag.replace("epoch_train_loss", "test_acc"))[-1].value
                assert events.Scalars(tag.replace("epoch_train_loss", "hessian_top_eigenvalue"))
                hparams_seen[member] = hparams[f"hparams/{tag[len('ray/tune/'):-len('/epoch_train_loss')]}/seed"]
            found = re.fullmatch(r"ray/tune/(?:width_(\d+)/)?(?:batch_size_(\d+)/)?seeds_(\d+)-(\d+)/mode_connectivity",
                                 tag)
            if found:
                member = (float(found.group(1) or named["width"]), float(found.group(2) or named["batch_size"]),
                          int(found.group(3)), int(found.group(4)))
                pair_metrics[member] = {m: events.Scalars(tag.replace("mode_connectivity", m))[-1].value
                                        for m in ("mode_connectivity", "cka", "l2_distance")}
        expected_names.add(name)

    # One train-loss series per model of the models table, each that model's own history; its final metrics
    # and its seed as an HParam.
    rows = {(r.load_value, r.temperature_value, int(r.seed)): r for r in models.itertuples()}
    assert sorted(train_loss_series) == sorted(rows)
    for member, values in train_loss_series.items():
        mine = history[(history.load_value == member[0]) & (history.temperature_value == member[1])
                       & (history.seed == member[2])].sort_values("epoch")
        assert values == pytest.approx(list(mine.train_loss), rel=1e-6)
        assert test_accs[member] == pytest.approx(rows[member].test_acc, rel=1e-6)
        assert hparams_seen[member] == member[2]
    # Every pair's mode connectivity, CKA and L2 at the end of its trial
    pair_rows = {(r.load_value, r.temperature_value, int(r.seed_a), int(r.seed_b)): r for r in pairs.itertuples()}
    assert sorted(pair_metrics) == sorted(pair_rows)
    for member, values in pair_metrics.items():
        for metric, value in values.items():
            expected = getattr(pair_rows[member], metric)
            assert (math.isnan(expected) and math.isnan(value)) or value == pytest.approx(expected, rel=1e-5, abs=1e-6)

    # Tune's own reader: one row per trial, each naming what it trained (as its folder does)
    frame = tune.ExperimentAnalysis(experiment).dataframe()
    assert len(frame) == len(folders) > 0
    assert {dirname.replace(" ", "_") for dirname in frame.trial} == expected_names
    assert frame.trial.is_unique and all(frame.status == "ok")


def test_tunes_json_files_are_on_by_default_and_can_be_turned_off():
    assert load_config("smoke", []).logging == ("json",)
    assert load_config("smoke", ["logging=[]"]).logging == ()
    assert load_config("smoke", ["logging=[tensorboard]"]).logging == ("tensorboard",)


@pytest.fixture
def cli_in_process(ray_local, monkeypatch):
    """`landscape ...` in this process (so a Tune callback of the driver can be made to fail) on the session's
    Ray, which the command must not shut down."""
    import io

    import orchestrator.cli.main as cli_module
    import orchestrator.driver.execute as execute_module
    import orchestrator.driver.progress as progress
    from click.testing import CliRunner

    monkeypatch.setattr(execute_module, "shutdown_ray", lambda: None)
    real = progress.make_progress  # Tune pickles its callbacks; click's captured stdout cannot be pickled
    monkeypatch.setattr(progress, "make_progress", lambda *a, **k: real(io.StringIO(), tty=False))
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli_module.main, list(args), catch_exceptions=False)


def test_a_full_disk_under_tunes_json_files_stops_with_one_error_line(cli_in_process, tmp_path, monkeypatch):
    """The JSON logger (on by default) writes from the driver, inside Tune's loop: a disk that is full there
    ends the command with one `error:` line and the resume hint, as a full disk anywhere in the run does."""
    import errno

    from ray.tune.logger.json import JsonLoggerCallback

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(JsonLoggerCallback, "log_trial_result", full)
    run_dir = str(tmp_path / "run")
    result = cli_in_process("run", "smoke", "--out", run_dir, "--no-analysis", "--set", "training.epochs=1",
                            "--set", "load.values=[8]")
    err = result.stderr.strip()
    assert result.exit_code == 1 and "Traceback" not in result.output + result.stderr, result.output + result.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "No space left on device" in err and f"landscape resume {run_dir}" in err, err
