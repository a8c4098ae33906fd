"""Cohort metrics and entry points against the single-model references (workloads/metrics/*, experiment.py).

Tolerances are the ones the issue asks of a cohort: weights within 1e-4 relative, test accuracies within one
test example, mode connectivity within 0.5 pp; the Hessian within hessian.py's own accuracy (λ_max 1e-3
relative, trace within its reported standard error), where the cohort's products only differ by rounding.
Curves have one engine for P >= 1 pairs (connect_models is P = 1): P pairs together must equal each pair alone
bit for bit where the per-member kernels do not depend on P (bmm; the grouped convolution in float64, vmap).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading

import pytest
import torch

import workloads.cohort_experiment as cohort_experiment
from analysis.tables import RunTables
from workloads.cohort_experiment import (
    measure_pairs_cohort,
    model_cohort_key,
    plan_model_cohorts,
    plan_pair_cohorts,
    train_and_measure_cohort,
)
from workloads.cohort_net import build_cohort_net, resolve_backend
from workloads.data import corrupt_labels, load_dataset
from workloads.experiment import ModelSpec, PairSpec, measure_pair, train_and_measure
from workloads.metrics.cohort_hessian import CohortHessianOperator, estimate_hessian_cohort
from workloads.metrics.connectivity import CurveConfig, connect_cohort, connect_models, curve_cohort
from workloads.metrics.hessian import estimate_hessian
from workloads.models import seeded_model

from tests.helpers import relative_difference
from tests.helpers import tiny_cell as digits_cell

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIME_COLUMNS = ("train_seconds", "metrics_seconds", "wall_seconds", "finished_at", "started_at")
# The shared tiny cell (tests/helpers.py), its curves trained 2 epochs as this file's cell always had
# (tests/workloads/test_experiment.py's: 1).
tiny_cell = functools.partial(digits_cell, curve_epochs=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def trained_members(name, data, seeds, width=8, **kw):
    models = [seeded_model(name, s, width=width, num_classes=10, input_shape=data.input_shape, **kw) for s in seeds]
    for m in models:  # a few full-batch steps: curvature and running statistics of a trained-ish model
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        m.train()
        for _ in range(15):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(data.train_x), data.train_y).backward()
            opt.step()
    return models


# ---------------------------------------------------------------------------------------------------------
# Hessian


@pytest.mark.parametrize("name, kw, backend, block", [("mlp", {}, "grouped", 1),
                                                      ("cnn", {"batch_norm": True}, "grouped", 1),
                                                      ("cnn", {"batch_norm": True}, "vmap", 1),
                                                      ("mlp", {}, "grouped", 4),
                                                      ("cnn", {"batch_norm": True}, "vmap", 4)],
                         ids=["mlp", "cnn-bn", "cnn-bn-vmap", "mlp-blocks", "cnn-bn-vmap-blocks"])
def test_cohort_hessian_equals_each_members_estimate(digits, name, kw, backend, block):
    """Blocks of trace probes (block 4) too: members still in Lanczos (one vector) and members probing (four)
    share one batched backward, the short requests padded."""
    models = trained_members(name, digits, (0, 1, 2), width=4, **kw)
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    x = digits.train_x[:120]
    targets = torch.stack([digits.train_y[:120], corrupt_labels(digits, 0.3, 1).train_y[:120], digits.train_y[:120]])
    opts = dict(eigen_max_iter=30, trace_max_probes=20, trace_block_size=block)
    got = estimate_hessian_cohort(net, x, targets, members=[0, 1], **opts)
    assert got[2] is None
    for i in (0, 1):
        want = estimate_hessian(models[i], x, targets[i], **opts)
        assert got[i].top_eigenvalue == pytest.approx(want.top_eigenvalue, rel=1e-3)
        assert abs(got[i].trace - want.trace) <= 2 * want.trace_std_error + 1e-3 * abs(want.trace)
        assert abs(got[i].eigen_iterations - want.eigen_iterations) <= 2
        assert got[i].samples == 120 and got[i].hvps == got[i].lanczos_steps + got[i].trace_probes


@pytest.mark.parametrize("backend, block", [("grouped", 1), ("vmap", 4)])
def test_a_model_is_the_one_member_case_of_the_cohort_estimator(digits, backend, block):
    """estimate_hessian (one member, its module's products) and each member of a 3-member cohort run the same
    estimator from the same seed (start vector, probes). Equal to float tolerance, not bit for bit: the cohort's
    products come from other kernels (batched matmuls, grouped convolutions, torch.func), which sum in another
    order. In float64 that rounding (~1e-16) leaves every stop where it was: the same counts, and λ_max, trace
    and its standard error within 1e-9 relative."""
    models = [m.double() for m in trained_members("cnn", digits, (0, 1, 2), width=4, batch_norm=True)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    net.module.to(torch.float64)
    x = digits.train_x[:120].double()
    targets = torch.stack([digits.train_y[:120], corrupt_labels(digits, 0.3, 1).train_y[:120], digits.train_y[:120]])
    opts = dict(eigen_max_iter=40, trace_max_probes=30, trace_block_size=block, seed=3)
    got = estimate_hessian_cohort(net, x, targets, **opts)
    for i, model in enumerate(models):
        want = estimate_hessian(model, x, targets[i], **opts)
        counts = ("eigen_iterations", "lanczos_steps", "trace_probes", "hvps")
        assert [getattr(got[i], c) for c in counts] == [getattr(want, c) for c in counts]
        for key in ("top_eigenvalue", "trace", "trace_std_error", "eigen_error_estimate"):
            assert getattr(got[i], key) == pytest.approx(getattr(want, key), rel=1e-9), key


def test_a_failed_cohort_product_raises_its_own_exception_once_every_member_stopped(digits, monkeypatch):
    models = trained_members("mlp", digits, (0, 1, 2), width=4)
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    original, calls = CohortHessianOperator.__call__, []

    def fails_on_the_fifth_call(self, vectors):
        calls.append(sorted(vectors))
        if len(calls) == 5:
            raise torch.cuda.OutOfMemoryError("no room for this product")
        return original(self, vectors)

    monkeypatch.setattr(CohortHessianOperator, "__call__", fails_on_the_fifth_call)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="no room"):
        estimate_hessian_cohort(net, digits.train_x[:60], digits.train_y[:60].expand(3, -1))
    assert calls == [[0, 1, 2]] * 5  # all members' products in each call, none after the failure
    assert not [t for t in threading.enumerate() if t.name.startswith("hessian-member")]


@pytest.mark.parametrize("backend", ["grouped", "vmap"])
def test_cohort_products_of_one_vector_and_of_a_block_at_once(digits, backend):
    """One member asks for one product (Lanczos), another for a block of three (trace probes): one call gives
    each the products it would get alone, row by row."""
    models = trained_members("cnn", digits, (0, 1), width=4, batch_norm=True)
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    net.eval()
    x, targets = digits.train_x[:60], torch.stack([digits.train_y[:60]] * 2)
    op = CohortHessianOperator(net, x, targets)
    g = torch.Generator().manual_seed(0)
    v, block = torch.randn(op.dim, generator=g), torch.randn(3, op.dim, generator=g)
    both = op({0: v, 1: block})
    alone = [op({1: row})[1] for row in block]
    assert both[0].shape == (op.dim,) and both[1].shape == (3, op.dim)
    assert torch.allclose(both[0], op({0: v})[0], rtol=1e-5, atol=1e-7)
    assert torch.allclose(both[1], torch.stack(alone), rtol=1e-5, atol=1e-7)
    assert op.counts == [2, 6]


# ---------------------------------------------------------------------------------------------------------
# Curves


@pytest.mark.parametrize("name, kw, dtype, backend", [("mlp", {}, torch.float32, "fused"),
                                                      ("mlp", {}, torch.float32, "grouped"),
                                                      ("cnn", {"batch_norm": True}, torch.float64, "grouped"),
                                                      ("cnn", {"batch_norm": True}, torch.float64, "vmap")],
                         ids=["mlp-fp32-fused", "mlp-fp32", "cnn-bn-fp64", "cnn-bn-fp64-vmap"])
def test_three_pairs_together_equal_each_pair_alone(digits, name, kw, dtype, backend):
    """Per pair its own lr and seed (t draws); BatchNorm recomputed per pair and point. The BatchNorm net in
    float64: in float32 the grouped convolution of 3 members rounds differently from that of 1 (by ~1e-7)."""
    models = [m.to(dtype) for m in trained_members(name, digits, (0, 1, 2), width=4, **kw)]
    pairs = [(models[0], models[1]), (models[0], models[2]), (models[2], models[1])]
    base = CurveConfig(epochs=3, lr=0.05, batch_size=128, points=3, bn_batch_size=100)  # epoch 3: lr decays
    configs = [base, dataclasses.replace(base, lr=0.02, seed=3), dataclasses.replace(base, momentum=0.5, seed=1)]
    x, tx = digits.train_x.to(dtype), digits.test_x.to(dtype)
    got = connect_cohort(*curve_cohort(pairs, "cpu", backend), x, digits.train_y.expand(3, -1), tx,
                         digits.test_y.expand(3, -1), configs)
    for (a, b), config, result in zip(pairs, configs, got):
        [want] = connect_cohort(*curve_cohort([(a, b)], "cpu", backend), x, digits.train_y[None], tx,
                                digits.test_y[None], [config])
        assert result.status == want.status == "ok"
        assert result.mode_connectivity == want.mode_connectivity and result.t_star == want.t_star
        for key in ("train_error", "test_error", "train_loss", "test_loss"):
            assert getattr(result, key).tolist() == getattr(want, key).tolist(), key
        assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in want.history]
        if backend == resolve_backend("auto", a, 1, x):  # what connect_models builds for this architecture
            assert connect_models(a, b, x, digits.train_y, tx, digits.test_y, config).train_loss.tolist() == \
                want.train_loss.tolist()


@pytest.mark.parametrize("backend", ["fused", "grouped"])
def test_a_diverged_curve_is_frozen_while_the_others_finish(digits, backend):
    models = trained_members("mlp", digits, (0, 1, 2), width=4)
    pairs = [(models[0], models[1]), (models[1], models[2])]
    ok = CurveConfig(epochs=2, lr=0.05, batch_size=128, points=5)
    configs = [dataclasses.replace(ok, lr=1e6), ok]
    x, y, tx, ty = digits.train_x, digits.train_y[None], digits.test_x, digits.test_y[None]
    got = connect_cohort(*curve_cohort(pairs, "cpu", backend), x, y.expand(2, -1), tx, ty.expand(2, -1), configs)
    [alone] = connect_cohort(*curve_cohort(pairs[:1], "cpu", backend), x, y, tx, ty, configs[:1])
    assert got[0].status == alone.status == "diverged" and got[0].error == alone.error
    assert [h["train_loss"] for h in got[0].history] == [h["train_loss"] for h in alone.history]
    assert got[0].mode_connectivity is None and len(got[0].ts) == 0
    [want] = connect_cohort(*curve_cohort(pairs[1:], "cpu", backend), x, y, tx, ty, [ok])
    assert got[1].status == "ok" and got[1].mode_connectivity == want.mode_connectivity
    assert got[1].train_error.tolist() == want.train_error.tolist()


# ---------------------------------------------------------------------------------------------------------
# Entry points


@pytest.fixture(scope="module")
def one_at_a_time_and_cohort():
    """Three models alone (experiment.train_and_measure: cohorts of one) and as one cohort of three."""
    cell = tiny_cell()
    specs = [ModelSpec(cell, s) for s in (0, 1, 2)]
    return cell, [train_and_measure(s) for s in specs], train_and_measure_cohort(specs)


def test_cohort_rows_have_the_columns_and_values_of_one_at_a_time_rows(one_at_a_time_and_cohort, tmp_path):
    cell, alone, together = one_at_a_time_and_cohort
    n_test = 360
    for want, got in zip(alone, together):
        assert set(got.row) == set(want.row)
        for key, value in want.row.items():
            if key in TIME_COLUMNS:
                continue
            if isinstance(value, float) and key not in ("test_acc", "train_acc"):
                assert got.row[key] == pytest.approx(value, rel=1e-3), key
            elif key in ("test_acc", "train_acc"):
                assert abs(got.row[key] - value) <= 1 / n_test + 1e-12, key
            elif key == "execution_path":  # one engine: a model alone is a cohort of one
                assert json.loads(got.row[key]) == json.loads(value)
                assert json.loads(value)["engine"] == "cohort"
            elif key not in ("hessian_eigen_iterations", "hessian_trace_probes"):
                assert got.row[key] == value, key
        assert relative_difference(got.state_dict, want.state_dict) <= 1e-4
        assert got.cohort.size == 3 and got.row["train_seconds"] == pytest.approx(got.cohort.train_seconds / 3)
        assert got.cohort.backend == "fused" and got.cohort.hessian == "fused"  # the MLP's written-out products
        RunTables(str(tmp_path)).write_part("models", f"m{got.row['seed']}", [dict(got.row, run_id="r")])
    assert [o.cohort.index for o in together] == [0, 1, 2] and [o.row["seed"] for o in together] == [0, 1, 2]


def test_pairs_measured_together_equal_measure_pair(one_at_a_time_and_cohort, tmp_path):
    cell, alone, _ = one_at_a_time_and_cohort
    states = {o.row["seed"]: o.state_dict for o in alone}
    specs = [PairSpec(cell, 0, 1), PairSpec(cell, 2, 0), PairSpec(dataclasses.replace(cell, temperature_value=128), 1, 2)]
    got = measure_pairs_cohort(specs, [(states[s.seed_a], states[s.seed_b]) for s in specs])
    for spec, outcome in zip(specs, got):
        want = measure_pair(spec, states[spec.seed_a], states[spec.seed_b])
        assert set(outcome.row) == set(want.row)
        assert (outcome.row["seed_a"], outcome.row["seed_b"]) == (want.row["seed_a"], want.row["seed_b"])
        assert abs(outcome.row["mode_connectivity"] - want.row["mode_connectivity"]) <= 0.5
        assert outcome.row["cka"] == want.row["cka"] and outcome.row["l2_distance"] == want.row["l2_distance"]
        assert len(outcome.curve_rows) == len(want.curve_rows) == 5
        for key in set(want.row) - set(TIME_COLUMNS) - {"mode_connectivity", "t_star"}:
            assert outcome.row[key] == want.row[key], key
        RunTables(str(tmp_path)).write_part("pairs", f"p{spec.seed_a}{spec.seed_b}", [dict(outcome.row, run_id="r")])
        RunTables(str(tmp_path)).write_part("curves", f"c{spec.seed_a}{spec.seed_b}", outcome.curve_rows)


def test_a_diverged_member_of_a_cohort_gets_the_diverged_row(monkeypatch):
    """Learning-rate temperatures share a cohort; the hot one diverges, the others are measured. The Hessian
    goes one model at a time here (the fallback for models too large for the vectorised products)."""
    monkeypatch.setattr(cohort_experiment, "HESSIAN_COHORT_CPU_MAX_PARAMS", 0)
    cold = tiny_cell(temperature_name="learning_rate", temperature_value=0.05)
    hot = dataclasses.replace(cold, temperature_value=1e5)
    specs = [ModelSpec(cold, 0), ModelSpec(hot, 0), ModelSpec(cold, 1)]
    assert len(plan_model_cohorts(specs)) == 1
    got = train_and_measure_cohort(specs)
    want = train_and_measure(specs[1])
    assert [o.status for o in got] == ["ok", "diverged", "ok"]
    assert got[1].row["error"] == want.row["error"] and got[1].state_dict is None
    assert all(got[1].row[k] is None for k in ("test_acc", "hessian_top_eigenvalue", "train_loss"))
    assert got[0].cohort.hessian == "per-member"
    reference = train_and_measure(specs[2])
    assert got[2].row["hessian_top_eigenvalue"] == pytest.approx(reference.row["hessian_top_eigenvalue"], rel=1e-3)


def test_a_cohort_checkpoint_resumes_to_the_same_outcomes():
    """Through the entry point: the checkpoint names its members and gives the uninterrupted rows."""
    cell = tiny_cell(training=dataclasses.replace(tiny_cell().training, checkpoint_every=1))
    specs = [ModelSpec(cell, s) for s in (0, 1)]
    saved = []
    whole = train_and_measure_cohort(specs, checkpoint_fn=saved.append)
    assert [len(s["members"]) for s in saved] == [2, 2] and '"seed": 1' in saved[0]["members"][1]
    resumed = train_and_measure_cohort(specs, resume_state=saved[0])
    for a, b in zip(whole, resumed):
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
        assert a.row["test_loss"] == b.row["test_loss"] and a.row["hessian_trace"] == b.row["hessian_trace"]
    with pytest.raises(ValueError, match="resume_state was made for other cohort members"):
        train_and_measure_cohort(specs[::-1], resume_state=saved[0])


def test_which_models_and_pairs_share_a_cohort():
    cell = tiny_cell()
    by_batch = [ModelSpec(dataclasses.replace(cell, temperature_value=b), s) for b in (32, 64) for s in (0, 1, 2)]
    assert [len(c) for c in plan_model_cohorts(by_batch)] == [3, 3]  # batch sizes: different step counts
    by_lr = [ModelSpec(tiny_cell(temperature_name="learning_rate", temperature_value=lr), s)
             for lr in (0.01, 0.1) for s in (0, 1)]
    assert [len(c) for c in plan_model_cohorts(by_lr)] == [4]  # scalars only
    assert [len(c) for c in plan_model_cohorts(by_lr, max_size=3)] == [3, 1]
    noise = [ModelSpec(tiny_cell(load_name="label_noise", load_value=a), 0) for a in (0.0, 0.2)]
    assert len(plan_model_cohorts(noise)) == 1  # same x and n, other labels
    subsets = [ModelSpec(tiny_cell(load_name="train_fraction", load_value=f), 0) for f in (0.5, 1.0)]
    assert len(plan_model_cohorts(subsets)) == 2  # other n
    widths = [ModelSpec(tiny_cell(load_value=w), 0) for w in (8, 16)]
    assert len(plan_model_cohorts(widths)) == 2  # other shapes
    assert model_cohort_key(ModelSpec(cell, 0)) != model_cohort_key(ModelSpec(cell, 0, device="cuda"))
    pairs = [PairSpec(dataclasses.replace(cell, temperature_value=b), 0, 1) for b in (32, 64, 128)]
    assert [len(c) for c in plan_pair_cohorts(pairs)] == [3]  # curves share a batch size across cells
    with pytest.raises(ValueError, match="positive integer"):
        plan_model_cohorts(by_lr, max_size=0)
    with pytest.raises(ValueError, match="cannot share a cohort"):
        train_and_measure_cohort(by_batch)



def test_a_members_hessian_estimate_does_not_depend_on_its_place_in_the_cohort():
    """Each member of a 5-member grouped MLP cohort gets the bits it gets measured alone: the products handed
    to each member's Lanczos are its own copies (a view into the cohort's block starts at another memory
    alignment per member, and the vectorised dot products then rounded differently for some members)."""
    models = [seeded_model("mlp", s, width=16, num_classes=10, input_shape=(40,), depth=2) for s in range(5)]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 40, generator=gen), torch.randint(0, 10, (5, 128), generator=gen)
    together = estimate_hessian_cohort(build_cohort_net(models[0], [m.state_dict() for m in models]), x, y)
    for i, model in enumerate(models):
        [alone] = estimate_hessian_cohort(build_cohort_net(model, [model.state_dict()]), x, y[i:i + 1])
        assert (alone.top_eigenvalue, alone.trace) == (together[i].top_eigenvalue, together[i].trace), i
