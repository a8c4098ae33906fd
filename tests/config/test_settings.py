"""One settings schema: every setting declared once (workloads/settings.py) with one default and one check, used
as it is by a notebook user and by the sweep config (orchestrator/config), whose hash of every existing run
stays what it was."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from orchestrator.config import ConfigError, SweepConfig, apply_overrides, builtin_names, load_config, parse_config
from orchestrator.config.build import build, config_fields, legacy_values, section_keys
from workloads.settings import NO_LEGACY, CkaSettings, CurveConfig, HessianSettings, TrainConfig, Workload, info

# The config hash of every built-in and of the released 0.1.0 run, as the code before the settings schema
# computed them (main at 7737f63): a changed hash would make every existing run directory refuse its config.
# The hashes of the built-ins before the settings schema (computed on main before the change; the demo and the
# cpu-* gallery as chosen for issue #10's layout): restructuring how settings are declared changes none of them.
HASHES_BEFORE = {
    "demo": "eaaac0700c0881a7", "paper-data-batch": "6bd1a555392fc00f", "paper-noise-batch": "f8fc35c045370fd2",
    "paper-width-batch": "4893dabf170e2737", "paper-width-batch-lr-decay": "26c9369b34e86eb1",
    "paper-width-batch-noisy": "f4958fdfb235d91b", "paper-width-wd": "d0c39a20b030c1ad", "smoke": "c78383e05e43e469",
    "cpu-data-size": "8fc8b53db4225b18", "cpu-label-noise": "21c7265dd7c03e7c", "cpu-learning-rate": "99992ec961b8606e",
    "cpu-lr-decay": "97e47fb7cb32d873", "cpu-noisy-labels": "2bce66412dd2be7f", "cpu-weight-decay": "2b1d728e1a732ccc",
    "cpu-double-descent": "6c342b789a236ee7",  # added after the change, pinned from its first version
    "demo-fine": "eaaac0700c0881a7",  # the demo's: the grid and the search decide which rows exist, not their values
}
V010_HASH = "5b25ff08a62ba453"


def small(**changes) -> dict:
    raw = {"name": "t", "workload": {"dataset": "mnist1d", "model": "mlp"}, "load": {"name": "width", "values": [8]},
           "temperature": {"name": "batch_size", "values": [32]}, "seeds": [0, 1], "training": {"epochs": 2}}
    return apply_overrides(raw, [f"{k}={v}" for k, v in changes.items()])


def test_the_hash_of_every_builtin_and_of_the_released_run_is_unchanged():
    assert set(builtin_names()) == set(HASHES_BEFORE)  # a new built-in is pinned here too
    for name in builtin_names():
        if name in HASHES_BEFORE:
            assert load_config(name, check_data=False).config_hash() == HASHES_BEFORE[name], name
    with open("tests/data/run_v0_1_0/config.yaml") as f:
        saved = parse_config(yaml.safe_load(f), check_data=False)
    assert saved.config_hash() == V010_HASH
    # Saved again (now with every field added since) and read back: the same config, the same hash.
    again = parse_config(yaml.safe_load(saved.to_yaml()), check_data=False)
    assert again == saved and again.config_hash() == V010_HASH


def test_settings_added_after_0_1_0_declare_their_legacy_value_and_stay_out_of_the_hash_there(tmp_path, monkeypatch):
    # A module name of its own: test_metric_specs writes another "mymetrics", and sys.modules keeps the first.
    (tmp_path / "hash_test_metrics.py").write_text(
        "from workloads.metric_specs import MetricSpec\n"
        "SPEC = MetricSpec('my_norm', 'model', compute='hash_test_metrics:norm')\n"
        "def norm(model, data):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    legacy = legacy_values(SweepConfig)
    assert legacy[("metrics", "curve", "lr_schedule")] == "garipov-epoch0"
    assert legacy[("metrics", "curve", "mc_on")] == "error"
    assert legacy[("metrics", "cka_probe_maker")] == "mixup"
    assert legacy[("workload", "dataset_args")] == {}
    base = parse_config(small())
    assert "mc_on" not in base.science_dict()["metrics"]["curve"]
    assert "cka_probe_maker" not in base.science_dict()["metrics"]
    # The new value of such a setting is another experiment: another hash.
    assert parse_config(small(**{"metrics.curve.mc_on": "loss"})).config_hash() != base.config_hash()
    # (built, not validated: a built-in dataset refuses dataset_args, which are a plug-in dataset's options)
    assert build(SweepConfig, small(**{"workload.dataset_args": "{a: 1}"})).config_hash() != base.config_hash()
    # Settings that do not change a result never enter the hash.
    for change in ({"metrics.extra": "[hash_test_metrics:SPEC]"}, {"training.checkpoint_every": 3}, {"metrics.pairs": "all"}):
        assert parse_config(small(**change)).config_hash() == base.config_hash(), change


def test_a_notebook_dataclass_and_the_config_run_the_same_check():
    with pytest.raises(ValueError, match=r"invalid TrainConfig: epochs must be >= 1, got 0; momentum must lie in \[0, 1\)"):
        TrainConfig(epochs=0, momentum=1.5)
    with pytest.raises(ConfigError, match=r"^training.epochs: must be >= 1, got 0$"):
        parse_config(small(**{"training.epochs": 0}))
    with pytest.raises(ValueError, match="points must be >= 2"):
        CurveConfig(points=1)
    with pytest.raises(ConfigError, match=r"^metrics.curve.points: must be >= 2"):
        parse_config(small(**{"metrics.curve.points": 1}))
    with pytest.raises(ConfigError, match=r"^metrics.hessian_eigen_tol: must be > 0"):
        parse_config(small(**{"metrics.hessian_eigen_tol": 0}))
    with pytest.raises(ConfigError, match=r"^metrics.cka_probes: must be >= 2 \(CKA needs at least 2 probe inputs\)"):
        parse_config(small(**{"metrics.cka_probes": 1}))
    with pytest.raises(ConfigError, match=r"^workload.label_noise: a label-noise fraction must lie in \[0, 1\)"):
        parse_config(small(**{"workload.label_noise": 1.0}))
    with pytest.raises(ConfigError, match=r"metrics.curve.mc_on: unknown value 'los'; did you mean 'loss'\?"):
        parse_config(small(**{"metrics.curve.mc_on": "los"}))


def test_the_config_embeds_the_workloads_declarations_and_a_job_gets_them_as_they_are():
    from orchestrator.planning.cells import cell_spec

    cfg = parse_config(small(**{"metrics.hessian_samples": 200, "metrics.curve.points": 7}))
    assert isinstance(cfg.training, TrainConfig) and isinstance(cfg.metrics.curve, CurveConfig)
    assert isinstance(cfg.metrics.hessian, HessianSettings) and isinstance(cfg.metrics.cka, CkaSettings)
    assert isinstance(cfg.workload, Workload)
    cell = cell_spec(cfg, 8, 32)
    assert cell.training is cfg.training and cell.hessian is cfg.metrics.hessian and cell.curve is cfg.metrics.curve
    assert cell.hessian.samples == 200 and cell.curve.points == 7
    # Flattened sections keep the YAML keys of 0.1.0; per-job fields are not config keys.
    assert {"hessian_samples", "cka_probes", "cka_probe_maker", "curve"} <= set(section_keys(type(cfg.metrics)))
    assert "seed" not in {f.name for f in config_fields(TrainConfig)}
    with pytest.raises(ConfigError, match=r"unknown key 'training.seed' in training.* Known keys there: epochs"):
        parse_config(small(**{"training.epochs": 2}) | {"training": {"seed": 3}})
    with pytest.raises(ConfigError, match=r"did you mean 'metrics.hessian_samples'\?"):
        apply_overrides({}, ["metrics.hessian_sample=5"])


def test_every_setting_has_a_doc_and_every_legacy_value_passes_its_own_check():
    for cls in (TrainConfig, HessianSettings, CkaSettings, CurveConfig, Workload):
        for f in dataclasses.fields(cls):
            meta = info(f)
            if meta["sweep"]:
                assert meta["doc"], f"{cls.__name__}.{f.name} has no doc"
            if meta["legacy"] is not NO_LEGACY:
                assert all(check(meta["legacy"]) is None for check in meta["check"]), f"{cls.__name__}.{f.name}"
