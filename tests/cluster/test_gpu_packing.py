"""GPU requests: `gpu: auto` decided from the cluster (CPUs only without a GPU, packed fractions with one);
an explicit GPU number refused at once on a CPU-only cluster.

This machine has no GPU, so the packing test declares one (`ray start --head --num-gpus=1`): Ray then
accounts for it exactly as for a real one, and the trials, which find no CUDA, run on the CPU and say so
in the ``device`` column. Concurrency is measured from the models table: a trial's interval is
[finished_at - wall_seconds, finished_at].
"""

from __future__ import annotations

import os
import subprocess
import time

import pandas as pd
import pytest
import yaml

from analysis.tables import RunTables
from orchestrator.config import parse_config
from orchestrator.cluster.resources import check_resources, describe_capacity
from tests.helpers import hygienic_env, landscape_cmd
from tests.raycluster import LoopbackCluster

# Six trials of one cell asking for half a CPU each and `gpu: auto` (the default: auto_gpu_share = 0.25 of
# a GPU when the cluster has one): on 1 GPU and 4 CPUs the GPU is the limit (4 at once; the CPUs alone
# would allow 8). Each trial trains for ~5 s of one core, so four sharing this machine's two cores overlap
# for many seconds whatever the start-up jitter.
PACKING = {
    "name": "packing",
    "description": "six small trials asking for a quarter GPU each",
    "workload": {"dataset": "digits", "model": "mlp", "model_args": {"depth": 2}},
    "load": {"name": "width", "values": [128]},
    "temperature": {"name": "batch_size", "values": [16]},
    "seeds": list(range(6)),
    "training": {"epochs": 30, "lr": 0.05},
    "metrics": {"hessian_samples": 100, "hessian_eigen_max_iter": 5, "hessian_trace_max_probes": 2,
                "cka_probes": 64, "pairs": []},
    "resources": {"cpu": 0.5},
    "run": {"max_failures": 0},
    "execution": {"cohort": "off"},  # packing of single trials (a cohort of them would hold one GPU: 1 trial)
}


def max_overlap(starts, ends) -> int:
    """The most intervals [start, end] open at one instant."""
    events = sorted([(s, 1) for s in starts] + [(e, -1) for e in ends], key=lambda ev: (ev[0], ev[1]))
    open_, best = 0, 0
    for _, step in events:
        open_ += step
        best = max(best, open_)
    return best


def test_max_overlap_reference():
    assert max_overlap([0, 1, 2], [3, 4, 5]) == 3
    assert max_overlap([0, 2], [1, 3]) == 1
    assert max_overlap([0, 1], [1, 2]) == 1  # touching intervals do not overlap (end sorts first)


def test_packing_is_reported_by_load_group():
    cfg = parse_config({**PACKING, "load": {"name": "width", "values": [8, 16, 64]},
                        "resources": {"cpu": 1, "gpu": 0.25, "gpu_by_load": {64: 1}, "cpu_by_load": {64: 4}}})
    nodes = [{"node_id": "a", "address": "127.0.0.1", "cpu": 8.0, "gpu": 2.0}]
    plan = check_resources(cfg, nodes)
    assert plan["trials_at_once"] == {8: 8, 16: 8, 64: 2}
    lines = describe_capacity(cfg, plan)
    assert "trials at once: 8 at width 8, 16 (1 CPU + 0.25 GPU each); 2 at width 64 (4 CPU + 1 GPU each)" in lines


def test_autoscaler_workers_count_before_they_exist(tmp_path, monkeypatch):
    """On a `ray up` cluster the head has no GPU and no worker runs yet: the launcher config on the head
    says which workers the autoscaler may start, so a GPU sweep is accepted and sized, not refused."""
    import json

    from orchestrator.config import ConfigError
    from orchestrator.cluster.resources import autoscaler_node_types

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(json.dumps({
        "max_workers": 3, "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 0}, "max_workers": 0},
            "gpu_1x": {"resources": {"CPU": 8, "GPU": 1}, "max_workers": 2},
            "gpu_8x": {"resources": {"CPU": 96, "GPU": 8}, "max_workers": 1},
        },
    }))
    monkeypatch.setenv("LANDSCAPE_AUTOSCALING_CONFIG", str(bootstrap))
    types = autoscaler_node_types()
    assert {t["name"]: t["count"] for t in types} == {"gpu_1x": 2, "gpu_8x": 1}
    cfg = parse_config({**PACKING, "resources": {"cpu": 1, "gpu": 0.25}})
    head = [{"node_id": "h", "address": "10.0.0.1", "cpu": 0.0, "gpu": 0.0}]
    with pytest.raises(ConfigError, match="no GPU"):
        check_resources(cfg, head)  # without the launcher config: refused
    plan = check_resources(cfg, head, types)
    assert plan["trials_at_once"] == {128: 0}
    assert plan["trials_at_most"] == {128: 32 + 2 * 4}  # the 8-GPU node, then two 1-GPU nodes (cap 3)
    assert "up to 40 once the autoscaler has started its workers" in "\n".join(describe_capacity(cfg, plan))
    monkeypatch.setenv("LANDSCAPE_AUTOSCALING_CONFIG", str(tmp_path / "missing.yaml"))
    assert autoscaler_node_types() == []


def test_auto_gpu_is_decided_by_the_cluster():
    cfg = parse_config({**PACKING, "load": {"name": "width", "values": [8, 64]},
                        "resources": {"cpu": 1, "gpu_by_load": {64: 1}, "pair_gpu": 0.5}})
    assert cfg.gpu_is_auto
    with pytest.raises(ValueError, match="auto"):
        cfg.trial_gpu(8)  # undecided requests never reach Ray

    cpu_only = [{"node_id": "a", "address": "127.0.0.1", "cpu": 4.0, "gpu": 0.0}]
    plan = check_resources(cfg, cpu_only)  # gpu_by_load and pair_gpu describe the GPU layout: not used here
    assert plan["requests"][8] == {"trial": {"cpu": 1.0, "gpu": 0.0}, "pair": {"cpu": 1.0, "gpu": 0.0}}
    assert plan["requests"][64]["trial"] == {"cpu": 1.0, "gpu": 0.0} and plan["trials_at_once"] == {8: 4, 64: 4}
    assert "GPUs: auto -> CPU-only cluster: every job runs on CPUs" in describe_capacity(cfg, plan)

    one_gpu = [{"node_id": "a", "address": "127.0.0.1", "cpu": 8.0, "gpu": 1.0}]
    plan = check_resources(cfg, one_gpu)
    assert plan["requests"][8] == {"trial": {"cpu": 1.0, "gpu": 0.25}, "pair": {"cpu": 1.0, "gpu": 0.5}}
    assert plan["requests"][64]["trial"] == {"cpu": 1.0, "gpu": 1.0} and plan["trials_at_once"] == {8: 4, 64: 1}
    assert any(line.startswith("GPUs: auto -> the cluster has GPUs: 0.25 GPU per trial")
               for line in describe_capacity(cfg, plan))

    # A head without GPUs whose autoscaler may start GPU workers is a GPU cluster.
    gpu_type = [{"name": "gpu_1x", "cpu": 8.0, "gpu": 1.0, "count": 2, "cluster_max_workers": 2}]
    plan = check_resources(cfg, [{"node_id": "h", "address": "10.0.0.1", "cpu": 0.0, "gpu": 0.0}], gpu_type)
    assert plan["requests"][8]["trial"]["gpu"] == 0.25 and plan["trials_at_most"][8] == 8

    # A share no node can give names the setting that decided it.
    from orchestrator.config import ConfigError

    half_gpus = [{"node_id": "a", "address": "127.0.0.1", "cpu": 8.0, "gpu": 0.5}]
    with pytest.raises(ConfigError, match=r"resources.auto_gpu_share: a trial at width=8 asks for 1 CPU and 1 GPU"):
        check_resources(parse_config({**PACKING, "load": {"name": "width", "values": [8]},
                                      "resources": {"auto_gpu_share": 1}}), half_gpus)

    # The share is validated like any GPU request.
    for bad, why in ((0, "GPU share > 0"), (1.5, "whole number"), ("lots", "must be a number")):
        with pytest.raises(ConfigError, match=f"resources.auto_gpu_share.*{why}"):
            parse_config({**PACKING, "resources": {"auto_gpu_share": bad}})
    with pytest.raises(ConfigError, match="resources.gpu must be auto .* did you mean 'auto'"):
        parse_config({**PACKING, "resources": {"gpu": "atuo"}})


@pytest.mark.ray
def test_gpu_by_load_on_a_cpu_only_cluster_fails_fast(short_tmp, ray_tmpdir):
    """Explicit GPU numbers are requirements: refused at once by a cluster without GPUs."""
    started = time.monotonic()
    proc = subprocess.run(landscape_cmd() + ["run", "smoke", "--out", os.path.join(short_tmp, "run"),
                                             "--set", "resources.gpu=0", "--set", "resources.gpu_by_load={64: 1}"],
                          capture_output=True, text=True, env=hygienic_env(ray_tmpdir), timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert err.startswith("error: resources.gpu:") and "width=64" in err and "no GPU" in err, err
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1
    assert time.monotonic() - started < 60


def validate_and_run_on_a_declared_gpu(short_tmp: str, raw: dict):
    """`landscape validate --address` and `landscape run --address` of the config ``raw`` on a loopback cluster of
    4 CPUs and 1 declared GPU (stopped afterwards, leaving no process): (validate's and run's CompletedProcess,
    the run directory)."""
    config = os.path.join(short_tmp, f"{raw['name']}.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(raw, f)
    run_dir = os.path.join(short_tmp, "run")
    with LoopbackCluster() as cluster:
        cluster.start_head(num_cpus=4, num_gpus=1)
        env = hygienic_env(cluster.temp_dir)
        check = subprocess.run(landscape_cmd() + ["validate", config, "--address", cluster.address],
                               capture_output=True, text=True, env=env, timeout=120)
        assert check.returncode == 0, check.stderr
        proc = subprocess.run(landscape_cmd() + ["run", config, "--address", cluster.address, "--out", run_dir,
                                                 "--no-analysis"],
                              capture_output=True, text=True, env=env, timeout=240)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
        survivors = cluster.stop()
    assert not survivors, survivors
    return check, proc, run_dir


@pytest.mark.ray
@pytest.mark.slow
def test_quarter_gpus_run_four_trials_at_once_on_a_declared_gpu(short_tmp):
    check, proc, run_dir = validate_and_run_on_a_declared_gpu(short_tmp, PACKING)
    assert "cluster: 1 node(s), 4 CPU, 1 GPU" in check.stdout, check.stdout
    assert "GPUs: auto -> the cluster has GPUs: 0.25 GPU per trial" in check.stdout, check.stdout
    assert "trials at once: 4 at width 128 (0.5 CPU + 0.25 GPU each)" in check.stdout, check.stdout
    assert "trials at once: 4 at width 128 (0.5 CPU + 0.25 GPU each)" in proc.stdout
    # No CUDA here: the trials ran on the CPU, recorded it, and the command said so.
    assert "CUDA was not available" in proc.stderr, proc.stderr[-2000:]

    models = RunTables(run_dir).read("models")
    assert len(models) == 6 and (models.status == "ok").all(), models[["status", "error"]]
    assert models.device.str.match(r"cpu \(Ray GPU \d+ has no CUDA\)").all(), models.device.tolist()
    ends = pd.to_datetime(models.finished_at)
    starts = ends - pd.to_timedelta(models.wall_seconds, unit="s")
    overlap = max_overlap(list(starts), list(ends))
    assert overlap == 4, f"{overlap} trials at once; intervals:\n{pd.DataFrame({'start': starts, 'end': ends})}"


@pytest.mark.ray
def test_the_cohorts_printed_for_a_gpu_cluster_are_the_cohorts_that_run(short_tmp):
    """`gpu: auto` on a cluster with a GPU caps a cohort at 1 / its share (4 members at a quarter GPU) and auto
    splits cohorts to fill the trials at once: validate --address and run print the cohorts after deciding the
    GPU share for the cluster, so the printed line describes the cohorts whose rows the models table holds."""
    import re

    pattern = r"cohorts \(execution.cohort: auto\): (\d+) training trials? of (\d+(?:-\d+)?) models each"
    check, proc, run_dir = validate_and_run_on_a_declared_gpu(
        short_tmp, {**PACKING, "name": "gpu-cohorts", "training": {"epochs": 3, "lr": 0.05},
                    "execution": {"cohort": "auto"}})
    validated, ran = re.search(pattern, check.stdout), re.search(pattern, proc.stdout)
    assert validated and ran, (check.stdout, proc.stdout)
    assert validated.groups() == ran.groups()
    models = RunTables(run_dir).read("models")
    assert len(models) == 6 and (models.status == "ok").all(), models[["status", "error"]]
    sizes = sorted(models.groupby("cohort").size())
    printed = [int(s) for s in ran.group(2).split("-")]
    assert len(sizes) == int(ran.group(1)) and (sizes[0], sizes[-1]) == (printed[0], printed[-1]), (sizes, ran.group(0))
    assert max(sizes) <= 4  # at most 1 / 0.25 members: one GPU's worth of packed trials
