"""The built-in configs: all validate statically; the paper's say truthfully how big and how costly they are.

Also the pieces the paper configs rely on: fixed label noise / training fraction on a width grid, ~ in the
data folder, the cost estimate's arithmetic, and the clear error of a local run without the CIFAR files.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import torch

from orchestrator.config import (
    ConfigError,
    apply_overrides,
    builtin_names,
    load_config,
    parse_config,
    read_raw,
)
from orchestrator.planning.estimate import DEFAULT_GPU, GpuBasis, estimate_gpu_hours, forward_flops
from orchestrator.cluster.resources import check_resources
from tests.helpers import hygienic_env, landscape_cmd

PAPER = ["paper-width-batch", "paper-width-batch-lr-decay", "paper-width-batch-noisy", "paper-width-wd",
         "paper-data-batch", "paper-noise-batch"]
# One AWS g5.2xlarge (8 vCPUs, one 24 GB A10G): cluster.yaml's small GPU worker.
G5 = {"node_id": "g5", "address": "10.0.0.2", "cpu": 8.0, "gpu": 1.0}


def test_every_builtin_validates_statically():
    assert set(PAPER) <= set(builtin_names())
    for name in builtin_names():
        cfg = load_config(name, check_data=False)
        assert cfg.name == name


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_documents_its_size_and_cost(name):
    cfg = load_config(name, check_data=False)
    raw_text = open(read_raw(name)[1]).read()
    models, pairs = len(cfg.model_keys()), len(cfg.pair_keys())
    assert f"{models} models" in cfg.description and f"{models} models and {pairs} pairs" in raw_text
    est = estimate_gpu_hours(cfg)
    stated = re.search(r"~([\d,]+) A10G GPU-hours", cfg.description)
    assert stated, cfg.description
    assert int(stated.group(1).replace(",", "")) == round(est.gpu_hours, -1), (stated.group(0), est.summary())
    # method.md section 2: the authors' training and the paper's 5 seeds; CIFAR-10 ResNet18.
    assert (cfg.workload.dataset, cfg.workload.model, cfg.seeds) == ("cifar10", "resnet18", (0, 1, 2, 3, 4))
    t = cfg.training
    assert (t.epochs, t.lr, t.momentum, t.lr_scaling) == (100, 0.1, 0.9, "none")
    assert t.schedule == ("step" if name.endswith("lr-decay") else "constant")
    # Every job fits one g5 worker (a job runs on one node), and GPUs are requested.
    plan = check_resources(cfg, [G5])
    assert min(plan["trials_at_once"].values()) >= 1 and cfg.trial_gpu(cfg.load.values[0]) > 0


def test_paper_grids_are_the_released_ones():
    wb = load_config("paper-width-batch", check_data=False)
    assert len(wb.load.values) == 14 and len(wb.temperature.values) == 13 and len(wb.model_keys()) == 910
    noisy = load_config("paper-width-batch-noisy", check_data=False)
    assert noisy.workload.label_noise == 0.1 and noisy.model_keys() == wb.model_keys()
    wd = load_config("paper-width-wd", check_data=False)
    assert wd.temperature.name == "weight_decay" and max(wd.temperature.values) == 3.2e-3
    assert all(a / b == pytest.approx(2.0) for a, b in zip(wd.temperature.values, wd.temperature.values[1:]))
    assert load_config("paper-data-batch", check_data=False).load.values[0] == 0.1
    assert load_config("paper-noise-batch", check_data=False).load.values[-1] == 0.8
    # Packing: four small widths per GPU, whole GPUs for the widest.
    assert wb.trial_gpu(16) == 0.25 and wb.trial_gpu(32) == 0.5 and wb.trial_gpu(128) == 1.0
    assert check_resources(wb, [G5])["trials_at_once"][4] == 4


def test_estimate_arithmetic_against_a_hand_count():
    """One cell, one seed, no pairs: training + evaluation + Hessian FLOPs, and packed step overhead."""
    raw = {"name": "e", "workload": {"dataset": "cifar10", "data_root": "/nonexistent", "model": "resnet18"},
           "load": {"name": "width", "values": [4]}, "temperature": {"name": "batch_size", "values": [100]},
           "seeds": [0], "training": {"epochs": 2},
           "metrics": {"hessian_samples": 10, "hessian_eigen_max_iter": 3, "hessian_trace_max_probes": 2,
                       "pairs": []},
           "resources": {"gpu": 0.25}}
    cfg = parse_config(raw, check_data=False)
    basis = GpuBasis(name="test", sustained_flops=1e12, step_overhead_s=0.01)
    fwd = forward_flops("resnet18", 4, (3, 32, 32), 10, ())
    steps = 2 * (50000 // 100)
    flops = 3 * fwd * 100 * steps + fwd * 60000 + 6 * fwd * 10 * 5
    expected_s = flops / 1e12 + steps * 0.01 * 0.25
    est = estimate_gpu_hours(cfg, basis)
    assert est.pair_gpu_hours == 0 and est.gpu_hours == pytest.approx(expected_s / 3600, rel=1e-9)
    # The FLOP counter against a hand count for a bare linear layer: 2 * in * out per example.
    assert forward_flops("mlp", 8, (40,), 10, (("depth", 1),)) == pytest.approx(2 * (40 * 8 + 8 * 10))
    assert DEFAULT_GPU.sustained_flops > 0


def test_fixed_label_noise_and_fraction_on_a_width_grid():
    from orchestrator.planning.cells import cell_spec
    from workloads.data import corrupt_labels, load_dataset, subsample_train

    raw = {"name": "f", "workload": {"dataset": "digits", "model": "mlp", "label_noise": 0.2, "train_fraction": 0.5,
                                     "data_seed": 3},
           "load": {"name": "width", "values": [8]}, "temperature": {"name": "batch_size", "values": [32]},
           "seeds": [0]}
    cfg = parse_config(raw)
    data = cell_spec(cfg, 8, 32).data()
    reference = corrupt_labels(subsample_train(load_dataset("digits"), 0.5, 3), 0.2, 3)
    assert torch.equal(data.train_x, reference.train_x) and torch.equal(data.train_y, reference.train_y)
    assert data.info["label_noise_realised"] == pytest.approx(0.2, abs=0.01)
    # The new settings change the config hash only when set.
    plain = parse_config({**raw, "workload": {"dataset": "digits", "model": "mlp", "data_seed": 3}})
    assert "label_noise" not in plain.science_dict()["workload"]
    assert plain.config_hash() != cfg.config_hash()
    with pytest.raises(ConfigError, match="workload.label_noise.*already"):
        parse_config(apply_overrides(raw, ["load.name=label_noise", "load.values=[0.1]"]))
    with pytest.raises(ConfigError, match="workload.train_fraction"):
        parse_config(apply_overrides(raw, ["workload.train_fraction=1.5"]))


def test_cpu_by_load_overrides_cpu():
    raw = {"name": "c", "workload": {"dataset": "digits", "model": "mlp"},
           "load": {"name": "width", "values": [8, 64]}, "temperature": {"name": "batch_size", "values": [32]},
           "seeds": [0], "resources": {"cpu": 1, "cpu_by_load": {64: 2}}}
    cfg = parse_config(raw).with_gpus_available(False)  # gpu: auto on a CPU-only cluster
    assert cfg.trial_resources(8) == {"cpu": 1.0, "gpu": 0.0} and cfg.trial_resources(64) == {"cpu": 2.0, "gpu": 0.0}
    assert cfg.pair_resources(64)["cpu"] == 2.0
    with pytest.raises(ConfigError, match="resources.cpu_by_load.16"):
        parse_config(apply_overrides(raw, ["resources.cpu_by_load={16: 2}"]))


def test_data_root_tilde_is_expanded_where_the_data_is_read(monkeypatch, tmp_path):
    from orchestrator.config import missing_data_root
    from orchestrator.planning.cells import cell_spec

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config("paper-width-batch", check_data=False)
    assert cell_spec(cfg, 4, 16).data_root == str(tmp_path / "data")
    assert "does not exist" in missing_data_root(cfg)
    (tmp_path / "data").mkdir()
    # An empty folder is not the data (validate once said "ok" and every job then failed): the files are named.
    problem = missing_data_root(cfg)
    assert "missing data_batch_1" in problem and "cifar-10-batches-py" in problem, problem
    with pytest.raises(ConfigError, match="workload.data_root.*missing data_batch_1"):
        load_config("paper-width-batch")
    batches = tmp_path / "data" / "cifar-10-batches-py"
    batches.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        (batches / name).write_bytes(b"")  # looked for, not read, before Ray (the md5 check runs in the jobs)
    assert missing_data_root(cfg) is None and load_config("paper-width-batch").name == "paper-width-batch"


def test_validate_cli_notes_the_missing_data_folder_and_the_cost(tmp_path, ray_tmpdir):
    env = hygienic_env(ray_tmpdir, HOME=str(tmp_path))  # no ~/data here
    proc = subprocess.run(landscape_cmd() + ["validate", "paper-width-batch"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ok: paper-width-batch: 910 models" in proc.stdout
    assert "note: workload.data_root" in proc.stdout and "does not exist" in proc.stdout
    assert "GPU-hours" in proc.stdout
    # A local run needs the files here: it refuses at once, before Ray, naming the field.
    run = subprocess.run(landscape_cmd() + ["run", "paper-width-batch", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: workload.data_root:"), run.stderr
    assert not os.path.exists(tmp_path / "run")
