"""Sweep configs: parsing, every class of validation error (one message naming the field and the fix),
--set overrides, seed pairs, the config hash, and the resource check (pure, on described nodes)."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.config import (
    ConfigError,
    SweepConfig,
    apply_overrides,
    builtin_names,
    describe_builtin,
    load_config,
    parse_config,
    read_raw,
    seed_pairs,
)
from orchestrator.cluster.resources import check_resources, fits_on_node


def base(**changes) -> dict:
    """A small valid raw config; ``changes`` are dotted-path overrides applied like --set."""
    raw = {
        "name": "t",
        "workload": {"dataset": "mnist1d", "model": "mlp"},
        "load": {"name": "width", "values": [8, 16]},
        "temperature": {"name": "batch_size", "values": [32, 128]},
        "seeds": [0, 1, 2],
        "training": {"epochs": 2},
    }
    return apply_overrides(raw, [f"{k}={v}" for k, v in changes.items()])


def error_of(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------------------------------------------
# Built-ins


def test_builtins_exist_and_validate():
    assert {"demo", "smoke"} <= set(builtin_names())
    for name in builtin_names():
        # The paper configs read CIFAR-10 from ~/data on the nodes that train: not needed on this machine.
        cfg = load_config(name, check_data=False)
        assert isinstance(cfg, SweepConfig) and cfg.name == name


def test_smoke_is_a_2x2x2_grid_and_demo_the_pilot_grid():
    smoke = load_config("smoke")
    assert (len(smoke.load.values), len(smoke.temperature.values), len(smoke.seeds)) == (2, 2, 2)
    assert len(smoke.model_keys()) == 8 and len(smoke.pair_keys()) == 4
    demo = load_config("demo")
    assert demo.workload.dataset == "mnist1d" and demo.workload.model == "mlp"
    assert demo.load.name == "width" and list(demo.load.values) == [32, 64, 128, 256]
    # Weight decay as the temperature (docs/science.md): every cell takes the same SGD steps.
    assert demo.temperature.name == "weight_decay" and max(demo.temperature.values) == 0.016
    assert (demo.training.batch_size, demo.training.lr, demo.training.schedule) == (64, 0.1, "step")
    assert demo.metrics.curve.lr == 0.2 and demo.metrics.curve.points == 9
    assert demo.metrics.curve.lr_schedule == "garipov"
    desc, models, pairs = describe_builtin("demo")
    assert models == 140 and pairs == 140 and desc  # 4 x 7 cells x 5 seeds, a ring of 5 pairs per cell


def test_resolved_config_round_trips_through_yaml():
    cfg = load_config("smoke", ["seeds=[3, 5]", "metrics.curve.points=7"])
    again = parse_config(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.seeds == (3, 5) and again.metrics.curve.points == 7


# ---------------------------------------------------------------------------------------------------------
# One message per error class, naming the field and the fix


def test_unknown_key_suggests_the_close_one():
    msg = error_of({**base(), "seed": [0]})
    assert "'seed'" in msg and "did you mean 'seeds'" in msg
    raw = base()
    raw["training"]["epoch"] = 3
    msg = error_of(raw)
    assert "training.epoch" in msg and "training.epochs" in msg
    raw = base()
    raw["metrics"] = {"curve": {"point": 5}}
    assert "metrics.curve.points" in error_of(raw)


def test_wrong_types():
    assert "training.epochs must be an integer" in error_of(base(**{"training.epochs": "ten"}))
    assert "training.epochs must be an integer" in error_of(base(**{"training.epochs": 2.5}))
    assert "training.lr must be a number" in error_of(base(**{"training.lr": "fast"}))
    assert "seeds[1] must be an integer" in error_of(base(seeds="[0, x]"))
    assert "load.values" in error_of(base(**{"load.values": "{a: 1}"}))
    assert "workload.model_args must be a mapping" in error_of(base(**{"workload.model_args": "[1]"}))


def test_yaml_1_1_exponent_strings_are_numbers():
    # PyYAML reads 5e-4 (no dot) as a string; a float field accepts it.
    cfg = parse_config(base(**{"training.weight_decay": "5e-4"}))
    assert cfg.training.weight_decay == pytest.approx(5e-4)


def test_empty_axes_and_seeds():
    assert "load.values" in error_of(base(**{"load.values": "[]"})) and "empty" in error_of(base(**{"load.values": "[]"}))
    assert "temperature.values" in error_of(base(**{"temperature.values": "[]"}))
    assert "seeds" in error_of(base(seeds="[]"))
    assert "repeats" in error_of(base(seeds="[1, 1]"))


def test_batch_size_larger_than_the_training_set():
    msg = error_of(base(**{"temperature.values": "[32, 5000]"}))
    assert "temperature.values" in msg and "5000" in msg and "4000" in msg and "never shrunk" in msg
    # With a training-set fraction as load, the smallest transformed set counts: 0.01 * 4000 = 40.
    raw = base(**{"load.name": "train_fraction", "load.values": "[0.01, 1.0]", "temperature.name": "learning_rate",
                  "temperature.values": "[0.1]", "training.batch_size": 64})
    msg = error_of(raw)
    assert "training.batch_size" in msg and "40" in msg
    raw["training"]["batch_size"] = 32
    raw["metrics"] = {"curve": {"batch_size": 32}}
    parse_config(raw)


def test_fraction_and_noise_ranges():
    frac = base(**{"load.name": "train_fraction", "load.values": "[0.5, 1.5]"})
    assert "load.values[1]" in error_of(frac) and "(0, 1]" in error_of(frac)
    noise = base(**{"load.name": "label_noise", "load.values": "[0.0, 1.0]"})
    assert "load.values[1]" in error_of(noise) and "[0, 1)" in error_of(noise)
    assert "width" in error_of(base(**{"load.values": "[8, 0]"}))
    assert "learning rate" in error_of(base(**{"temperature.name": "learning_rate", "temperature.values": "[0.1, -1]"}))


def test_unknown_axis_names_dataset_and_model():
    msg = error_of(base(**{"load.name": "widht"}))
    assert "load.name" in msg and "did you mean 'width'" in msg
    msg = error_of(base(**{"temperature.name": "batchsize"}))
    assert "temperature.name" in msg and "batch_size" in msg
    msg = error_of(base(**{"workload.dataset": "mnist1D"}))
    assert "workload.dataset" in msg and "mnist1d" in msg
    msg = error_of(base(**{"workload.model": "resnet81"}))
    assert "workload.model" in msg and "resnet18" in msg


def test_model_options_are_checked():
    msg = error_of(base(**{"workload.model_args": "{depht: 3}"}))
    assert "workload.model_args" in msg and "depht" in msg


def test_image_dataset_needs_an_existing_root(tmp_path):
    raw = base(**{"workload.dataset": "cifar10", "workload.model": "resnet18"})
    assert "workload.data_root" in error_of(raw)
    raw["workload"]["data_root"] = str(tmp_path / "nope")
    assert "does not exist" in error_of(raw)


def test_pairs_setting():
    assert "metrics.pairs" in error_of(base(**{"metrics.pairs": "rings"}))
    assert "metrics.pairs[0]" in error_of(base(**{"metrics.pairs": "[[0, 0]]"}))
    assert "not in seeds" in error_of(base(**{"metrics.pairs": "[[0, 7]]"}))
    cfg = parse_config(base(**{"metrics.pairs": "[[2, 0]]"}))
    assert cfg.seed_pairs() == [(0, 2)]


def test_resources_fields():
    assert "resources.gpu" in error_of(base(**{"resources.gpu": 1.5}))
    assert "resources.cpu" in error_of(base(**{"resources.cpu": 0}))
    msg = error_of(base(**{"resources.gpu_by_load": "{12: 0.5}"}))
    assert "resources.gpu_by_load.12" in msg and "not a load value" in msg
    cfg = parse_config(base(**{"resources.gpu": 0.25, "resources.gpu_by_load": "{16: 1}"}))
    assert cfg.trial_resources(8) == {"cpu": 1.0, "gpu": 0.25}
    assert cfg.trial_resources(16) == {"cpu": 1.0, "gpu": 1.0}
    assert cfg.pair_resources(16)["gpu"] == 1.0


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_raw(str(path))
    path.write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_raw(str(path))
    with pytest.raises(ConfigError, match="did you mean the built-in 'smoke'"):
        read_raw("smok")


# ---------------------------------------------------------------------------------------------------------
# --set


def test_set_overrides_dotted_paths_with_yaml_values():
    cfg = load_config("smoke", ["training.epochs=7", "load.values=[4, 8, 16]", "workload.model_args={depth: 3}",
                                "run.storage=s3://bucket/x", "metrics.hessian_batch_size=null"])
    assert cfg.training.epochs == 7
    assert cfg.load.values == (4, 8, 16)
    assert cfg.workload.model_args == {"depth": 3}
    assert cfg.run.storage == "s3://bucket/x"
    assert cfg.metrics.hessian.batch_size is None


def test_set_errors_are_clear():
    with pytest.raises(ConfigError, match="did you mean 'training.epochs'"):
        apply_overrides({}, ["training.epoch=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["training.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seeds": [0]}, ["seeds.x=1"])
    # Free-form maps take any key.
    assert apply_overrides({}, ["workload.model_args.depth=3"])["workload"]["model_args"] == {"depth": 3}


# ---------------------------------------------------------------------------------------------------------
# Pairs and the hash


def test_seed_pairs_modes():
    assert seed_pairs("auto", [0, 1, 2]) == [(0, 1), (0, 2), (1, 2)]
    assert seed_pairs("auto", [0, 1, 2, 3, 4]) == [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)]
    assert len(seed_pairs("all", range(5))) == 10
    assert seed_pairs("ring", [0, 1]) == [(0, 1)]
    assert seed_pairs("auto", [0]) == []


def test_checkpoint_minutes_is_a_non_negative_number_of_minutes():
    assert parse_config(base()).training.checkpoint_minutes == 5.0  # on by default: a Ctrl-C loses <= ~5 minutes
    assert parse_config(base(**{"training.checkpoint_minutes": 0})).training.checkpoint_minutes == 0
    for value, words in (("-1", "must be >= 0"), ("soon", "must be a number"), (".nan", "must be a number")):
        with pytest.raises(ConfigError, match=f"training.checkpoint_minutes.*{words}"):
            parse_config(base(**{"training.checkpoint_minutes": value}))


def test_config_hash_ignores_grid_and_resources_but_not_settings():
    a = parse_config(base())
    assert parse_config(base(seeds="[0, 1, 2, 3]")).config_hash() == a.config_hash()
    assert parse_config(base(**{"load.values": "[8, 16, 32]"})).config_hash() == a.config_hash()
    assert parse_config(base(**{"resources.cpu": 2})).config_hash() == a.config_hash()
    assert parse_config(base(**{"resources.gpu": 0.5})).config_hash() == a.config_hash()
    # Checkpointing more or less often does not change a training's result (resume is bit-exact).
    assert parse_config(base(**{"training.checkpoint_every": 5})).config_hash() == a.config_hash()
    assert parse_config(base(**{"training.checkpoint_minutes": 0})).config_hash() == a.config_hash()
    assert parse_config(base(**{"training.checkpoint_minutes": 0.5})).config_hash() == a.config_hash()
    assert parse_config(base(**{"training.epochs": 3})).config_hash() != a.config_hash()
    assert parse_config(base(**{"metrics.curve.epochs": 3})).config_hash() != a.config_hash()
    assert parse_config(base(**{"load.name": "label_noise", "load.values": "[0.1]"})).config_hash() != a.config_hash()
    # Every setting that changes what a row means changes the hash.
    for change in ({"workload.dataset": "digits"}, {"workload.model": "cnn"}, {"workload.model_args": "{depth: 3}"},
                   {"workload.data_seed": 7}, {"temperature.name": "learning_rate", "temperature.values": "[0.1]"},
                   {"training.lr": 0.05}, {"metrics.hessian_samples": 200}, {"metrics.cka_probes": 64}):
        assert parse_config(base(**change)).config_hash() != a.config_hash(), change


# ---------------------------------------------------------------------------------------------------------
# Resource check (on described nodes; the Ray-backed check is in test_sweep.py)


def test_gpu_request_on_cpu_only_cluster_fails_fast():
    cfg = parse_config(base(**{"resources.gpu": 0.5}))
    nodes = [{"node_id": "a", "address": "127.0.0.1", "cpu": 2.0, "gpu": 0.0}]
    with pytest.raises(ConfigError, match="resources.gpu.*no GPU"):
        check_resources(cfg, nodes)


def test_fractional_gpus_pack_and_cpu_limits():
    cfg = parse_config(base(**{"resources.gpu": 0.25, "resources.gpu_by_load": "{16: 1}"}))
    nodes = [{"node_id": "a", "address": "x", "cpu": 16.0, "gpu": 1.0},
             {"node_id": "b", "address": "y", "cpu": 2.0, "gpu": 1.0}]
    plan = check_resources(cfg, nodes)
    assert plan["trials_at_once"] == {8: 4 + 2, 16: 1 + 1}
    assert fits_on_node({"cpu": 1, "gpu": 0.25}, nodes[0]) == 4
    too_big = parse_config(base(**{"resources.cpu": 32}))
    with pytest.raises(ConfigError, match="more than any node"):
        check_resources(too_big, nodes)


def test_yaml_files_that_are_empty_or_repeat_a_key_are_refused(tmp_path):
    from orchestrator.config import load_config

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty.yaml: the file is empty"):
        load_config(str(empty))
    twice = tmp_path / "twice.yaml"
    twice.write_text(yaml.safe_dump(base()) + "training:\n  epochs: 50\n")  # a second block would win silently
    with pytest.raises(ConfigError, match=r"key 'training' appears twice .*keep one"):
        load_config(str(twice))
    nested = tmp_path / "nested.yaml"
    nested.write_text("name: t\ntraining:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' appears twice in one mapping \(line 4\)"):
        load_config(str(nested))


def test_names_widths_and_per_load_resources_are_bounded():
    assert "name" in error_of(base(name="../../etc"))
    assert "name" in error_of(base(name=""))
    parse_config(base(name="paper-width_batch.v2"))
    assert "load.values[0]: a width must be an integer in [1, 1000000], got 1e+300" in error_of(
        base(**{"load.values": "[1.0e300]"}))
    assert "workload.width" in error_of(base(**{"load.name": "label_noise", "load.values": "[0.1]",
                                                "workload.width": 10**12}))
    assert "resources.gpu_by_load.8" in error_of(base(**{"resources.gpu_by_load": "{8: .nan}"}))
    assert "resources.cpu_by_load.8" in error_of(base(**{"resources.cpu_by_load": "{8: .inf}"}))


def test_model_options_must_have_the_type_of_their_default():
    msg = error_of(base(**{"workload.model_args": "{depth: 1e9}"}))  # YAML 1.1 reads 1e9 as a string
    assert "workload.model_args" in msg and "option depth must be an integer (default 2)" in msg
    assert "must be an integer" in error_of(base(**{"workload.model_args": "{depth: 2.5}"}))
    assert "must be true or false" in error_of(base(**{"workload.model": "cnn", "workload.model_args": "{batch_norm: 1}"}))
    parse_config(base(**{"workload.model_args": "{depth: 3}"}))


@pytest.mark.parametrize("field, value", [
    ("metrics.cka_probes", 10**9), ("metrics.curve.points", 10**9), ("training.epochs", 10**9),
    ("metrics.curve.epochs", 10**9), ("metrics.hessian_eigen_max_iter", 10**6),
    ("metrics.hessian_trace_max_probes", 10**9), ("run.max_failures", 10**6), ("run.object_store_mb", 10**9),
])
def test_sizes_beyond_any_real_sweep_are_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: .* beyond any real sweep \(at most"):
        parse_config(base(**{field: value}))


def test_a_grid_of_millions_of_models_or_pairs_is_refused_before_it_is_built():
    """2 M models were once accepted (the driver reached 1.6 GB making their plan); the count is checked
    from the axis lengths, before any list of keys exists."""
    huge = {"load.values": str(list(range(1, 201))), "temperature.values": str(list(range(1, 101))),
            "seeds": str(list(range(100)))}
    with pytest.raises(ConfigError, match=r"^load\.values: the grid has 2,000,000 models"):
        parse_config(base(**huge))
    with pytest.raises(ConfigError, match=r"^metrics\.pairs: the grid has .* seed pairs"):
        parse_config(base(**{"seeds": str(list(range(1000))), "metrics.pairs": "all"}))
    from orchestrator.config import MAX_MODELS

    paper = load_config("paper-width-batch", check_data=False)  # the largest real grid: 110x below the cap
    assert 100 * len(paper.model_keys()) < MAX_MODELS


def test_a_config_without_seed_pairs_warns_that_there_will_be_no_phases():
    from orchestrator.config import config_warnings
    from tests.helpers import landscape_in_process

    assert config_warnings(parse_config(base())) == []
    for changes in ({"seeds": "[0]"}, {"metrics.pairs": "[]"}):
        (warning,) = config_warnings(parse_config(base(**changes)))
        assert "no seed pairs" in warning and "no cell gets a phase" in warning
    proc = landscape_in_process("validate", "smoke", "--set", "seeds=[0]")
    assert proc.returncode == 0 and "0 pairs" in proc.stdout
    assert proc.stderr.startswith("warning: no seed pairs (one seed)") and "at least two seeds" in proc.stderr


# ---------------------------------------------------------------------------------------------------------
# Settings added after runs existed: the curve's lr schedule


# RUN_DIR/config.yaml as `landscape run smoke` saved it before metrics.curve.lr_schedule existed, and its hash.
SAVED_BEFORE_LR_SCHEDULE = """\
name: smoke
description: The whole pipeline on a 2 x 2 x 2 grid (MNIST-1D MLP) in under a minute on 2 CPUs; used by the tests.
workload:
  dataset: mnist1d
  data_root: null
  model: mlp
  model_args: {depth: 2}
  width: 64
  data_seed: 0
  train_fraction: null
  label_noise: null
load:
  name: width
  values: [8, 64]
temperature:
  name: batch_size
  values: [32, 256]
seeds: [0, 1]
training: {epochs: 3, batch_size: 128, lr: 0.05, momentum: 0.9, weight_decay: 0.0005, schedule: constant, lr_scaling: none,
  base_batch_size: 128, checkpoint_every: 0}
metrics:
  hessian_samples: 256
  hessian_backend: lanczos
  hessian_eigen_tol: 0.001
  hessian_eigen_max_iter: 30
  hessian_trace_tol: 0.01
  hessian_trace_max_probes: 20
  hessian_batch_size: null
  hessian_seed: 0
  cka_probes: 256
  cka_probe_seed: 0
  curve: {epochs: 2, lr: 0.05, momentum: 0.9, weight_decay: 0.0005, batch_size: 128, points: 5, seed: 0}
  pairs: auto
resources:
  cpu: 1.0
  gpu: auto
  auto_gpu_share: 0.25
  gpu_by_load: {}
  cpu_by_load: {}
  pair_cpu: null
  pair_gpu: null
run: {storage: runs/smoke-old, max_concurrent: null, max_failures: 1, object_store_mb: 128}
"""
SAVED_BEFORE_LR_SCHEDULE_HASH = "5b25ff08a62ba453"


def test_a_saved_config_from_before_the_lr_schedule_keeps_its_schedule_and_hash():
    old = parse_config(yaml.safe_load(SAVED_BEFORE_LR_SCHEDULE))
    assert old.metrics.curve.lr_schedule == "garipov-epoch0"
    assert old.config_hash() == SAVED_BEFORE_LR_SCHEDULE_HASH
    # Saved again (now with the field) and reloaded: the same config and hash; the field stays out of the hash.
    again = parse_config(yaml.safe_load(old.to_yaml()))
    assert again == old and again.config_hash() == SAVED_BEFORE_LR_SCHEDULE_HASH
    assert "lr_schedule: garipov-epoch0" in old.to_yaml()
    assert "lr_schedule" not in old.science_dict()["metrics"]["curve"]
    # A resume that sets it explicitly to the new value is a different experiment.
    changed = parse_config(apply_overrides(yaml.safe_load(SAVED_BEFORE_LR_SCHEDULE), ["metrics.curve.lr_schedule=garipov"]))
    assert changed.metrics.curve.lr_schedule == "garipov" and changed.config_hash() != SAVED_BEFORE_LR_SCHEDULE_HASH


def test_a_user_config_gets_the_garipov_schedule_and_the_9_point_grid():
    raw = yaml.safe_load(SAVED_BEFORE_LR_SCHEDULE)
    cfg = parse_config(base())
    assert cfg.metrics.curve.lr_schedule == "garipov" and cfg.metrics.curve.points == 9
    assert cfg.science_dict()["metrics"]["curve"]["lr_schedule"] == "garipov"
    # A user's config missing one field of the saved form (here run.storage) is a user's config, whatever else
    # it holds.
    del raw["run"]["storage"]
    assert parse_config(raw).metrics.curve.lr_schedule == "garipov"
    assert parse_config(raw).config_hash() != SAVED_BEFORE_LR_SCHEDULE_HASH
    for name in builtin_names():
        assert load_config(name, check_data=False).metrics.curve.lr_schedule == "garipov", name


def test_curve_lr_schedule_is_validated_and_matches_the_workloads():
    from workloads.metrics.connectivity import CURVE_LR_SCHEDULES

    from orchestrator.config import CURVE_LR_SCHEDULES as CONFIG_SCHEDULES

    assert set(CONFIG_SCHEDULES) == set(CURVE_LR_SCHEDULES)
    assert "metrics.curve.lr_schedule" in error_of(base(**{"metrics.curve.lr_schedule": "garipov-epoch1"}))
    assert "did you mean 'garipov-epoch0'" in error_of(base(**{"metrics.curve.lr_schedule": "garipov-epoch1"}))


def test_the_sweep_passes_the_lr_schedule_to_the_curve():
    from orchestrator.planning.cells import cell_spec

    for schedule in ("garipov", "garipov-epoch0"):
        cfg = parse_config(base(**{"metrics.curve.lr_schedule": schedule}))
        assert cell_spec(cfg, 8, 32).curve.lr_schedule == schedule
