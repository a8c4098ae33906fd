"""Mode connectivity: the scalar definition on textbook curves, the Bezier curve's algebra, BatchNorm
recomputation (of a model and of a cohort), isolation between the pairs of a cohort, and that curve training
does what it is for."""

import copy
import pickle
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workloads.cohort_net import resolve_backend
from workloads.metrics.batchnorm import recompute_batchnorm, recompute_cohort_batchnorm
from workloads.metrics.connectivity import (
    CurveConfig,
    CurveDiverged,
    bezier_coefficients,
    connect_cohort,
    connect_models,
    curve_cohort,
    curve_lr_factor,
    curve_points,
    evaluate_curves,
    initial_middle,
    mode_connectivity,
    train_curves,
)

# ------------------------------------------------------------------------------------------ test fixtures

N_TRAIN, N_TEST, DIM, CLASSES = 512, 256, 16, 4


def _teacher_data(seed=0):
    """Inputs (n, 1, DIM) ~ N(0, I) labelled by a fixed random two-layer teacher: learnable, not linear."""
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(DIM, 32, generator=g), torch.randn(32, CLASSES, generator=g)
    x = torch.randn(N_TRAIN + N_TEST, 1, DIM, generator=g)
    y = (torch.tanh(x.flatten(1) @ w1) @ w2).argmax(1)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


DATA = _teacher_data()
HIDDEN = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mlp(seed, bn=False):
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(HIDDEN)] if bn else []
    return nn.Sequential(nn.Flatten(), nn.Linear(DIM, HIDDEN), *norm, nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def _cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * DIM, CLASSES)
    )


def _curve_cohort(pairs):
    """curve_cohort on the CPU, with the backend the sweep chooses for the pairs' architecture."""
    return curve_cohort(pairs, "cpu", resolve_backend("auto", pairs[0][0], len(pairs), DATA[0]))


def _sgd(model, steps, seed, lr=0.1):
    """A few plain SGD steps (independent of workloads.train), leaving the model in eval mode."""
    x, y = DATA[0], DATA[1]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def _manual_loss_error(model, x, y):
    model.eval()
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits.double(), y).item(), 100.0 * (logits.argmax(1) != y).double().mean().item()


def _first(points):
    """Pair 0's tensors of a {name: (P, *shape)} dict."""
    return {name: t[0] for name, t in points.items()}


def _train_one(a, b, x, y, config):
    """train_curves of the one pair (a, b): (pair 0's middle point, history, None or CurveDiverged)."""
    net, end_a, end_b = _curve_cohort([(a, b)])
    middle, [history], [failure] = train_curves(net, end_a, end_b, x, y.unsqueeze(0), [config])
    return _first(middle), history, failure


@pytest.fixture(scope="module")
def trained_pair():
    return _sgd(_mlp(1), 300, seed=1), _sgd(_mlp(2), 300, seed=2)


# ------------------------------------------------------------------------------------------ the scalar


@pytest.mark.parametrize(
    "errors,expected_mc,expected_t",
    [
        ([5.0, 5.0, 5.0], 0.0, 0.0),  # flat: all tie at 0, first wins
        ([10.0, 30.0, 10.0], -20.0, 0.5),  # barrier
        ([10.0, 2.0, 10.0], 8.0, 0.5),  # dip: the curve beats the endpoints
        # endpoint-dominated: ē = 10, |ē - e| = (10, 5, 10), first max at t = 0, mc = 10 - 0
        ([0.0, 5.0, 20.0], 10.0, 0.0),
        # ... and with the models swapped the sign flips: a property of the definition
        ([20.0, 5.0, 0.0], -10.0, 0.0),
    ],
)
def test_mode_connectivity_textbook_cases(errors, expected_mc, expected_t):
    mc, t_star = mode_connectivity([0.0, 0.5, 1.0], errors)
    assert mc == pytest.approx(expected_mc, abs=1e-12)
    assert t_star == expected_t


def test_mode_connectivity_fine_grid_barrier():
    ts = np.linspace(0, 1, 11)
    errors = 10 + 4 * ts + 30 * np.sin(np.pi * ts)  # endpoints 10 and 14, bump peaks at t = 0.5
    mc, t_star = mode_connectivity(ts, errors)
    assert t_star == 0.5 and mc == pytest.approx(12.0 - (10 + 2 + 30))


def test_mode_connectivity_endpoint_tie_survives_rounding():
    # In floats |ē - 0.1| = 0.29999999999999993 < |ē - 0.7| = 0.3; in exact arithmetic they tie, so t* = 0.
    mc, t_star = mode_connectivity([0.0, 0.5, 1.0], [0.1, 0.3, 0.7])
    assert t_star == 0.0 and mc == pytest.approx(0.3)


@pytest.mark.parametrize(
    "ts,errors,match",
    [
        ([0.25, 0.5, 1.0], [1, 2, 3], "endpoints"),
        ([0.0, 0.5, 0.9], [1, 2, 3], "endpoints"),
        ([0.0, 1.0, 0.5], [1, 2, 3], "increasing"),
        ([0.0, 1.0], [1, 2, 3], "equal length"),
        ([0.0], [1], "two endpoints"),
        ([0.0, 0.5, 1.0], [1, float("nan"), 3], "finite"),
    ],
)
def test_mode_connectivity_rejects_bad_grids(ts, errors, match):
    with pytest.raises(ValueError, match=match):
        mode_connectivity(ts, errors)


# ------------------------------------------------------------------------------------------ schedule, config


def test_curve_lr_schedule_counts_epochs_from_one_as_garipov():
    # Garipov's train.py: lr = factor(epoch / epochs) for epoch in 1..epochs. At 50 epochs: 25 epochs at the
    # full lr (alpha <= 0.5), 6 at 1% (alpha >= 0.9; alpha = 0.9 reaches 0.01 on the linear part).
    factors = [curve_lr_factor(e, 50) for e in range(1, 51)]
    assert factors.count(1.0) == 25 and factors[:25] == [1.0] * 25
    assert factors.count(0.01) == 6 and factors[-6:] == [0.01] * 6  # exactly, not 0.01 + rounding
    assert curve_lr_factor(35, 50) == pytest.approx(1 - 0.99 * 0.2 / 0.4)  # 0.505, halfway down
    assert all(a >= b for a, b in zip(factors, factors[1:]))


@pytest.mark.parametrize("schedule, full, floor", [("garipov", 25, 6), ("garipov-epoch0", 26, 5)])
def test_train_curves_uses_the_configured_epoch_count(schedule, full, floor):
    # What train_curves actually sets, epoch by epoch (history["lr"]), for the new and the old numbering.
    x, y = DATA[0][:64], DATA[1][:64]
    _, history, _ = _train_one(_mlp(1), _mlp(2), x, y, CurveConfig(epochs=50, lr=0.1, batch_size=64,
                                                                   lr_schedule=schedule))
    factors = [h["lr"] / 0.1 for h in history]
    assert sum(f == pytest.approx(1.0) for f in factors) == full
    assert sum(f == pytest.approx(0.01) for f in factors) == floor


def test_curve_config_validation_and_grid():
    assert CurveConfig(points=5).ts().tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # The default grid contains the authors' 5 points, so their mc can be read off the same curve.
    assert CurveConfig().ts().shape == (9,)
    assert {0.0, 0.25, 0.5, 0.75, 1.0} <= set(CurveConfig().ts().tolist())
    with pytest.raises(ValueError, match="lr_schedule"):
        CurveConfig(lr_schedule="cosine")
    with pytest.raises(ValueError, match="points"):
        CurveConfig(points=1)
    with pytest.raises(ValueError, match="lr"):
        CurveConfig(lr=0.0)


# ------------------------------------------------------------------------------------------ curve algebra


def test_curve_points_follow_the_bezier_formula():
    a, b = _cnn(1), _cnn(2)
    _, end_a, end_b = _curve_cohort([(a, b)])
    middle = initial_middle(end_a, end_b)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    g0, g1, gh = (_first(curve_points(end_a, middle, end_b, bezier_coefficients(t))) for t in (0.0, 1.0, 0.5))
    for name in pa:
        assert torch.equal(g0[name], pa[name])  # bit for bit
        assert torch.equal(g1[name], pb[name])
        torch.testing.assert_close(gh[name], (pa[name] + pb[name]) / 2)  # midpoint initialisation
    # A general middle point and t, shared (a tuple) or per pair (a (P, 3) tensor, here the pairs (a, b) and (b, a)
    # at 0.3 and 0.8): compare with the polynomial written out.
    middle = {k: torch.randn_like(v) for k, v in middle.items()}
    pc = _first(middle)
    gt = _first(curve_points(end_a, middle, end_b, bezier_coefficients(0.3)))
    _, two_a, two_b = _curve_cohort([(a, b), (b, a)])
    two_middle = {k: torch.cat([v, v]) for k, v in middle.items()}
    per_pair = curve_points(two_a, two_middle, two_b,
                            torch.tensor([bezier_coefficients(0.3), bezier_coefficients(0.8)]))
    for name in pa:
        torch.testing.assert_close(gt[name], 0.49 * pa[name] + 0.42 * pc[name] + 0.09 * pb[name])
        torch.testing.assert_close(per_pair[name][0], gt[name])
        torch.testing.assert_close(per_pair[name][1], 0.04 * pb[name] + 0.32 * pc[name] + 0.64 * pa[name])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bezier_coefficients(1.5)


def test_endpoints_are_copied_and_not_trained():
    a, b = _mlp(1), _mlp(2)
    net, end_a, end_b = _curve_cohort([(a, b)])
    assert not any(t.requires_grad for t in list(end_a.values()) + list(end_b.values()))
    with torch.no_grad():
        a[1].weight.add_(1.0)  # changing the source model later does not move the curve
    assert not torch.equal(end_a["1.weight"][0], a[1].weight)
    before = {k: v.clone() for k, v in list(end_a.items()) + [("b." + k, v) for k, v in end_b.items()]}
    middle, _, _ = train_curves(net, end_a, end_b, DATA[0], DATA[1][None], [CurveConfig(epochs=1, batch_size=64)])
    after = {k: v for k, v in list(end_a.items()) + [("b." + k, v) for k, v in end_b.items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not all(torch.equal(middle[k], v) for k, v in initial_middle(end_a, end_b).items())


def test_gradients_flow_only_to_the_middle():
    a, b = _cnn(1), _cnn(2)
    net, end_a, end_b = _curve_cohort([(a, b)])
    middle = {k: v.requires_grad_(True) for k, v in initial_middle(end_a, end_b).items()}
    x, y = DATA[0][:64], DATA[1][:64]
    net.train()
    F.cross_entropy(net(net.inputs_shared(x), curve_points(end_a, middle, end_b, bezier_coefficients(0.3)))[0],
                    y).backward()
    for name, p in middle.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    ends = list(end_a.values()) + list(end_b.values()) + list(net.params().values())
    assert all(p.grad is None for p in ends)
    assert all(p.grad is None for p in list(a.parameters()) + list(b.parameters()))


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn-bn"])
def test_cohort_at_a_point_equals_a_model_holding_the_point(make):
    a, b = make(1), make(2)
    net, end_a, end_b = _curve_cohort([(a, b)])
    middle = {k: torch.randn_like(v) for k, v in initial_middle(end_a, end_b).items()}
    points = _first(curve_points(end_a, middle, end_b, bezier_coefficients(0.7)))
    point = copy.deepcopy(a)  # a's running statistics, as the cohort built from a holds
    with torch.no_grad():
        for name, p in point.named_parameters():
            p.copy_(points[name])
        torch.testing.assert_close(net.eval()(net.inputs_shared(DATA[2]), {k: v[None] for k, v in points.items()})[0],
                                   point.eval()(DATA[2]))


def test_pairs_in_one_cohort_do_not_interfere():
    """Each pair of a cohort gets, bit for bit, what it gets alone (connect_models), with its own seed and lr."""
    pairs = [(_mlp(1), _mlp(2)), (_mlp(3), _mlp(4))]
    configs = [CurveConfig(epochs=2, batch_size=64, points=3, seed=0),
               CurveConfig(epochs=2, batch_size=64, points=3, lr=0.05, seed=5)]
    train_x, train_y, test_x, test_y = DATA
    together = connect_cohort(*_curve_cohort(pairs), train_x, train_y.expand(2, -1), test_x, test_y.expand(2, -1),
                              configs)
    for (a, b), config, got in zip(pairs, configs, together):
        alone = connect_models(a, b, *DATA, config)
        for key in ("train_error", "train_loss", "test_error", "test_loss"):
            assert getattr(got, key).tolist() == getattr(alone, key).tolist(), key
        assert [h["train_loss"] for h in got.history] == [h["train_loss"] for h in alone.history]
    assert together[0].train_loss.tolist() != together[1].train_loss.tolist()


def test_mismatched_endpoints_raise():
    with pytest.raises(ValueError, match="architecture"):
        _curve_cohort([(_mlp(1), _mlp(1, bn=True))])


# ------------------------------------------------------------------------------------------ BatchNorm


def _evaluate_one(a, b, middle, config):
    """evaluate_curves of the one pair (a, b) with pair 0's middle point (None: the initial midpoint)."""
    net, end_a, end_b = _curve_cohort([(a, b)])
    middle = initial_middle(end_a, end_b) if middle is None else {k: v[None] for k, v in middle.items()}
    train_x, train_y, test_x, test_y = DATA
    return evaluate_curves(net, end_a, middle, end_b, train_x, train_y[None], test_x, test_y[None], [config])[0]


def test_recompute_batchnorm_is_the_average_of_batch_statistics():
    model = _mlp(0, bn=True).eval()
    x = DATA[0][:96]
    captured = []
    hook = model[2].register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach().clone()))
    order = torch.randperm(96, generator=torch.Generator().manual_seed(7))
    assert recompute_batchnorm(model, x, batch_size=40, seed=7, drop_last=True) is model
    hook.remove()
    assert len(captured) == 2  # 96 = 2 × 40 + 16: the partial batch is dropped
    # The layer saw the seeded permutation's batches, and keeps the plain average of their statistics.
    with torch.no_grad():
        pre_bn = model[1](x.flatten(1))
    torch.testing.assert_close(captured[0], pre_bn[order[:40]])
    means = torch.stack([c.mean(0) for c in captured])
    variances = torch.stack([c.var(0, unbiased=True) for c in captured])
    torch.testing.assert_close(model[2].running_mean, means.mean(0))
    torch.testing.assert_close(model[2].running_var, variances.mean(0))
    assert not model.training and model[2].momentum == 0.1  # mode and momentum restored
    plain = _mlp(0)
    before = copy.deepcopy(plain.state_dict())
    assert recompute_batchnorm(plain, x) is plain  # no BatchNorm: nothing to do
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())


@pytest.mark.parametrize("make", [_cnn, lambda seed: _mlp(seed, bn=True)], ids=["cnn-bn-grouped", "mlp-bn-vmap"])
@pytest.mark.parametrize("seeds", [(7, 3), (7, 7)], ids=["own-orders", "shared-order"])
def test_cohort_batchnorm_recompute_is_each_members(make, seeds):
    """recompute_cohort_batchnorm gives member m what recompute_batchnorm gives member m's model with seeds[m]."""
    models = [_sgd(make(1), 20, seed=1), _sgd(make(2), 20, seed=2)]
    net, _, _ = _curve_cohort([(models[0], models[1]), (models[1], models[0])])
    net.load_stacked({k: torch.stack([m.state_dict()[k] for m in models]) for k in models[0].state_dict()})
    x = DATA[0][:100]
    assert recompute_cohort_batchnorm(net, x, seeds=list(seeds), batch_size=32, drop_last=True) is net
    momenta = net.set_batchnorm_momentum(None)
    assert not net.training and momenta and all(m == 0.1 for m in momenta)  # mode and momenta restored
    for member, (model, seed) in enumerate(zip(models, seeds)):
        want = recompute_batchnorm(copy.deepcopy(model), x, batch_size=32, seed=seed, drop_last=True).state_dict()
        for name, value in want.items():
            if name.endswith(("running_mean", "running_var")):
                torch.testing.assert_close(net.stacked_state()[name][member], value, rtol=1e-5, atol=1e-6)


# The one-pair cohort holds a BatchNorm after a convolution in grouped layers (for one member the same kernels as
# the model's), one after a Linear in vmap, whose batched BatchNorm rounds float32 differently (~1e-8 relative).
@pytest.mark.parametrize("make, loss_rel", [(_cnn, 1e-9), (lambda seed: _mlp(seed, bn=True), 1e-6)],
                         ids=["cnn-bn", "mlp-bn"])
def test_bn_curve_endpoints_reproduce_the_models(make, loss_rel):
    a, b = _sgd(make(1), 60, seed=1), _sgd(make(2), 60, seed=2)
    train_x, train_y, test_x, test_y = DATA
    res = _evaluate_one(a, b, None, CurveConfig(points=2, bn_batch_size=64))
    for i, model in enumerate((a, b)):
        ref = recompute_batchnorm(copy.deepcopy(model), train_x, batch_size=64, seed=0, drop_last=True)
        train_loss, train_err = _manual_loss_error(ref, train_x, train_y)
        test_loss, test_err = _manual_loss_error(ref, test_x, test_y)
        assert res["train_error"][i] == pytest.approx(train_err, abs=1e-9)
        assert res["test_error"][i] == pytest.approx(test_err, abs=1e-9)
        assert res["train_loss"][i] == pytest.approx(train_loss, rel=loss_rel)
        assert res["test_loss"][i] == pytest.approx(test_loss, rel=loss_rel)
    assert res["train_error"][0] < 60  # really trained (chance is 75%)


def test_endpoints_without_bn_equal_the_models_exactly(trained_pair):
    a, b = trained_pair
    train_x, train_y, test_x, test_y = DATA
    res = _evaluate_one(a, b, None, CurveConfig(points=2))
    for i, model in enumerate((a, b)):
        train_loss, train_err = _manual_loss_error(model, train_x, train_y)
        test_loss, test_err = _manual_loss_error(model, test_x, test_y)
        assert res["train_error"][i] == pytest.approx(train_err, abs=1e-12)
        assert res["test_error"][i] == pytest.approx(test_err, abs=1e-12)
        assert res["train_loss"][i] == pytest.approx(train_loss, rel=1e-12)
        assert res["test_loss"][i] == pytest.approx(test_loss, rel=1e-12)


# ------------------------------------------------------------------------------------------ end to end


def test_identical_endpoints_give_zero_connectivity():
    model = _sgd(_cnn(1), 30, seed=1)
    result = connect_models(model, copy.deepcopy(model), *DATA, CurveConfig(epochs=0, points=5))
    assert result.status == "ok" and result.mode_connectivity == 0.0 and result.t_star == 0.0
    assert np.all(result.train_error == result.train_error[0])
    _, end_a, end_b = _curve_cohort([(model, model)])
    middle = _first(initial_middle(end_a, end_b))
    for name, p in model.named_parameters():
        assert torch.equal(middle[name], p)  # the midpoint of equal models


def test_curve_training_lowers_the_loss_in_the_middle(trained_pair):
    a, b = trained_pair
    config = CurveConfig(epochs=40, lr=0.2, batch_size=64, seed=3, points=3)  # t = 0, 0.5, 1
    before = _evaluate_one(a, b, None, config)
    middle, history, failure = _train_one(a, b, DATA[0], DATA[1], config)
    after = _evaluate_one(a, b, middle, config)
    assert failure is None
    assert [h["epoch"] for h in history] == list(range(1, 41))
    # Epochs are numbered from 1 (Garipov): history[i] is epoch i + 1, at epoch/epochs = .025, .5, .75, .9, 1.
    lrs = [history[e]["lr"] for e in (0, 19, 29, 35, 39)]
    assert lrs == pytest.approx([0.2, 0.2, 0.2 * (1 - 0.99 * 0.25 / 0.4), 0.002, 0.002])
    # The straight midpoint of two independently trained networks is a barrier; the trained curve much less so.
    assert before["train_loss"][1] > 3 * before["train_loss"][[0, 2]].max()
    assert after["train_loss"][1] < 0.5 * before["train_loss"][1]
    assert after["train_error"][1] < 0.5 * before["train_error"][1]
    # The endpoints stayed where they were.
    np.testing.assert_array_equal(after["train_loss"][[0, 2]], before["train_loss"][[0, 2]])


def test_connect_models_result_and_determinism(trained_pair):
    a, b = trained_pair
    config = CurveConfig(epochs=2, batch_size=64, points=6, seed=4)
    r1 = connect_models(a, b, *DATA, config)
    data = types.SimpleNamespace(train_x=DATA[0], train_y=DATA[1], test_x=DATA[2], test_y=DATA[3])
    r2 = connect_models(a, b, data, config)  # the Dataset form
    assert r1.status == "ok" and r1.error is None and r1.seconds > 0 and r1.config is config
    np.testing.assert_array_equal(r1.ts, np.linspace(0, 1, 6))
    for key in ("train_error", "train_loss", "test_error", "test_loss"):
        arr = getattr(r1, key)
        assert arr.shape == (6,) and np.all(np.isfinite(arr))
        np.testing.assert_array_equal(arr, getattr(r2, key))
    assert (r1.mode_connectivity, r1.t_star) == mode_connectivity(r1.ts, r1.train_error)
    assert len(r1.history) == 2


def test_divergence_is_a_status_not_an_exception(trained_pair):
    a, b = trained_pair
    result = connect_models(a, b, *DATA, CurveConfig(epochs=3, lr=1e12, batch_size=64))
    assert result.status == "diverged" and "diverged" in result.error
    assert result.mode_connectivity is None and result.t_star is None and result.ts.shape == (0,)
    # train_curves hands the failure back per pair, a CurveDiverged with the message and the epochs before it.
    _, history, failure = _train_one(a, b, DATA[0], DATA[1], CurveConfig(epochs=3, lr=1e12, batch_size=64))
    assert isinstance(failure, CurveDiverged) and str(failure) == result.error
    assert result.error.startswith("curve training diverged in epoch ") and "mean loss" in result.error
    assert failure.history is history and len(history) == len(result.history) < 3
    again = pickle.loads(pickle.dumps(failure))  # crosses from a worker to the driver with its history
    assert str(again) == str(failure) and again.history == failure.history


def test_batch_larger_than_training_set_is_an_error(trained_pair):
    a, b = trained_pair
    with pytest.raises(ValueError, match="not shrunk"):
        _train_one(a, b, DATA[0][:32], DATA[1][:32], CurveConfig(epochs=1, batch_size=64))
    with pytest.raises(ValueError, match="not shrunk"):
        connect_models(a, b, DATA[0][:32], DATA[1][:32], DATA[2], DATA[3], CurveConfig(epochs=1, batch_size=64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_connect_models_on_cuda_matches_structure(trained_pair):
    a, b = trained_pair
    result = connect_models(a, b, *DATA, CurveConfig(epochs=1, batch_size=64, points=3, device="cuda"))
    assert result.status == "ok" and result.train_error.shape == (3,)
    assert next(a.parameters()).device.type == "cpu"  # the models were not moved


@pytest.mark.parametrize("wrap", [False, True], ids=["grouped", "fused"])
def test_one_epoch_of_curve_training_matches_a_hand_derived_sgd(wrap):
    """Softmax regression (one Linear layer) has a closed-form gradient: dCE/dlogits = (softmax - onehot)/B.
    Replaying the same permutation and t draws, with the chain rule through γ(t) = (1-t)²A + 2t(1-t)M + t²B
    and PyTorch's momentum rule (buf = m·buf + g, M -= lr·buf), gives the middle point after one epoch
    without autograd; the weight-decay term 0.5·wd·||γ(t)||² adds wd·γ(t) to the gradient w.r.t. γ. The
    Linear alone takes the grouped backend's autograd step; inside an nn.Sequential, the fused MLP step."""
    torch.manual_seed(0)
    a, b = nn.Linear(5, 3).double(), nn.Linear(5, 3).double()
    if wrap:
        a, b = nn.Sequential(a), nn.Sequential(b)
        assert _curve_cohort([(a, b)])[0].backend == "fused"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    cfg = CurveConfig(epochs=1, lr=0.3, momentum=0.8, weight_decay=0.05, batch_size=8, seed=4)
    middle, history, _ = _train_one(a, b, x, y, cfg)

    linear_a, linear_b = (a[0], b[0]) if wrap else (a, b)
    wa, ba, wb, bb = (t.detach() for t in (linear_a.weight, linear_a.bias, linear_b.weight, linear_b.bias))
    wm, bm = (wa + wb) / 2, (ba + bb) / 2
    buf_w = buf_b = None
    lr = cfg.lr * 0.01  # the only epoch of a one-epoch curve is epoch 1 of 1, at the schedule's 1% floor (Garipov)
    assert history[0]["lr"] == pytest.approx(lr)
    rng = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(x), generator=rng)
    losses, objectives = [], []
    for step in range(len(x) // cfg.batch_size):
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        t = float(torch.rand((), generator=rng, dtype=torch.float64))
        ca, cm, cb = (1 - t) ** 2, 2 * t * (1 - t), t ** 2
        w, bias = ca * wa + cm * wm + cb * wb, ca * ba + cm * bm + cb * bb
        logits = x[idx] @ w.T + bias
        p = torch.softmax(logits, dim=1)
        ce = float(-torch.log(p[torch.arange(len(idx)), y[idx]]).mean())
        sq = float((w ** 2).sum() + (bias ** 2).sum())
        losses.append(ce)
        objectives.append(ce + 0.5 * cfg.weight_decay * sq)
        d_logits = (p - F.one_hot(y[idx], 3).double()) / len(idx)
        grad_w = cm * (d_logits.T @ x[idx] + cfg.weight_decay * w)
        grad_b = cm * (d_logits.sum(0) + cfg.weight_decay * bias)
        buf_w = grad_w if buf_w is None else cfg.momentum * buf_w + grad_w
        buf_b = grad_b if buf_b is None else cfg.momentum * buf_b + grad_b
        wm, bm = wm - lr * buf_w, bm - lr * buf_b

    prefix = "0." if wrap else ""
    torch.testing.assert_close(middle[prefix + "weight"].detach(), wm, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(middle[prefix + "bias"].detach(), bm, rtol=1e-10, atol=1e-12)
    assert history[0]["train_loss"] == pytest.approx(np.mean(losses), rel=1e-10)
    assert history[0]["objective"] == pytest.approx(np.mean(objectives), rel=1e-10)
    assert history[0]["objective"] > history[0]["train_loss"]  # the penalty is in the objective
