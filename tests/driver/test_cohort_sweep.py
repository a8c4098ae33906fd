"""Cohorts in the sweep (execution.cohort, orchestrator/planning/cohorts.py and worker.py), on a real local Ray.

  * `landscape run smoke` with cohorts (the default) and with `--set execution.cohort=off` give the same keys,
    the same weights (<= 1e-4 relative), test accuracies within one test example and mc within 0.5 pp;
  * a member whose training diverges is recorded diverged while the other members of its cohort are ok;
  * a cohort trial killed after its checkpoint is retried by Tune and continues from the cohort checkpoint,
    with the numbers of a run that was never killed;
  * a cohort checkpoint written because training.checkpoint_minutes passed (checkpoint_every 0) is what the
    next sweep of the run continues from;
  * a resume with one member missing trains only that member (a cohort of one);
and, without Ray, the planning: cohorts formed from the missing keys only, the cap N, off, the config keys.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter

import pytest
import torch

from analysis.tables import RunTables
from orchestrator.rundir import storage
from orchestrator.planning.cohorts import cohort_request, describe_cohorts, model_cohorts, pair_cohorts
from orchestrator.config import ConfigError, load_config, parse_config
from orchestrator.planning.jobs import cohort_id, mkey, pkey
from tests.helpers import hygienic_env, landscape_cmd, sweep, tiny_sweep_config


def raw_config(**changes) -> dict:
    """digits, MLP width 8, 2 epochs, learning rates 0.05 / 1e6 (the second diverges), seeds 0 and 1."""
    return tiny_sweep_config("cohorts", [0.05, 1.0e6], epochs=2, max_failures=1, **changes)


# The four models of raw_config in one cohort (auto would split them over the 2 CPUs of the Ray fixture).
ONE_COHORT = {"execution.cohort": 4}


# ---------------------------------------------------------------------------------------------------------
# Without Ray: the settings and the planning


def test_execution_settings_are_validated_and_left_out_of_the_hash():
    default = load_config("smoke")
    assert (default.execution.cohort, default.execution.compile, default.execution.precision) == ("auto", "off", "fp32")
    for override, value in (("off", "off"), ("auto", "auto"), ("3", 3)):
        cfg = load_config("smoke", [f"execution.cohort={override}"])
        assert cfg.execution.cohort == value and cfg.config_hash() == default.config_hash()
    assert load_config("smoke", ["execution.compile=off"]).execution.compile == "off"  # YAML's bare off
    cfg = load_config("smoke", ["execution.compile=reduce-overhead", "execution.precision=bf16"])
    assert cfg.config_hash() == default.config_hash()
    for override, words in (("execution.cohort=0", "a number >= 1"), ("execution.cohort=aut", "did you mean 'auto'"),
                            ("execution.compile=fast", "Choose one of: off, default"),
                            ("execution.precision=fp16", "did you mean 'bf16'"),
                            ("execution.cohrt=1", "did you mean 'execution.cohort'")):
        with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
            load_config("smoke", [override])


def test_cohorts_are_formed_from_the_missing_keys_only():
    cfg = parse_config(raw_config(**{"seeds": "[0, 1, 2]"}))
    keys = cfg.model_keys()
    assert model_cohorts(cfg, keys) == [keys]  # lr cells share a cohort: one architecture and step count
    missing = [keys[1], keys[4]]
    assert model_cohorts(cfg, missing) == [missing]
    capped = parse_config(raw_config(**{"seeds": "[0, 1, 2]", "execution.cohort": 4}))
    assert [len(c) for c in model_cohorts(capped, keys)] == [4, 2]
    off = parse_config(raw_config(**{"execution.cohort": "off"}))
    assert model_cohorts(off, off.model_keys()) == [[k] for k in off.model_keys()]
    # Batch size as the temperature: step counts differ, so cohorts are the cells; curves share per width.
    smoke = load_config("smoke")
    cohorts = model_cohorts(smoke, smoke.model_keys())
    assert sorted(len(c) for c in cohorts) == [2, 2, 2, 2] and all(len({k[:2] for k in c}) == 1 for c in cohorts)
    pairs = pair_cohorts(smoke, smoke.pair_keys())
    assert sorted(len(p) for p in pairs) == [2, 2] and all(len({k[0] for k in p}) == 1 for p in pairs)
    # Ids name the members, whatever their order.
    assert cohort_id("models", ["a", "b"]) == cohort_id("models", ["b", "a"]) != cohort_id("models", ["a"])


def test_auto_makes_a_cohort_for_every_trial_that_runs_at_once():
    cfg = parse_config(raw_config(**{"seeds": "[0, 1, 2]"}))  # one group of 6 models (lr cells share a cohort)
    keys = cfg.model_keys()
    assert [len(c) for c in model_cohorts(cfg, keys, slots=2)] == [3, 3]  # both CPUs busy, not one 6-model cohort
    assert [len(c) for c in model_cohorts(cfg, keys, slots=4)] == [2, 2, 2]
    assert [len(c) for c in model_cohorts(cfg, keys, slots=1)] == [6]
    assert sorted(k for c in model_cohorts(cfg, keys, slots=4) for k in c) == sorted(keys)  # each key once
    capped = parse_config(raw_config(**{"seeds": "[0, 1, 2]", "execution.cohort": 4}))
    assert [len(c) for c in model_cohorts(capped, keys, slots=6)] == [4, 2]  # an explicit N is the user's choice
    assert "3 training trials of 2 models each" in describe_cohorts(cfg, keys, cfg.pair_keys(), slots=4)
    # By cost, not count: the demo's width-256 cohort (its arithmetic dominates) is split, the narrow ones whose
    # cost is the per-step overhead are not; one 90-model cohort of label-noise cells is halved on 2 slots.
    demo = load_config("demo", ["execution.cohort=auto"])
    sizes = {}
    for c in model_cohorts(demo, demo.model_keys(), slots=2):
        sizes.setdefault(c[0][0], []).append(len(c))
    assert sizes[32] == sizes[64] == sizes[128] == [35] and len(sizes[256]) > 1 and sum(sizes[256]) == 35
    noisy = load_config("cpu-label-noise", ["execution.cohort=auto"])
    count = len(noisy.model_keys())  # 30 cells x 5 seeds
    assert [len(c) for c in model_cohorts(noisy, noisy.model_keys())] == [count] == [150]
    assert [len(c) for c in model_cohorts(noisy, noisy.model_keys(), slots=2)] == [count // 2, count // 2]
    assert "before auto splits them" in describe_cohorts(cfg, keys, cfg.pair_keys())


def test_cohort_resources_scale_the_gpu_share_per_member_up_to_one_gpu():
    assert cohort_request({"cpu": 1.0, "gpu": 0.25}, 3) == {"cpu": 1.0, "gpu": 0.75}
    assert cohort_request({"cpu": 2.0, "gpu": 0.25}, 21) == {"cpu": 2.0, "gpu": 1.0}
    assert cohort_request({"cpu": 1.0, "gpu": 2.0}, 5) == {"cpu": 1.0, "gpu": 2.0}
    assert cohort_request({"cpu": 1.0, "gpu": 0.0}, 5) == {"cpu": 1.0, "gpu": 0.0}
    # On GPUs a cohort has at most 1 / share members: it holds at most the GPU that many packed trials shared.
    wide = load_config("paper-width-batch", check_data=False)  # 5 seeds; gpu 0.25 at k <= 16, 0.5, 1 above
    sizes = {lv: {len(c) for c in model_cohorts(wide, [k for k in wide.model_keys() if k[0] == lv])}
             for lv in (4, 32, 128)}
    assert sizes == {4: {4, 1}, 32: {2, 1}, 128: {1}}
    cpus = load_config("paper-width-batch", ["resources.gpu=0", "resources.gpu_by_load={}"], check_data=False)
    assert {len(c) for c in model_cohorts(cpus, cpus.model_keys())} == {5}


# ---------------------------------------------------------------------------------------------------------
# Through the CLI: cohorts off and on give the same results


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_with_cohorts_equals_smoke_without(short_tmp):
    runs = {}
    for mode in ("off", "default"):
        run_dir = os.path.join(short_tmp, mode)
        extra = ["--set", "execution.cohort=off"] if mode == "off" else []
        proc = subprocess.run(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis", *extra],
                              capture_output=True, text=True, timeout=600, env=hygienic_env())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs[mode] = run_dir
    cfg = load_config("smoke")
    tables = {mode: RunTables(d) for mode, d in runs.items()}
    models = {m: t.read("models").set_index(["load_value", "temperature_value", "seed"]).sort_index()
              for m, t in tables.items()}
    pairs = {m: t.read("pairs").set_index(["load_value", "temperature_value", "seed_a", "seed_b"]).sort_index()
             for m, t in tables.items()}
    assert list(models["off"].index) == list(models["default"].index) and len(models["off"]) == 8
    assert list(pairs["off"].index) == list(pairs["default"].index) and len(pairs["off"]) == 4
    assert set(models["off"]["status"]) == set(models["default"]["status"]) == {"ok"}
    assert set(models["off"]["config_hash"]) == set(models["default"]["config_hash"])
    # The cohort column: a cohort of one per model and per pair with off; each cohort of the default run is one
    # cell's two seeds. One engine either way.
    assert dict(models["off"]["cohort"]) == {k: cohort_id("models", [mkey(cfg, *k)]) for k in models["off"].index}
    assert dict(pairs["off"]["cohort"]) == {k: cohort_id("pairs", [pkey(cfg, *k)]) for k in pairs["off"].index}
    cohorts = models["default"].groupby("cohort").size()
    assert len(cohorts) == 4 and set(cohorts) == {2}
    assert pairs["default"]["cohort"].notna().all() and pairs["default"]["cohort"].nunique() == 2
    # Traceable: the same data content either way, and the path each model was trained on.
    assert (models["off"]["dataset_sha256"] == models["default"]["dataset_sha256"]).all()
    assert models["off"]["dataset_sha256"].str.fullmatch("[0-9a-f]{64}").all()
    engines = {m: {json.loads(p)["engine"] for p in models[m]["execution_path"]} for m in models}
    assert engines == {"off": {"cohort"}, "default": {"cohort"}}, engines
    # Weights equal to 1e-4 relative, test accuracies within one test example, mc within 0.5 pp.
    for key in models["off"].index:
        a = storage.load_state(models["off"].loc[key, "model_uri"])
        b = storage.load_state(models["default"].loc[key, "model_uri"])
        flat_a = torch.cat([v.flatten().double() for v in a.values()])
        flat_b = torch.cat([b[k].flatten().double() for k in a])
        assert (flat_a - flat_b).norm() <= 1e-4 * flat_a.norm(), key
    test_size = 1000  # mnist1d's test set (workloads/dataset_facts.py)
    diff = (models["off"]["test_acc"] - models["default"]["test_acc"]).abs().max()
    assert diff <= 1.0 / test_size + 1e-12, diff
    mc = (pairs["off"]["mode_connectivity"] - pairs["default"]["mode_connectivity"]).abs().max()
    assert mc <= 0.5, mc


# Columns that say when, where and in which cohort a row was computed, not what was computed.
NOT_RESULTS = {"run_id", "config_hash", "package_version", "library_versions", "schema_version", "node_id",
               "model_uri", "cohort", "train_seconds", "metrics_seconds", "wall_seconds", "started_at",
               "finished_at"}


@pytest.mark.ray
def test_off_is_cohorts_of_one_with_the_same_bits(ray_local, tmp_path, monkeypatch):
    """One engine: execution.cohort off trains every model and pair as a cohort of one, auto as cohorts of
    several, and the weights files and every result column of the models and pairs tables are the same bits
    (only time, place and cohort id differ)."""
    runs = {}
    for mode in ("off", "auto"):
        cfg = parse_config(raw_config(cohort=mode, **{"temperature.values": "[0.05, 0.1]", "seeds": "[0, 1, 2]"}))
        runs[mode] = str(tmp_path / mode)
        sweep(cfg, runs[mode], None, tmp_path, monkeypatch)
    tables = {m: RunTables(d) for m, d in runs.items()}
    models = {m: t.read("models").set_index(["temperature_value", "seed"]).sort_index() for m, t in tables.items()}
    pairs = {m: t.read("pairs").set_index(["temperature_value", "seed_a", "seed_b"]).sort_index()
             for m, t in tables.items()}
    assert len(models["off"]) == 6 and len(pairs["off"]) == 6
    assert set(models["off"]["status"]) == {"ok"} and set(pairs["off"]["status"]) == {"ok"}
    assert models["off"]["cohort"].nunique() == 6 and models["auto"]["cohort"].nunique() < 6  # really both ways
    assert pairs["off"]["cohort"].nunique() == 6 and pairs["auto"]["cohort"].nunique() < 6
    for table in (models, pairs):
        columns = [c for c in table["off"].columns if c not in NOT_RESULTS]
        assert list(table["off"].columns) == list(table["auto"].columns)
        assert table["off"][columns].equals(table["auto"][columns]), table["off"][columns].compare(
            table["auto"][columns])
    for key in models["off"].index:
        a, b = (storage.load_state(models[m].loc[key, "model_uri"]) for m in ("off", "auto"))
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a), key
        assert storage.read_bytes(models["off"].loc[key, "model_uri"]) == storage.read_bytes(
            models["auto"].loc[key, "model_uri"]), key  # the files themselves
    curves = {m: t.read("curves") for m, t in tables.items()}
    curves = {m: c.drop(columns=[n for n in NOT_RESULTS if n in c.columns])
              .sort_values(["temperature_value", "seed_a", "seed_b", "t"]).reset_index(drop=True)
              for m, c in curves.items()}
    assert curves["off"].equals(curves["auto"])


# ---------------------------------------------------------------------------------------------------------
# In process, on the session's local Ray: divergence, a killed cohort, a resume with one member missing


def log_lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.ray
def test_a_diverged_member_is_diverged_while_its_cohort_is_ok(ray_local, tmp_path, monkeypatch):
    cfg = parse_config(raw_config(**ONE_COHORT))
    run_dir = str(tmp_path / "run")
    log = tmp_path / "attempts.jsonl"
    summary = sweep(cfg, run_dir, {"log": str(log)}, tmp_path, monkeypatch)
    models = RunTables(run_dir).read("models").set_index(["temperature_value", "seed"])
    pairs = RunTables(run_dir).read("pairs").set_index("temperature_value")
    assert models["cohort"].nunique() == 1 and models["cohort"].notna().all()  # all four in one cohort
    assert set(models.loc[0.05, "status"]) == {"ok"} and set(models.loc[1e6, "status"]) == {"diverged"}
    assert all("diverged" in e for e in models.loc[1e6, "error"])
    assert models.loc[0.05, "test_acc"].notna().all() and models.loc[1e6, "test_acc"].isna().all()
    assert pairs.loc[0.05, "status"] == "ok" and pairs.loc[1e6, "status"] == "diverged"
    # Trained once (not retried), one trial; the progress counted four models.
    assert Counter(e["key"] for e in log_lines(log)) == Counter({mkey(cfg, 8, tv, s): 1 for tv in (0.05, 1e6)
                                                                 for s in (0, 1)} | {pkey(cfg, 8, 0.05, 0, 1): 1})
    assert summary.state.models.ok == 2 and summary.state.models.diverged == 2 and summary.state.models.total == 4


@pytest.mark.ray
def test_a_killed_cohort_is_retried_from_its_checkpoint(ray_local, tmp_path, monkeypatch):
    changes = {"temperature.values": "[0.05, 0.1]", "training.epochs": 3, "training.checkpoint_every": 1,
               "metrics.pairs": "[]", **ONE_COHORT}
    cfg = parse_config(raw_config(**changes))
    victim = mkey(cfg, 8, 0.1, 1)
    log = tmp_path / "attempts.jsonl"
    crashed = str(tmp_path / "crashed")
    faults = {"log": str(log), "crash": [{"key": victim, "mode": "exit", "at_epoch": 2, "marker": crashed}]}
    killed_dir, clean_dir = str(tmp_path / "killed"), str(tmp_path / "clean")
    sweep(cfg, killed_dir, faults, tmp_path, monkeypatch)
    sweep(cfg, clean_dir, None, tmp_path, monkeypatch)

    assert os.path.exists(crashed)
    lines = log_lines(log)
    # Every member: first from scratch, then (another worker process) from the cohort's epoch-2 checkpoint.
    by_key = {k: [e["resumed_from"] for e in lines if e["key"] == k] for k in {e["key"] for e in lines}}
    assert by_key == {mkey(cfg, 8, tv, s): [None, 2] for tv in (0.05, 0.1) for s in (0, 1)}, lines
    assert len({e["pid"] for e in lines}) == 2
    killed = RunTables(killed_dir).read("models").set_index(["temperature_value", "seed"]).sort_index()
    clean = RunTables(clean_dir).read("models").set_index(["temperature_value", "seed"]).sort_index()
    assert set(killed["status"]) == {"ok"} and set(killed["epochs_completed"]) == {3}
    for col in ("train_loss", "train_acc", "test_loss", "test_acc", "hessian_top_eigenvalue", "hessian_trace"):
        assert (killed[col] == clean[col]).all(), col
    cohort = killed["cohort"].iloc[0]
    assert not storage.exists(storage.checkpoint_uri(killed_dir, cohort))  # removed once the cohort is done


@pytest.mark.ray
def test_a_time_triggered_checkpoint_is_what_a_resumed_cohort_continues_from(ray_local, tmp_path, monkeypatch):
    """checkpoint_every 0 (the default): the checkpoint comes from training.checkpoint_minutes alone. A cohort
    that fails after its epoch-2 checkpoint in a sweep that does not retry (as a Ctrl-C leaves it) is
    continued from that checkpoint by the next sweep of the run, not trained again from epoch 0."""
    changes = {"temperature.values": "[0.05, 0.1]", "training.epochs": 3, "training.checkpoint_every": 0,
               # 60 microseconds: less than any epoch (one SGD step alone takes longer), so every epoch writes one
               "training.checkpoint_minutes": 1e-6, "metrics.pairs": "[]", "run.max_failures": 0, **ONE_COHORT}
    cfg = parse_config(raw_config(**changes))
    assert cfg.config_hash() == parse_config(raw_config(**{**changes, "training.checkpoint_minutes": 5})).config_hash()
    victim = mkey(cfg, 8, 0.1, 1)
    run_dir = str(tmp_path / "run")
    log = tmp_path / "attempts.jsonl"
    crashed = str(tmp_path / "crashed")
    faults = {"log": str(log), "crash": [{"key": victim, "mode": "raise", "at_epoch": 2, "marker": crashed}]}
    sweep(cfg, run_dir, faults, tmp_path, monkeypatch)
    assert os.path.exists(crashed)
    assert set(RunTables(run_dir).read("models")["status"]) == {"failed"}  # the whole cohort, no retry
    sweep(cfg, run_dir, {"log": str(log)}, tmp_path, monkeypatch)  # the resume

    lines = log_lines(log)
    by_key = {k: [e["resumed_from"] for e in lines if e["key"] == k] for k in {e["key"] for e in lines}}
    assert by_key == {mkey(cfg, 8, tv, s): [None, 2] for tv in (0.05, 0.1) for s in (0, 1)}, lines
    models = RunTables(run_dir).read("models")
    assert set(models["status"]) == {"ok"} and set(models["epochs_completed"]) == {3}
    assert not storage.exists(storage.checkpoint_uri(run_dir, models["cohort"].iloc[0]))  # removed once done


@pytest.mark.ray
def test_a_resume_with_one_member_missing_trains_only_that_member(ray_local, tmp_path, monkeypatch):
    cfg = parse_config(raw_config(**{"temperature.values": "[0.05, 0.1]", **ONE_COHORT}))
    run_dir = str(tmp_path / "run")
    sweep(cfg, run_dir, None, tmp_path, monkeypatch)
    tables = RunTables(run_dir)
    before = tables.read("models").set_index(["temperature_value", "seed"]).sort_index()
    assert before["cohort"].nunique() == 1
    lost = mkey(cfg, 8, 0.1, 0)
    tables.delete_part("models", lost)
    storage.delete(storage.model_uri(run_dir, lost))
    log = tmp_path / "attempts.jsonl"
    sweep(cfg, run_dir, {"log": str(log)}, tmp_path, monkeypatch)
    # Only the lost model trained (a cohort of one) and the pair it ends measured again.
    assert Counter(e["key"] for e in log_lines(log)) == Counter({lost: 1, pkey(cfg, 8, 0.1, 0, 1): 1})
    after = tables.read("models").set_index(["temperature_value", "seed"]).sort_index()
    assert after.loc[(0.1, 0), "cohort"] == cohort_id("models", [lost]) != before.loc[(0.1, 0), "cohort"]
    untouched = [k for k in before.index if k != (0.1, 0)]
    assert (after.loc[untouched, "finished_at"] == before.loc[untouched, "finished_at"]).all()
    # Alone or in its cohort, the member's numbers are the same (MLPs: bit for bit up to float rounding).
    for col in ("train_loss", "test_acc", "hessian_top_eigenvalue"):
        assert after.loc[(0.1, 0), col] == pytest.approx(before.loc[(0.1, 0), col], rel=1e-6), col


def test_the_searcher_releases_a_pair_cohort_as_soon_as_its_models_exist():
    """Batch size as the temperature: a model cohort per cell, a pair cohort per width (curves share); a width's
    pair cohort is handed out as soon as both its cells are trained, ahead of the model cohorts left."""
    from ray.tune.search import Searcher

    from orchestrator.planning.plan import Plan
    from orchestrator.driver.state import SweepState
    from orchestrator.driver.tune_adapters import make_searcher_class

    cfg = parse_config(raw_config(**{"load.values": "[8, 16]", "temperature.name": "batch_size",
                                     "temperature.values": "[32, 64]"}))
    s = make_searcher_class()(cfg, Plan(models_todo=cfg.model_keys(), pairs_todo=cfg.pair_keys()), SweepState(),
                              lambda job, st, err: None)
    first = s.suggest("t0")
    assert first["kind"] == "model" and len(first["members"]) == 2
    width = first["members"][0][0]

    def done(trial, job):
        s.on_trial_complete(trial, {"status": "ok", "members": [
            {"key": mkey(cfg, *m), "status": "ok"} for m in job["members"]]})

    done("t0", first)
    jobs = [s.suggest(f"t{i}") for i in range(1, 4)]  # no pair is ready: the three other cells
    assert [j["kind"] for j in jobs] == ["model"] * 3
    other = next(j for j in jobs if j["members"][0][0] == width)
    done(f"t{1 + jobs.index(other)}", other)
    pair = s.suggest("t4")  # ahead of nothing else waiting, but before any model finishes
    assert pair["kind"] == "pair" and {m[0] for m in pair["members"]} == {width}
    assert sorted(m[1] for m in pair["members"]) == [32, 64]
    for i, job in enumerate(jobs):
        if job is not other:
            done(f"t{1 + i}", job)
    assert s.suggest("t5")["kind"] == "pair"
    s.on_trial_complete("t4", {"status": "ok"})
    s.on_trial_complete("t5", {"status": "ok"})
    assert s.suggest("t6") == Searcher.FINISHED


def test_the_estimate_uses_measured_rates_when_a_file_exists_and_cohorts_share_the_step_overhead(tmp_path,
                                                                                                  monkeypatch):
    from orchestrator.planning import estimate, gpu_rates

    monkeypatch.setenv(gpu_rates.MEASURED_RATES_ENV, str(tmp_path / "none.json"))
    cfg = load_config("paper-width-batch", check_data=False)
    assumed = estimate.estimate_gpu_hours(cfg)
    assert assumed.basis == estimate.DEFAULT_GPU and "assumed" in assumed.summary()
    # A cohort of M members holds M GPU shares (at most one GPU) and one step serves all M: the fixed cost per
    # member is what packed trials are charged, min(1, share * M) / M = share (estimate.py's module doc).
    off = estimate.estimate_gpu_hours(load_config("paper-width-batch", ["execution.cohort=off"], check_data=False))
    assert assumed.gpu_hours == pytest.approx(off.gpu_hours)
    one = parse_config({"name": "e", "workload": {"dataset": "cifar10", "data_root": "/nonexistent",
                                                  "model": "resnet18"},
                        "load": {"name": "width", "values": [4]}, "temperature": {"name": "batch_size",
                                                                                  "values": [100]},
                        "seeds": [0, 1, 2, 3], "training": {"epochs": 1}, "metrics": {"pairs": []},
                        "resources": {"gpu": 0.25}}, check_data=False)
    flat = estimate.GpuBasis(name="t", sustained_flops=1e30, step_overhead_s=1.0)  # overhead only
    steps = 50000 // 100
    assert estimate.estimate_gpu_hours(one, flat).gpu_hours * 3600 == pytest.approx(4 * steps * 1.0 / 4)
    off_one = dataclasses_replace_cohort(one, "off")
    assert estimate.estimate_gpu_hours(off_one, flat).gpu_hours * 3600 == pytest.approx(4 * steps * 0.25)

    path = tmp_path / "rates.json"
    gpu_rates.write_rates(str(path), "NVIDIA H200", 2.0e14, 1e-3, "2026-12-01")
    monkeypatch.setenv(gpu_rates.MEASURED_RATES_ENV, str(path))
    measured = estimate.estimate_gpu_hours(cfg)
    assert "measured 2026-12-01" in measured.summary() and "assumed" not in measured.summary()
    assert measured.basis.sustained_flops == 2.0e14 and measured.gpu_hours < assumed.gpu_hours
    for text, words in (("{not json", "not readable JSON"), ('{"format": "x"}', "not a landscape-gpu-rates"),
                        (json.dumps({"format": "landscape-gpu-rates", "version": 1, "sustained_flops": -1,
                                     "step_overhead_s": 1e-3}), "sustained_flops must be a positive number")):
        path.write_text(text)
        with pytest.raises(estimate.RatesFileError, match=words) as info:
            estimate.estimate_gpu_hours(cfg)
        assert "benchmarks/gpu.py" in str(info.value) and str(path) in str(info.value)


def dataclasses_replace_cohort(cfg, cohort):
    import dataclasses

    return dataclasses.replace(cfg, execution=dataclasses.replace(cfg.execution, cohort=cohort))
