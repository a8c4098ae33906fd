"""`landscape diagnose`: a practitioner's own checkpoints placed on the taxonomy, without Ray or a sweep.

Models are trained in the tests: two small MLPs (width 8) that a barrier separates and two wide ones (width 256)
that fit MNIST-1D and connect, with recipes from a pilot on 2026-12-01 (mc -4.6 pp and -0.15 pp with the default
metric settings, the demo's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from orchestrator.config import load_config
from orchestrator.cli.diagnose import text
from tests.helpers import TouchesWhenUnpickled, assert_clean_error, landscape_in_process, user_module_folder
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = REPO_ROOT
SMALL, WIDE = 8, 256
# What the two groups were trained with (only the width is the load; the small models' lr decays so that they
# settle in their own basins, the wide ones train without weight decay to a train loss far below 0.01 nats).
RECIPES = {
    "small": (SMALL, dict(epochs=30, batch_size=64, lr=0.05, weight_decay=0.0, schedule="step")),
    "wide": (WIDE, dict(epochs=40, batch_size=64, lr=0.05, weight_decay=0.0)),
}


def _save_trained(folder, name: str, seeds=(0, 1)) -> list[str]:
    from workloads.data import load_dataset
    from workloads.models import seeded_model
    from workloads.train import TrainConfig, train

    data = load_dataset("mnist1d")
    width, recipe = RECIPES[name]
    paths = []
    for seed in seeds:
        model = seeded_model("mlp", seed, width=width, num_classes=10, input_shape=data.input_shape)
        result = train(model, data, TrainConfig(seed=seed, **recipe))
        path = os.path.join(folder, f"{name}-seed{seed}.pt")
        torch.save(result.model.state_dict(), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("checkpoints"))
    return {name: _save_trained(folder, name) for name in RECIPES}


def _diagnose(paths, width, *extra):
    return landscape_in_process("diagnose", *paths, "--model", "mlp", "--width", width, "--data", "mnist1d", *extra)


@pytest.mark.slow
def test_small_and_wide_models_land_in_different_phases_with_reasons(trained):
    # Text, from a fresh interpreter in which Ray cannot be imported: diagnose needs neither Ray nor a sweep.
    code = ("import sys; sys.modules['ray'] = None\nfrom orchestrator.cli.main import main\n"
            f"main(['diagnose', *{trained['small']!r}, '--model', 'mlp', '--width', '{SMALL}', '--data', 'mnist1d'])")
    small_text = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert small_text.returncode == 0, small_text.stderr
    assert "Traceback" not in small_text.stderr
    small = json.loads(_diagnose(trained["small"], SMALL, "--json").stdout)
    wide_proc = _diagnose(trained["wide"], WIDE, "--json")
    assert wide_proc.returncode == 0, wide_proc.stderr
    wide = json.loads(wide_proc.stdout)
    wide_text = text(wide)  # what the CLI prints without --json (its text path is checked on the small models)

    assert small["schema"] == wide["schema"] == "landscape.diagnose/1"
    # The small models: a barrier (poorly connected) and a high train loss (sharp): phase I.
    assert small["phase"] == "I", small["phase_reason"]
    deciding = {d["quantity"]: d for d in small["decisions"]}
    assert deciding["mode_connectivity"]["outcome"] == "poor" and deciding["mode_connectivity"]["mean"] < -1
    assert deciding["mode_connectivity"]["threshold"] == -1.0 and deciding["train_loss"]["threshold"] == 0.01
    assert deciding["train_loss"]["outcome"] == "sharp" and deciding["train_loss"]["confidence"] == "clear"
    assert small["confidence"] == "no spread"  # two checkpoints are one pair
    # Resampling the two checkpoints (the pair goes with them): how often the same phase comes out.
    assert 0 < small["phase_confidence"] <= 1 and "seed resamplings: " in small_text.stdout
    assert any("too small for the data" in g for g in small["guidance"])
    # The wide models: the training set fitted (flat) and no barrier (well connected): phase IV.
    assert wide["phase"] in ("IV-A", "IV-B"), wide["phase_reason"]
    deciding = {d["quantity"]: d for d in wide["decisions"]}
    assert deciding["train_loss"]["outcome"] == "flat" and deciding["mode_connectivity"]["outcome"] == "well"
    assert deciding["cka"]["threshold"] == pytest.approx(0.694)
    assert wide["phase"] != small["phase"]
    # Every number the call rests on is in the JSON, per model and per pair.
    assert [m["checkpoint"] for m in wide["models"]] == trained["wide"]
    assert all(m["status"] == "ok" and m["hessian_top_eigenvalue"] > 0 for m in wide["models"])
    (pair,) = wide["pairs"]
    demo_points = load_config("demo", check_data=False).metrics.curve.points
    assert (pair["a"], pair["b"]) == (0, 1) and len(pair["curve_t"]) == demo_points  # the demo's t-grid
    assert pair["mode_connectivity"] == deciding["mode_connectivity"]["mean"]
    assert wide["settings"]["source"] == "the metrics of the built-in config demo"
    # The text says the same, with the reasons.
    assert "phase: I (poorly connected and locally sharp" in small_text.stdout
    assert "because: train loss" in small_text.stdout and "poorly connected" in small_text.stdout
    assert f"phase: {wide['phase']} (well connected" in wide_text
    assert f"because: {wide['phase_reason']}" in wide_text and "guidance (the paper's, section 4):" in wide_text


def test_the_numbers_are_the_sweeps(tmp_path):
    """With a sweep config's metric settings, diagnose measures what the sweep's own jobs measure."""
    from orchestrator.planning.cells import cell_spec
    from workloads.experiment import ModelSpec, PairSpec, measure_pair, train_and_measure

    cell = cell_spec(load_config("smoke", check_data=False), 8, 32)
    outcomes = [train_and_measure(ModelSpec(cell, seed)) for seed in (0, 1)]
    sweep_pair = measure_pair(PairSpec(cell, 0, 1), outcomes[0].state_dict, outcomes[1].state_dict).row
    paths = []
    for seed, outcome in enumerate(outcomes):
        paths.append(str(tmp_path / f"seed{seed}.pt"))
        torch.save(outcome.state_dict, paths[-1])
    proc = _diagnose(paths, 8, "--model-arg", "depth=2", "--config", "smoke", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for ours, theirs in zip(result["models"], outcomes):
        for metric in ("train_loss", "train_acc", "test_loss", "test_acc", "hessian_samples"):
            assert ours[metric] == pytest.approx(theirs.row[metric], rel=1e-9), metric
        # The sweep takes a model's Hessian-vector products through its cohort net (a cohort of one), diagnose
        # through the module itself: the same products up to float32 rounding, until diagnose measures through
        # the engine too.
        for metric in ("hessian_top_eigenvalue", "hessian_trace"):
            assert ours[metric] == pytest.approx(theirs.row[metric], rel=1e-6), metric
    (pair,) = result["pairs"]
    for metric in ("mode_connectivity", "cka", "l2_distance", "t_star"):
        assert pair[metric] == pytest.approx(sweep_pair[metric], rel=1e-9, abs=1e-12), metric
    for said in ("mc_unit", "cka_probe_maker", "cka_probe_pool"):  # what the numbers are measured on, as the sweep's
        assert pair[said] == sweep_pair[said], said
    assert result["settings"]["metrics"]["curve"]["epochs"] == 2 and result["settings"]["source"].endswith("smoke")


USER_CODE = textwrap.dedent("""
    import torch
    from torch import nn

    def build(*, width, num_classes, input_shape, depth=1):
        layers, features = [nn.Flatten()], input_shape[0]
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.Tanh()]
            features = width
        return nn.Sequential(*layers, nn.Linear(features, num_classes))

    def blobs(root=None, seed=0, n=400):
        gen = torch.Generator().manual_seed(seed)
        centres = 3 * torch.randn(3, 5, generator=gen)
        def split(m):
            y = torch.randint(0, 3, (m,), generator=gen)
            return centres[y] + torch.randn(m, 5, generator=gen), y
        train_x, train_y = split(n)
        test_x, test_y = split(n // 4)
        return train_x, train_y, test_x, test_y
""")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    with user_module_folder(tmp_path, monkeypatch, {"mynets.py": USER_CODE}) as folder:
        yield folder


def test_a_plugin_model_and_dataset_from_a_folder_with_safetensors_checkpoints(user_dir):
    from safetensors.torch import save_file

    from workloads.diagnosis import load_named_dataset
    from workloads.plugins import load_reference
    from workloads.train import TrainConfig, train

    data = load_named_dataset("mynets:blobs", dataset_args={"n": 400})
    build = load_reference("mynets:build")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build(width=16, num_classes=3, input_shape=(5,), depth=1)
        trained = train(model, data, TrainConfig(epochs=5, batch_size=40, lr=0.05, seed=seed)).model
        paths.append(str(user_dir / f"net{seed}.safetensors"))
        save_file(trained.state_dict(), paths[-1])
    args = [*paths, "--model", "mynets:build", "--model-arg", "depth=1", "--width", "16", "--data", "mynets:blobs",
            "--data-arg", "n=400", "--set", "metrics.curve.epochs=3", "--set", "metrics.curve.batch_size=40",
            "--set", "metrics.hessian_samples=200"]
    proc = landscape_in_process("diagnose", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["phase"] is not None and result["members"]["models_ok"] == 2 and result["members"]["pairs_ok"] == 1
    assert result["models"][0]["num_params"] == 5 * 16 + 16 + 16 * 3 + 3
    assert result["workload"]["num_classes"] == 3 and result["workload"]["train_size"] == 400
    assert result["settings"]["metrics"]["curve"]["epochs"] == 3
    assert result["models"][0]["test_acc"] > 0.5  # the blobs are separable: the loaded weights are the trained ones
    # The same files read as another architecture of the plug-in: one clear line.
    assert_clean_error(landscape_in_process("diagnose", *args[:5], "depth=2", *args[6:]),
                       "is not a mynets:build of width 16, depth=2", "tensor(s) of the model are not in the file")


# ---------------------------------------------------------------------------------------------------------
# Bad input: one `error:` line, exit 2, nothing run


@pytest.fixture
def untrained(tmp_path):
    """Two untrained width-8 MLP checkpoints (bad-input tests fail before measuring anything)."""
    from workloads.models import seeded_model

    paths = []
    for seed in (0, 1):
        paths.append(str(tmp_path / f"m{seed}.pt"))
        torch.save(seeded_model("mlp", seed, width=8, num_classes=10, input_shape=(40,)).state_dict(), paths[-1])
    return paths


def test_crafted_checkpoints_are_refused_and_nothing_runs(tmp_path, untrained):
    marker = tmp_path / "ran"
    as_zip, as_pickle, as_new_pickle = tmp_path / "evil.pt", tmp_path / "evil.pkl", tmp_path / "evil4.pkl"
    runs_code = TouchesWhenUnpickled(marker)
    torch.save({"0.weight": runs_code}, as_zip)
    as_pickle.write_bytes(pickle.dumps(runs_code, protocol=2))  # torch's legacy format is protocol 2
    as_new_pickle.write_bytes(pickle.dumps(runs_code, protocol=4))  # refused before its global is read
    for evil, named in ((as_zip, "posix.system"), (as_pickle, "posix.system"), (as_new_pickle, "objects")):
        proc = _diagnose([untrained[0], str(evil)], 8)
        assert_clean_error(proc, f"checkpoint {evil} cannot be loaded safely", named, "nothing was run")
    assert not marker.exists()


def test_bad_input_is_one_clear_line(tmp_path, untrained):
    a, b = untrained
    from workloads.models import seeded_model

    cnn = str(tmp_path / "cnn.pt")
    torch.save(seeded_model("cnn", 0, width=8, num_classes=10, input_shape=(40,)).state_dict(), cnn)
    not_a_state = str(tmp_path / "list.pt")
    torch.save([1, 2, 3], not_a_state)
    truncated = str(tmp_path / "cut.pt")
    with open(a, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    nested = str(tmp_path / "nested.pt")
    torch.save({"state_dict": torch.load(b, weights_only=True), "epoch": 3}, nested)

    cases = [
        ([a, str(tmp_path / "nope.pt")], [], ["nope.pt does not exist"]),
        ([a], [], ["1 checkpoint given", "two or more checkpoints"]),
        ([a, b], ["--width", "16"], ["is not a mlp of width 16", "1.weight is (8, 40) in the file, (16, 40) in the "
                                     "model", "--width"]),
        ([a, cnn], [], [f"checkpoint {cnn} is not a mlp of width 8", "not in the model"]),
        ([a, not_a_state], [], ["holds a list, not a state dict", "torch.save(model.state_dict(), path)"]),
        ([a, truncated], [], [f"checkpoint {truncated} cannot be loaded safely"]),
        ([a, a], [], ["hold the same weights", "independently trained"]),
        ([a, b], ["--model", "mlpp"], ["unknown model 'mlpp'", "did you mean 'mlp'"]),
        ([a, b], ["--model", "nosuchmodule:build"], ["no module named 'nosuchmodule'"]),
        ([a, b], ["--data", "mnist-1d"], ["unknown dataset 'mnist-1d'", "did you mean 'mnist1d'"]),
        ([a, b], ["--data", "digits", "--set", "metrics.curve.batch_size=2000"],
         ["metrics.curve.batch_size 2000 is larger than the training set (1437 examples"]),
        ([a, b], ["--set", "training.epochs=3"], ["only metrics.* settings apply"]),
        ([a, b], ["--set", "metrics.curve.epochs=-1"], ["metrics.curve.epochs", "must be >= 0"]),
        ([a, b], ["--set", "metrics.curv.epochs=3"], ["unknown key 'metrics.curv'", "did you mean 'metrics.curve'"]),
        ([a, b], ["--config", "no-such-config"], ["neither a built-in config nor an existing file"]),
        ([a, b], ["--rule", "loss_treshold=0.1"], ["unknown phase rule 'loss_treshold'", "loss_threshold"]),
        ([a, b], ["--model-arg", "dept=3"], ["unknown option(s) ['dept']", "depth"]),
        ([a, b], ["--device", "cuda:7" if torch.cuda.is_available() else "cuda"], ["--device"]),
    ]
    for paths, extra, fragments in cases:
        proc = landscape_in_process("diagnose", *paths, "--model", "mlp", "--width", "8", "--data", "mnist1d", *extra)
        assert_clean_error(proc, *fragments)
    # A state dict nested under "state_dict" (a training script's checkpoint) is read as the state dict.
    from orchestrator.cli.diagnose import read_state_dict

    assert set(read_state_dict(nested)) == set(torch.load(b, weights_only=True))


def test_metric_settings_default_to_the_demo_and_follow_a_config():
    from orchestrator.cli.diagnose import metric_settings

    demo = load_config("demo", check_data=False).metrics
    default = metric_settings(None, (), 3)
    assert default.curve.epochs == demo.curve.epochs and default.curve.lr == demo.curve.lr
    assert default.curve.points == demo.curve.points and default.hessian.samples == demo.hessian.samples
    assert default.pairs == ((0, 1), (0, 2), (1, 2))  # auto: all pairs of up to 3 checkpoints
    assert metric_settings(None, (), 5).pairs == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 4))  # auto: a ring
    smoke = metric_settings("smoke", ("metrics.curve.epochs=7",), 2)
    assert smoke.curve.epochs == 7 and smoke.cka_probes == load_config("smoke", check_data=False).metrics.cka.probes
    assert dataclasses.asdict(smoke.hessian)["samples"] == 256
