"""A sweep of the user's own model and data (`workload.model: mynets:build`): README's example run from a folder
outside the repository, checks before Ray, the module shipped to the workers, and the user's errors as their own.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap

import pytest

from analysis.tables import RunTables
from orchestrator.config import ConfigError, parse_config
from tests.helpers import assert_clean_error, hygienic_env, landscape_in_process, landscape_run, user_module_folder
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
USER_MODULES = ("mynets", "badnets", "userpkg")


def readme_example() -> dict[str, str]:
    """{file name: text} of README's complete user example (the blocks after "`mynets.py`:" and "`my.yaml`:")."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    out = {}
    for name, lang in (("mynets.py", "python"), ("my.yaml", "yaml")):
        match = re.search(rf"`{re.escape(name)}`:\n\n```{lang}\n(.*?)```", text, re.S)
        assert match, f"README.md has no {name} block"
        out[name] = match.group(1)
    return out


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder outside the repository holding exactly README's two files, as the working directory."""
    assert not str(tmp_path).startswith(ROOT)
    with user_module_folder(tmp_path, monkeypatch, readme_example(), forget=USER_MODULES) as folder:
        yield folder


def example_raw(**workload) -> dict:
    import yaml

    raw = yaml.safe_load(readme_example()["my.yaml"])
    raw["workload"].update(workload)
    return raw


# ---------------------------------------------------------------------------------------------------------
# Before Ray: found, callable with the sweep's arguments, builds, the data learned once


def test_a_typo_in_the_function_name_is_one_error_before_ray(user_folder):
    (user_folder / "typo.yaml").write_text(readme_example()["my.yaml"].replace("mynets:build", "mynets:buld"))
    for command in (["validate", "typo.yaml"], ["run", "typo.yaml", "--out", str(user_folder / "run")]):
        proc = landscape_in_process(*command)
        assert_clean_error(proc, "workload.model", "mynets has no attribute 'buld'", "did you mean 'mynets:build'?")
        assert "cluster:" not in proc.stdout  # Ray never started
    assert not (user_folder / "run").exists()
    (user_folder / "module.yaml").write_text(readme_example()["my.yaml"].replace("mynets:build", "mynet:build"))
    assert_clean_error(landscape_in_process("validate", "module.yaml"), "no module named 'mynet'",
                       "did you mean 'mynets'?")


def test_validate_learns_the_users_data_once_and_builds_the_model(user_folder):
    (user_folder / "counting.py").write_text(textwrap.dedent("""
        import torch
        CALLS = []

        def data(*, root, seed, n=100):
            CALLS.append(seed)
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(n + 20, 5, generator=g)
            y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
            return x[:n], y[:n], x[n:], y[n:]
    """))
    sys.modules.pop("counting", None)
    try:
        raw = example_raw(dataset="counting:data", dataset_args={"n": 100}, data_seed=3)
        raw["metrics"]["curve"]["batch_size"] = 32
        cfg = parse_config(raw)
        parse_config(raw)
        from orchestrator.planning.cells import cell_spec, cell_quantities

        cell = cell_spec(cfg, 16, 32)
        data = cell.data()
        from orchestrator.planning.run_facts import measure

        facts = measure(cfg)  # what run and resume record for the cost model
        assert cell_quantities(cfg, 16, 32, facts.train_size) == (16, 32, 100)
        assert facts.input_shape == (5,) and facts.num_classes == 4 and facts.parameters[16] == 5 * 16 + 16 + 16 * 4 + 4
        import counting

        assert counting.CALLS == [3]  # one call in this process: validate, the cost model and the job share it
        assert data.input_shape == (5,) and data.num_classes == 4 and data.train_size == 100
        model = cell.build_model(0, data)
        assert sum(p.numel() for p in model.parameters()) == 5 * 16 + 16 + 16 * 4 + 4
    finally:
        sys.modules.pop("counting", None)


@pytest.mark.parametrize("code, workload, fragments", [
    ("def build(width, num_classes):\n    pass\n", {"model": "bad:build", "model_args": {}},
     ("workload.model", "must accept the keyword argument(s) ['input_shape']")),
    ("def build(*, width, num_classes, input_shape):\n    return 'a model'\n", {"model": "bad:build", "model_args": {}},
     ("workload.model", "returned a str, not a torch.nn.Module")),
    ("def build(*, width, num_classes, input_shape):\n    raise ValueError('width must be even')\n",
     {"model": "bad:build", "model_args": {}}, ("workload.model", "raised ValueError: width must be even")),
    ("def data(*, root, seed):\n    return [1, 2]\n", {"dataset": "bad:data", "dataset_args": {}},
     ("workload.dataset", "returned a list", "(train_x, train_y, test_x, test_y)")),
    ("def data(*, root):\n    pass\n", {"dataset": "bad:data", "dataset_args": {}},
     ("workload.dataset", "must accept the keyword argument(s) ['seed']")),
    ("import torch\ndef data(*, root, seed):\n    x = torch.zeros(4, 2)\n    return x, x, x, x\n",
     {"dataset": "bad:data", "dataset_args": {}}, ("workload.dataset", "train_y must be integer class indices")),
    ("", {"dataset": "mnist1d", "dataset_args": {"n": 3}}, ("workload.dataset_args", "takes no options")),
    ("", {"model": "mlpp"}, ("workload.model", "did you mean 'mlp'?", "module:function")),
    ("def build(*, width, num_classes, input_shape):\n    pass\n", {"model": "bad:build"},
     ("workload.model_args", "'bad:build' takes no option(s) ['depth']; its options: none")),
])
def test_bad_plugins_are_one_clear_error(user_folder, code, workload, fragments):
    (user_folder / "bad.py").write_text(code)
    sys.modules.pop("bad", None)
    try:
        with pytest.raises(ConfigError) as info:
            parse_config(example_raw(**workload))
        for fragment in fragments:
            assert fragment in str(info.value), str(info.value)
        assert "\n" not in str(info.value)
    finally:
        sys.modules.pop("bad", None)


# ---------------------------------------------------------------------------------------------------------
# Shipping to the workers


def test_the_runtime_environment_ships_the_users_file_or_package(user_folder):
    from orchestrator.cluster.shipping import runtime_env

    assert runtime_env(parse_config(example_raw())) == {"py_modules": [str(user_folder / "mynets.py")]}
    (user_folder / "userpkg" / "nets").mkdir(parents=True)
    (user_folder / "userpkg" / "__init__.py").write_text("")
    (user_folder / "userpkg" / "nets" / "__init__.py").write_text(readme_example()["mynets.py"])
    cfg = parse_config(example_raw(model="userpkg.nets:build"))
    assert runtime_env(cfg) == {"py_modules": [str(user_folder / "userpkg"), str(user_folder / "mynets.py")]}
    # Built-ins and the package's own modules are installed on every node already.
    builtin = example_raw(model="mlp", dataset="mnist1d", dataset_args={})
    builtin["metrics"]["curve"]["batch_size"] = 64
    assert runtime_env(parse_config(builtin)) is None
    assert runtime_env(parse_config({**builtin, "workload": {**builtin["workload"],
                                                             "model": "workloads.models:build_mlp"}})) is None


# ---------------------------------------------------------------------------------------------------------
# Through the CLI, in real Ray workers


def _run(args, cwd, env, timeout=300):
    return landscape_run(*args, cwd=cwd, env=env, timeout=timeout)


@pytest.mark.ray
def test_readme_example_runs_from_a_folder_holding_only_its_two_files(user_folder, ray_tmpdir):
    assert sorted(os.listdir(user_folder)) == ["my.yaml", "mynets.py"]
    proc = _run(["run", "my.yaml", "--out", "run", "--no-analysis"], user_folder, hygienic_env(ray_tmpdir))
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "4/4 models, 2/2 pairs" in proc.stdout
    tables = RunTables(str(user_folder / "run"))
    models, pairs = tables.read("models"), tables.read("pairs")
    assert len(models) == 4 and (models.status == "ok").all(), models[["status", "error"]]
    assert len(pairs) == 2 and (pairs.status == "ok").all(), pairs[["status", "error"]]
    assert set(models.train_size) == {600} and (models.num_params[models.load_value == 16] == 8 * 16 + 16 + 16 * 3 + 3).all()
    # What run learned from the user's code, recorded for status to read as data (orchestrator/planning/run_facts.py).
    facts = json.loads((user_folder / "run" / "facts.json").read_text())
    assert (facts["train_size"], facts["input_shape"], facts["num_classes"]) == (600, [8], 3)
    assert facts["parameters"] == {"4": 8 * 4 + 4 + 4 * 3 + 3, "16": 8 * 16 + 16 + 16 * 3 + 3}
    # resume imports mynets only from a folder named on its command line, and says so before it does.
    refused = _run(["resume", "run", "--no-analysis"], user_folder, hygienic_env(ray_tmpdir))
    assert "workload.model 'mynets:build': module mynets: not found" in refused.stdout, refused.stdout
    assert_clean_error(refused, "no module named 'mynets'", "--code-dir")
    resumed = _run(["resume", "run", "--no-analysis", "--code-dir", "."], user_folder, hygienic_env(ray_tmpdir))
    assert resumed.returncode == 0, (resumed.stdout[-3000:], resumed.stderr[-3000:])
    assert f"workload.model 'mynets:build': module mynets from {user_folder / 'mynets.py'}" in resumed.stdout
    assert "nothing to do" in resumed.stdout
    # The run folder is shared and holds another mynets.py; resume runs from inside it with the user's code named
    # by --code-dir: the driver and Ray's workers (which get the driver's working directory first on their
    # sys.path) import the user's copy, never the folder's.
    run = user_folder / "run"
    (run / "mynets.py").write_text("raise RuntimeError('the run folder copy of mynets was imported')\n")
    tables = RunTables(str(run))
    key = sorted(tables.part_keys("models"))[0]
    tables.delete_part("models", key)  # one model (and its pair) to compute again, in a worker
    resumed = _run(["resume", ".", "--no-analysis", "--code-dir", str(user_folder)], run, hygienic_env(ray_tmpdir))
    assert resumed.returncode == 0, (resumed.stdout[-3000:], resumed.stderr[-3000:])
    assert f"module mynets from {user_folder / 'mynets.py'}" in resumed.stdout
    models = RunTables(str(run)).read("models")
    assert len(models) == 4 and (models.status == "ok").all(), models[["status", "error"]]


@pytest.mark.ray
def test_a_model_with_dropout_trains_one_member_per_cohort_as_validate_and_run_say(user_folder, ray_tmpdir):
    """The engine's backends cannot train two members of a model that draws random numbers in its forward pass
    (vmap would share the draws): validate and run say so, and the sweep forms cohorts of one (plain)."""
    (user_folder / "dropnets.py").write_text(textwrap.dedent("""
        import math
        from torch import nn

        def build(*, width, num_classes, input_shape):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                                 nn.Dropout(0.2), nn.Linear(width, num_classes))
    """))
    raw = readme_example()["my.yaml"].replace("mynets:build", "dropnets:build").replace("model_args: {depth: 1}",
                                                                                       "model_args: {}")
    (user_folder / "drop.yaml").write_text(raw)
    note = "draws random numbers"
    checked = _run(["validate", "drop.yaml"], user_folder, hygienic_env(ray_tmpdir), timeout=120)
    assert checked.returncode == 0 and note in checked.stdout, (checked.stdout, checked.stderr)
    assert "each cohort of dropnets:build has one member" in checked.stdout
    assert "4 training trials and 2 pair trials of one model or pair each" in checked.stdout, checked.stdout
    proc = _run(["run", "drop.yaml", "--out", "run", "--no-analysis"], user_folder, hygienic_env(ray_tmpdir))
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert note in proc.stdout and "4/4 models, 2/2 pairs" in proc.stdout
    tables = RunTables(str(user_folder / "run"))
    models, pairs = tables.read("models"), tables.read("pairs")
    assert (models.status == "ok").all() and (pairs.status == "ok").all(), models[["status", "error"]]
    assert models["cohort"].nunique() == 4  # one member per cohort
    assert {json.loads(p)["backend"] for p in models["execution_path"]} == {"plain"}


@pytest.mark.ray
def test_an_exception_inside_the_users_model_reaches_the_user_as_its_own(user_folder, ray_tmpdir):
    (user_folder / "badnets.py").write_text(textwrap.dedent("""
        import math
        from torch import nn

        class Broken(nn.Module):
            def __init__(self, size, num_classes):
                super().__init__()
                self.layer = nn.Linear(size, num_classes)

            def forward(self, x):
                raise RuntimeError("my model broke: tensors of shape " + str(tuple(x.shape)))

        def build(*, width, num_classes, input_shape):
            return Broken(math.prod(input_shape), num_classes)
    """))
    raw = readme_example()["my.yaml"].replace("mynets:build", "badnets:build").replace("model_args: {depth: 1}",
                                                                                      "model_args: {}")
    (user_folder / "bad.yaml").write_text(raw + "run: {max_failures: 0}\n")
    proc = _run(["run", "bad.yaml", "--out", "run", "--no-analysis", "--set", "load.values=[4]",
                 "--set", "seeds=[0]"], user_folder, hygienic_env(ray_tmpdir))
    assert proc.returncode != 0
    message = "RuntimeError: my model broke: tensors of shape (32, 8)"
    assert message in proc.stdout + proc.stderr, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    models = RunTables(str(user_folder / "run")).read("models")
    assert list(models.status) == ["failed"] and models.error[0] == message
    status = _run(["status", "run"], user_folder, hygienic_env(ray_tmpdir), timeout=120)
    assert message in status.stdout, status.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_the_users_module_reaches_cluster_workers_only_through_the_runtime_environment(tmp_path):
    """A cluster started elsewhere (its workers do not see the driver's PYTHONPATH) and a driver whose working
    directory holds only the config: the workers can import mynets only because it is shipped."""
    from tests.raycluster import LoopbackCluster

    code, config = tmp_path / "code", tmp_path / "config"
    code.mkdir()
    config.mkdir()
    example = readme_example()
    (code / "mynets.py").write_text(example["mynets.py"])
    (config / "my.yaml").write_text(example["my.yaml"])
    with LoopbackCluster() as cluster:
        cluster.start_head(num_cpus=2)
        env = hygienic_env(cluster.temp_dir, PYTHONPATH=str(code))
        proc = _run(["run", "my.yaml", "--address", cluster.address, "--out", str(tmp_path / "run"),
                     "--no-analysis"], config, env)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    models = RunTables(str(tmp_path / "run")).read("models")
    assert len(models) == 4 and (models.status == "ok").all(), models[["status", "error"]]


def test_a_worker_that_lacks_an_installed_plugin_says_to_install_it_on_every_node():
    from orchestrator.worker.trainable import _reraise_missing_plugin
    from workloads.models import MODELS
    from workloads.plugins import PluginError

    try:
        MODELS.get("fancy-cnn")
    except LookupError as exc:
        with pytest.raises(PluginError, match=r"unknown model .fancy-cnn.*an entry point of landscape.models must be installed on every node"):
            _reraise_missing_plugin(exc)
    with pytest.raises(KeyError, match="other"):
        _reraise_missing_plugin(KeyError("other"))


@pytest.mark.ray
def test_the_translation_example_is_swept_through_the_cli_with_mc_on_the_loss(tmp_path, ray_tmpdir):
    """examples/translation/translate.yaml, reduced for CI (2 widths, 1 batch size, 2 seeds, a few epochs on 256
    sentences), run from its folder: integer tokens, the crossover probes and mc in nats reach the tables and
    the analysis."""
    example = os.path.join(ROOT, "examples", "translation")
    reduced = ["--set", "load.values=[8,16]", "--set", "temperature.values=[64]", "--set", "seeds=[0,1]",
               "--set", "training.epochs=3", "--set", "workload.dataset_args.train_size=256",
               "--set", "workload.dataset_args.test_size=64", "--set", "metrics.curve.epochs=2",
               "--set", "metrics.curve.points=5", "--set", "metrics.hessian_samples=64", "--set",
               "metrics.cka_probes=64"]
    run_dir = str(tmp_path / "run")
    proc = _run(["run", "translate.yaml", "--out", run_dir, *reduced], example, hygienic_env(ray_tmpdir))
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    tables = RunTables(run_dir)
    models, pairs = tables.read("models"), tables.read("pairs")
    assert len(models) == 4 and (models.status == "ok").all(), models[["status", "error"]]
    assert len(pairs) == 2 and (pairs.status == "ok").all(), pairs[["status", "error"]]
    assert set(pairs.mc_unit) == {"nats"} and set(pairs.cka_probe_maker) == {"crossover"}
    assert pairs.cka.notna().all() and pairs.mode_connectivity.notna().all()
    # mc on the loss is the curve's train loss: the mean of the endpoints' losses minus the loss at t*.
    curves = tables.read("curves")
    for row in pairs.itertuples():
        c = curves[(curves.load_value == row.load_value) & (curves.seed_a == row.seed_a)].sort_values("t")
        ends = (c.train_loss.iloc[0] + c.train_loss.iloc[-1]) / 2
        assert row.mode_connectivity == pytest.approx(ends - c.train_loss[c.t == row.t_star].iloc[0], abs=1e-9)
    assert os.path.exists(os.path.join(run_dir, "analysis", "report.html"))


def test_a_config_read_from_a_run_directory_executes_none_of_the_code_it_names(user_folder):
    """status and the --out checks read RUN_DIR/config.yaml with user_code=False: the module is not imported
    (here it would leave a marker file), while run and validate (the user's own config) import it."""
    (user_folder / "evil.py").write_text("open('imported', 'w').close()\n"
                                         "def build(*, width, num_classes, input_shape):\n    raise SystemExit\n")
    sys.modules.pop("evil", None)
    try:
        raw = example_raw(model="evil:build")
        cfg = parse_config(raw, check_data=False, user_code=False)
        assert cfg.workload.model == "evil:build" and not (user_folder / "imported").exists()
        with pytest.raises(ConfigError, match="workload.model"):
            parse_config(raw)
        assert (user_folder / "imported").exists()
    finally:
        sys.modules.pop("evil", None)
