"""The sweep on a real local Ray (2 CPUs, in process): tables, statuses, idempotence, growth, failures,
the plan's repairs, the resource check, and the searcher's order (pairs as soon as their models exist)."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pandas as pd
import pytest

from analysis.tables import RunTables
from orchestrator.rundir import storage
from orchestrator.config import ConfigError, SweepConfig, build, parse_config
from orchestrator.planning.jobs import mkey, model_job, pair_job, pkey
from orchestrator.planning.plan import Plan, PlanError, assess, repair
from orchestrator.planning.run_facts import for_reading, measure
from orchestrator.driver.state import SweepState
from orchestrator.driver.sweep import run_sweep
from tests.helpers import sweep, tiny_sweep_config

pytestmark = pytest.mark.ray


def tiny_raw(**changes) -> dict:
    """digits, MLP, 1 epoch, two lr values (the second diverges), 2 seeds: 4 models, 2 pairs."""
    return tiny_sweep_config("tiny", [0.05, 1.0e6], epochs=1, max_failures=0, **changes)


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    cfg = parse_config(tiny_raw())
    run_dir = str(tmp_path_factory.mktemp("sweep") / "run")
    summary = sweep(cfg, run_dir, run_id="test-run")
    return cfg, run_dir, summary


def test_ray_is_local_only(ray_local):
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray_local.nodes())
    assert ray_local.cluster_resources()["CPU"] == 2


def test_every_table_and_status(swept):
    cfg, run_dir, summary = swept
    tables = RunTables(run_dir)
    models, pairs, curves = tables.read("models"), tables.read("pairs"), tables.read("curves")
    assert len(models) == 4 and len(pairs) == 2
    by_lr = models.groupby("temperature_value")["status"].agg(set).to_dict()
    assert by_lr == {0.05: {"ok"}, 1e6: {"diverged"}}
    ok = models[models.status == "ok"]
    for col in ("train_loss", "test_acc", "hessian_top_eigenvalue", "hessian_trace", "node_id", "model_uri"):
        assert ok[col].notna().all(), col
    assert (models.run_id == "test-run").all() and (models.config_hash == cfg.config_hash()).all()
    for uri in ok.model_uri:
        assert os.path.exists(uri)
    diverged = models[models.status == "diverged"]
    assert diverged.error.str.contains("diverged").all()
    # The pair of the good cell is measured; the diverged cell's pair says why it is not.
    good = pairs[pairs.temperature_value == 0.05].iloc[0]
    assert good.status == "ok" and good.cka_status == "ok"
    assert pd.notna([good.mode_connectivity, good.t_star, good.cka, good.l2_distance]).all()  # nulls read as NaN
    assert 0 <= good.cka <= 1 and good.l2_distance > 0
    bad = pairs[pairs.temperature_value == 1e6].iloc[0]
    assert bad.status == "diverged" and "not measured" in bad.error and "diverged" in bad.error
    assert len(curves) == 3 and set(curves.temperature_value) == {0.05}
    assert summary.state.models.ok == 2 and summary.state.models.diverged == 2
    assert summary.plan_after.complete


def test_rerun_computes_nothing_and_growth_only_new_keys(swept, ray_local, tmp_path):
    cfg, run_dir, _ = swept
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    before = RunTables(copy).read("models").set_index(["temperature_value", "seed"])["finished_at"].to_dict()

    again = sweep(cfg, copy, run_id="test-run")
    assert again.state.models.ok == 0 and again.state.attempted == set()
    # Grow: a third seed adds 2 models and, with all pairs for 3 seeds, 4 pairs (2 per cell).
    grown = dataclasses.replace(cfg, seeds=(0, 1, 2))
    assert grown.config_hash() == cfg.config_hash()
    summary = sweep(grown, copy, run_id="test-run")
    assert summary.state.models.ok + summary.state.models.diverged == 2
    assert summary.state.models.done_before == 4
    models = RunTables(copy).read("models")
    assert len(models) == 6 and models.groupby(["temperature_value", "seed"]).size().max() == 1
    for (tv, seed), t in models.set_index(["temperature_value", "seed"])["finished_at"].items():
        if seed < 2:
            assert t == before[(tv, seed)]  # old rows untouched
    pairs = RunTables(copy).read("pairs")
    assert len(pairs) == 6
    assert set(zip(pairs.seed_a, pairs.seed_b)) == {(0, 1), (0, 2), (1, 2)}


def test_failed_jobs_are_recorded_and_retried_on_resume(ray_local, tmp_path):
    # Validation would refuse batch 5000 > 1437; bypass it to make the job itself fail.
    raw = tiny_raw(**{"temperature.name": "batch_size", "temperature.values": "[64, 5000]"})
    cfg = build(SweepConfig, raw, "")
    run_dir = str(tmp_path / "run")
    summary = sweep(cfg, run_dir, run_id="test-run")
    models = RunTables(run_dir).read("models")
    failed = models[models.status == "failed"]
    assert len(failed) == 2 and set(failed.temperature_value) == {5000.0}
    assert failed.error.str.contains("exceeds").all(), failed.error.tolist()
    pairs = RunTables(run_dir).read("pairs").set_index("temperature_value")
    assert pairs.loc[64.0, "status"] == "ok"
    assert pairs.loc[5000.0, "status"] == "failed" and "not measured" in pairs.loc[5000.0, "error"]
    assert summary.state.models.failed == 2
    plan = repair(run_dir, assess(cfg, run_dir, facts=measure(cfg)))
    assert sorted(k[1] for k in plan.models_todo) == [5000, 5000] and len(plan.pairs_todo) == 1


def test_plan_repairs_broken_results(swept, tmp_path):
    cfg, run_dir, _ = swept
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    assert repair(copy, assess(cfg, copy, facts=measure(cfg))).complete
    # A truncated part, a deleted weights file and a deleted curve part are all found and redone.
    key0 = mkey(cfg, 8, 0.05, 0)
    part = RunTables(copy).part_uri("models", mkey(cfg, 8, 1e6, 1))
    with open(part, "r+b") as f:
        f.truncate(100)
    os.remove(storage.model_uri(copy, key0))
    os.remove(RunTables(copy).part_uri("curves", pkey(cfg, 8, 0.05, 0, 1)))
    plan = repair(copy, assess(cfg, copy, facts=measure(cfg)))
    assert sorted(plan.models_todo) == sorted([(8, 0.05, 0), (8, 1e6, 1)])
    assert len(plan.pairs_todo) == 2  # the ok pair (curve missing, model retrained) and the diverged cell's
    assert len(plan.repaired) == 3
    assert not os.path.exists(part)  # the unreadable part was removed


def test_plan_refuses_rows_of_other_settings(swept, tmp_path):
    cfg, run_dir, _ = swept
    changed = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, epochs=2))
    plan = assess(changed, run_dir, facts=measure(changed))
    assert plan.other_hashes["models"] == [cfg.config_hash()]  # assessing only records them
    with pytest.raises(PlanError, match="other settings"):
        repair(run_dir, plan)


def test_resource_check_against_the_running_cluster(ray_local):
    from orchestrator.cluster.resources import check_resources

    cfg = parse_config(tiny_raw(**{"resources.gpu": 0.25}))
    with pytest.raises(ConfigError, match="no GPU"):
        check_resources(cfg)
    plan = check_resources(parse_config(tiny_raw()))
    assert plan["trials_at_once"] == {8: 2} and plan["cluster"]["cpu"] == 2


def test_searcher_hands_out_pairs_as_soon_as_their_models_exist():
    from orchestrator.driver.tune_adapters import make_searcher_class

    # One model per trial (tests/driver/test_cohort_sweep.py has the same property for cohorts).
    cfg = parse_config(tiny_raw(**{"temperature.values": "[0.05, 0.1]", "seeds": "[0, 1, 2]",
                                   "execution.cohort": "off"}))
    plan = Plan(models_todo=[(8, 0.05, 0), (8, 0.05, 1), (8, 0.1, 0), (8, 0.1, 1), (8, 0.05, 2), (8, 0.1, 2)],
                pairs_todo=cfg.pair_keys())
    unmeasured = []
    s = make_searcher_class()(cfg, plan, SweepState(), lambda job, st, err: unmeasured.append((job, st)))
    jobs = {f"t{i}": s.suggest(f"t{i}") for i in range(2)}
    assert [j["kind"] for j in jobs.values()] == ["model", "model"]
    s.on_trial_complete("t0", {"status": "ok"})
    assert s.suggest("t2")["kind"] == "model"  # seed 1 of the cell is not done yet
    s.on_trial_complete("t1", {"status": "ok"})
    job = s.suggest("t3")
    hparams = job.pop("hparams")  # what Tune's loggers show of each member (orchestrator/worker/trial_outputs.py)
    assert job == pair_job(cfg, [(8, 0.05, 0, 1)]) and job["members"] == [[8, 0.05, 0, 1]]  # a cohort of one
    assert list(hparams) == ["seeds_0-1"] and (hparams["seeds_0-1"]["seed_a"], hparams["seeds_0-1"]["seed_b"]) == (0, 1)
    # A diverged model resolves its pairs on the driver without a job.
    s.on_trial_complete("t2", {"status": "diverged"})
    for i in range(4, 7):
        assert s.suggest(f"t{i}")["kind"] == "model"
    s.on_trial_complete("t3", {"status": "ok"})
    s.on_trial_complete("t4", {"status": "ok"})
    s.on_trial_complete("t5", {"status": "ok"})
    s.on_trial_complete("t6", {"status": "ok"})
    rest = []
    while True:
        job = s.suggest(f"x{len(rest)}")
        if not isinstance(job, dict):
            break
        rest.append(job)
        s.on_trial_complete(f"x{len(rest) - 1}", {"status": "ok"})
    assert sorted(tuple(m[1:]) for j in rest for m in j["members"]) == [(0.05, 0, 2), (0.05, 1, 2), (0.1, 1, 2)]
    assert sorted((tv, a, b, st) for (lv, tv, a, b), st in unmeasured) == [
        (0.1, 0, 1, "diverged"), (0.1, 0, 2, "diverged")]
    from ray.tune.search import Searcher

    assert job == Searcher.FINISHED


def test_progress_lines_and_status_line():
    import io

    from orchestrator.driver.progress import format_seconds, make_progress, status_line

    state = SweepState(slots=2, clock=lambda: 50.0)  # a clock that stands still: the ETA does not count down
    state.models.keys = [f"m{i}" for i in range(4)]
    state.pairs.keys = ["p0", "p1"]
    state.models.outcome = {"m0": "ok", "m1": "ok"}
    state.models.seconds = {"m0": 10.0, "m1": 12.0}
    state.models.live = {"trial-2": "m2"}
    state.costs = {"m0": 1.0, "m1": 1.0, "m2": 1.0, "m3": 1.0, "p0": 0.5, "p1": 0.5}

    class Recorder:
        events = [("model", "width=8__batch_size=32__seed=0", "ok", {"wall_seconds": 10.0, "test_acc": 0.5}),
                  ("pair", "width=8__batch_size=32__seeds=0-1", "failed", {"error": "ValueError: boom"}),
                  ("model", "width=8__batch_size=32__seed=1", "ok",  # a member of a cohort of 21: its time
                   {"wall_seconds": 3.2, "cohort_size": 21, "cohort_seconds": 67.0, "test_acc": 0.5})]

    plain = io.StringIO()
    progress = make_progress(plain, tty=False)(state, Recorder())
    progress.on_step_end(0, [])
    lines = plain.getvalue().splitlines()
    assert lines == ["[2/4 models] model width=8__batch_size=32__seed=0 ok in 10s test_acc=0.500",
                     "[0/2 pairs] pair  width=8__batch_size=32__seeds=0-1 failed error: ValueError: boom",
                     "[2/4 models] model width=8__batch_size=32__seed=1 ok in 1m07s (a cohort of 21) test_acc=0.500"]
    line = status_line(state)
    assert "models 2/4 done (ok 2, diverged 0, failed 0) · 1 running · 1 pending" in line
    # ETA: 11 s per unit of cost measured; left: 1 pending model (cost 1) + half the running one (1) + two
    # pairs of cost 0.5 at the models' rate (no pair has finished), over 2 slots.
    eta = f"ETA {format_seconds(11 * (1 + 0.5 + 2 * 0.5) / 2)}"
    assert line.endswith(eta)

    compact = status_line(state, width=90)
    assert compact.startswith("models 2/4 (1 running) | pairs 0/2 (0 running) |") and compact.endswith(eta)

    term = io.StringIO()
    progress = make_progress(term, tty=True)(state, Recorder())
    progress.on_step_end(0, [])
    progress.view.close()
    text = term.getvalue()
    # Each finished job scrolls above the bar (tqdm), which is redrawn in place (no newline) with the counts.
    assert text.count("\n") == 3 and "model width=8__batch_size=32__seed=1 ok in 1m07s" in text
    bar = [part for part in text.split("\r") if " jobs · " in part][-1]  # its last drawing
    assert "| 2/6 jobs · models 2/4 (1 running) | pairs 0/2 (0 running) |" in bar and bar.endswith(eta)


def test_counts_never_exceed_the_grid_and_nothing_runs_after_the_end():
    """A job retried by Tune, and a key redone in a later round (its weights were found broken), count once,
    with their last outcome: "9/8 models" was shown before. Once the experiment ends nothing is running."""
    from orchestrator.driver.tune_adapters import make_recorder_class

    cfg = parse_config(tiny_raw())
    keys = [mkey(cfg, *k) for k in cfg.model_keys()]
    state = SweepState()
    state.models.keys = keys
    state.models.before = {keys[0]}
    recorder = make_recorder_class()(cfg, "/nonexistent", "run", state)

    class Trial:
        def __init__(self, trial_id, seed, result):
            self.trial_id, self.config, self.last_result = trial_id, model_job(cfg, [(8, 0.05, seed)]), result

    first = Trial("a", 1, {"status": "failed", "wall_seconds": 1.0})
    recorder.on_trial_start(0, [], first)
    recorder.on_trial_recover(0, [], first)  # its worker died; Tune starts it again
    recorder.on_trial_start(0, [], first)
    recorder.on_trial_complete(0, [], first)
    again = Trial("b", 1, {"status": "ok", "wall_seconds": 2.0})  # the same key in a later round
    recorder.on_trial_start(0, [], again)
    recorder.on_trial_complete(0, [], again)
    recorder.on_trial_start(0, [], Trial("c", 0, {}))  # stopped with the experiment: no completion
    recorder.on_trial_complete(0, [], Trial("d", 0, {"status": "ok", "skipped": True}))  # done before
    assert (state.models.finished, state.models.ok, state.models.failed, state.models.total) == (2, 1, 0, 4)
    assert state.models.running == 1
    recorder.on_experiment_end([])
    assert state.models.running == 0 and state.models.pending == 2
    assert state.models.finished <= state.models.total


def test_the_eta_weights_what_is_left_by_its_estimated_cost():
    """Jobs run longest first, so the first to finish are the slowest: the mean of their times times the
    number left overestimated the demo 2-4x at the start. With costs, the cheap jobs left count as cheap."""
    from orchestrator.config import load_config
    from orchestrator.planning.cost import job_costs, order_models

    cfg = load_config("cpu-lr-decay")  # width x batch size: a wide spread of job costs (the demo's is ~2x)
    costs = job_costs(cfg)
    ordered = order_models(cfg, cfg.model_keys())
    first = ordered[:3]  # what runs first: the slowest cell, its three seeds
    slow, fast = mkey(cfg, *first[0]), mkey(cfg, *ordered[-1])  # the widest model, the narrowest
    assert costs[slow] > 5 * costs[fast]
    state = SweepState(slots=2, costs=costs)
    state.models.keys = [mkey(cfg, *k) for k in cfg.model_keys()]
    state.pairs.keys = [pkey(cfg, *k) for k in cfg.pair_keys()]
    # The first cell's models are done, as measured (exactly as the cost model says, at 3 s per unit).
    for key in (mkey(cfg, *k) for k in first):
        state.models.outcome[key], state.models.seconds[key] = "ok", 3.0 * costs[key]
    left = [k for k in state.models.keys + state.pairs.keys if k not in state.models.outcome]
    assert state.eta_seconds() == pytest.approx(3.0 * sum(costs[k] for k in left) / 2)
    mean = 3.0 * costs[slow]  # the old estimate: the mean so far for every model left, half that per pair
    old = (len(state.models.keys) - 3) * mean + len(state.pairs.keys) * mean / 2
    assert state.eta_seconds() < old / 2 / 2


def test_a_workers_own_error_reaches_the_failed_row(ray_local, tmp_path, monkeypatch):
    """A worker raising one of the package's exceptions (here UnknownNameError: the dataset name has a typo
    that validation, bypassed here, would have caught) is recorded with its own message, not with the
    "TypeError: __init__() missing 3 required positional arguments" of an exception that cannot be
    unpickled on the driver. The same run checks that Tune saves its experiment state rarely (it is never
    read): its period is TUNE_STATE_PERIOD_S, not Tune's ~10 s."""
    from ray.tune.execution import experiment_state

    from orchestrator.cluster.resources import check_resources
    from orchestrator.driver.tune_adapters import TUNE_STATE_PERIOD_S

    periods = []
    real_init = experiment_state._ExperimentCheckpointManager.__init__

    def init(self, *args, checkpoint_period, **kwargs):
        periods.append(checkpoint_period)
        real_init(self, *args, checkpoint_period=checkpoint_period, **kwargs)

    monkeypatch.setattr(experiment_state._ExperimentCheckpointManager, "__init__", init)
    raw = tiny_raw(**{"workload.dataset": "mnist1dd", "temperature.values": "[0.05]"})
    cfg = build(SweepConfig, raw, "")
    run_dir = str(tmp_path / "run")
    # The plan's facts as assumed (a plan that measured them would load the misnamed dataset on the driver).
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    plan = repair(run_dir, assess(cfg, run_dir, facts=for_reading(run_dir, cfg)))
    summary = run_sweep(cfg, run_dir, run_id="test-run", resources=check_resources(cfg), plan=plan)
    models = RunTables(run_dir).read("models")
    assert (models.status == "failed").all() and len(models) == 2
    expected = "unknown dataset 'mnist1dd'; did you mean 'mnist1d'?"
    assert all(expected in e for e in models.error), models.error.tolist()
    assert all(expected in e for e in summary.state.failed_keys.values())
    assert not any("TypeError" in e for e in models.error)
    assert periods and {float(p) for p in periods} == {float(TUNE_STATE_PERIOD_S)}, periods
