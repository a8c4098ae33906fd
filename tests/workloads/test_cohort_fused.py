"""The fused MLP step (workloads/cohort_fused.py, backend "fused") against the reference optimiser and itself.

Bit for bit where the arithmetic is the same by construction: a member alone or in cohorts of any size, a frozen
member, a resumed checkpoint, the bf16 fallback. To rounding against torch.optim.SGD on the member's own
nn.Sequential (``tests.helpers.sgd_reference``: autograd's backward, torch's update).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workloads.cohort_fused import FlatSGD, FusedCurveStep
from workloads.cohort_net import FusedNet, build_cohort_net, member_state
from workloads.cohort_train import Execution, train_cohort
from workloads.metrics.connectivity import CurveConfig, CurveDiverged, curve_cohort, initial_middle, train_curves
from workloads.models import seeded_model
from workloads.train import TrainConfig

from tests.helpers import relative_difference, round_trip, sgd_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Per member: seed, lr, weight decay, momentum, schedule (every factor of the update differs between members).
SETTINGS = [(0, 0.05, 5e-4, 0.9, "constant"), (1, 0.1, 0.0, 0.5, "step"), (2, 0.02, 1e-3, 0.0, "constant"),
            (3, 0.08, 1e-4, 0.95, "step"), (4, 0.03, 0.0, 0.9, "constant")]


def _data(n=320, dtype=torch.float32):
    gen = torch.Generator().manual_seed(5)
    return torch.randn(n, 40, generator=gen, dtype=dtype), torch.randint(0, 10, (n,), generator=gen)


def _configs(indices, epochs=3, batch=32, **changes):
    return [TrainConfig(epochs=epochs, batch_size=batch, lr=lr, weight_decay=wd, momentum=mom, schedule=schedule,
                        seed=seed, **changes)
            for seed, lr, wd, mom, schedule in (SETTINGS[i] for i in indices)]


def _models(indices, width=16):
    return [seeded_model("mlp", SETTINGS[i][0], width=width, num_classes=10, input_shape=(40,)) for i in indices]


def _train(indices, x, y, backend="fused", **kw):
    models = _models(indices)
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    if x.dtype == torch.float64:
        net.module.double()
    configs = _configs(indices, **kw.pop("config", {}))
    return net, train_cohort(net, x, y.expand(len(indices), -1), configs, **kw)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_members_weights_do_not_depend_on_the_cohort_it_trains_in(threads):
    """Member 0 alone, second of three and last of five (the others with other lr, weight decay, momentum,
    schedule): the same bits, and the same epoch losses, at one and at two threads (where the BLAS may split
    a single member's product across threads)."""
    torch.set_num_threads(threads)  # one_torch_thread puts the count back
    x, y = _data()
    runs = {1: [0], 3: [1, 0, 2], 5: [2, 1, 4, 3, 0]}
    got = {}
    for size, indices in runs.items():
        net, result = _train(indices, x, y)
        assert isinstance(net, FusedNet) and result.statuses == ["ok"] * size
        at = indices.index(0)
        got[size] = (member_state(net.stacked_state(), at), [h["train_loss"] for h in result.histories[at]])
    for size in (3, 5):
        for key, value in got[1][0].items():
            assert torch.equal(got[size][0][key], value), (size, key)
        assert got[size][1] == got[1][1]


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["fp64", "fp32"])
def test_members_equal_torch_optim_sgd_in_float64(dtype, rel):
    """Against torch.optim.SGD on each member's own nn.Sequential in float64 (autograd's backward), 30 steps.
    In float64 the fused step differs from it by rounding alone (~1e-16 per operation; SGD amplifies it
    over the steps, so 1e-12). In float32 by float32's rounding of the same arithmetic: ~6e-8 per operation,
    amplified likewise, which stays under 1e-5 here; a wrong factor or gradient is off by far more."""
    x, y = _data(dtype=dtype)
    indices = [0, 1, 2, 3]
    net, result = _train(indices, x, y)
    assert result.statuses == ["ok"] * len(indices)
    for i, (model, config) in enumerate(zip(_models(indices), _configs(indices))):
        want, history = sgd_reference(model, x.double(), y, config, torch.float64)
        assert relative_difference(member_state(net.stacked_state(), i), want) <= rel
        losses = [h["train_loss"] for h in result.histories[i]]  # kept by the epoch loop in float32
        assert losses == pytest.approx([h[0] for h in history], rel=max(rel, 1e-6))
        assert [h["train_acc"] for h in result.histories[i]] == [h[1] for h in history]


@pytest.mark.parametrize("classes", [3, 16])
def test_any_number_of_classes_equals_torch_optim_sgd(classes):
    """The last layer runs with its classes padded to a multiple of LOGIT_PAD (16): padded from 3, and not at
    all at 16, the members still equal torch.optim.SGD in float64, losses and accuracies included."""
    x, y = _data(dtype=torch.float64)
    y = y % classes
    models = [seeded_model("mlp", SETTINGS[i][0], width=16, num_classes=classes, input_shape=(40,)) for i in (0, 1)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models], "fused")
    net.module.double()
    configs = _configs([0, 1], epochs=2)
    result = train_cohort(net, x, y.expand(2, -1), configs)
    for i, (model, config) in enumerate(zip(models, configs)):
        want, history = sgd_reference(model, x, y, config, torch.float64)
        assert relative_difference(member_state(net.stacked_state(), i), want) <= 1e-12
        assert [h["train_loss"] for h in result.histories[i]] == pytest.approx([h[0] for h in history], rel=1e-6)
        assert [h["train_acc"] for h in result.histories[i]] == [h[1] for h in history]


def test_a_diverged_member_is_frozen_bit_for_bit_and_the_others_do_not_notice():
    """Member 1 (lr 1e8) diverges in its first epoch: its weights after 1 and after 3 epochs are those when it was
    frozen; the others end with the bits of a cohort without it."""
    x, y = _data()
    frozen = {}
    for epochs in (1, 3):
        models = _models([0, 1, 2])
        configs = _configs([0, 1, 2], epochs=epochs)
        configs[1] = dataclasses.replace(configs[1], lr=1e8)
        net = build_cohort_net(models[0], [m.state_dict() for m in models], "fused")
        result = train_cohort(net, x, y.expand(3, -1), configs)
        assert result.statuses == ["ok", "diverged", "ok"] and "epoch 0" in result.errors[1]
        frozen[epochs] = (net, result)
    one, three = (member_state(frozen[e][0].stacked_state(), 1) for e in (1, 3))
    for key in one:
        torch.testing.assert_close(three[key], one[key], rtol=0, atol=0, equal_nan=True)
    healthy, _ = _train([0, 2], x, y)
    for i, j in ((0, 0), (2, 1)):
        for key, value in member_state(healthy.stacked_state(), j).items():
            assert torch.equal(member_state(frozen[3][0].stacked_state(), i)[key], value), key


def test_a_checkpoint_resumes_bit_for_bit():
    x, y = _data()
    saved = []
    indices = [0, 1, 2]
    whole_net, whole = _train(indices, x, y, config={"checkpoint_every": 1}, checkpoint_fn=saved.append)
    assert [s["epoch"] for s in saved] == [1, 2, 3]
    assert all(s["momentum"]["1.weight"].is_contiguous() for s in saved)  # a CPU copy, not the (M, P) views
    resumed_net, resumed = _train(indices, x, y, config={"checkpoint_every": 1}, resume_state=round_trip(saved[1]))
    for key, value in whole_net.stacked_state().items():
        assert torch.equal(resumed_net.stacked_state()[key], value), key
    assert ([[h["train_loss"] for h in hs] for hs in resumed.histories] ==
            [[h["train_loss"] for h in hs] for hs in whole.histories])


def test_parameters_gradients_and_momentum_are_views_of_one_buffer_each():
    models = _models([0, 1])
    net = build_cohort_net(models[0], [m.state_dict() for m in models], "fused")
    params = list(net.params().values())
    before = [p.detach().clone() for p in params]
    sgd = FlatSGD.for_training(params, _configs([0, 1]), torch.device("cpu"))
    assert sgd.flat.shape == (2, sum(p[0].numel() for p in params))
    for p, b, buf in zip(params, before, sgd.buffers):
        assert torch.equal(p, b) and p.untyped_storage().data_ptr() == sgd.flat.untyped_storage().data_ptr()
        assert buf.untyped_storage().data_ptr() == sgd.velocity.untyped_storage().data_ptr()
    sgd.buffers = [torch.ones_like(p) for p in params]  # a checkpoint's momentum lands in the flat buffer
    assert bool((sgd.velocity == 1).all())


def test_evaluation_after_fused_training_is_the_grouped_forward():
    """The fused net evaluates by the grouped layers' forward (during training on contiguous copies of its
    transposed weight views): the grouped backend's numbers to the bit. Trained, it holds ordinary contiguous
    parameters of the net's own shapes, no longer views of the step's buffer."""
    x, y = _data()
    net, result = _train([0, 1], x, y, test_set=(x[:64], y[:64].expand(2, -1)))
    assert all(h["test_loss"] is not None for h in result.histories[0])
    grouped = build_cohort_net(_models([0])[0], [member_state(net.stacked_state(), i) for i in range(2)], "grouped")
    weight = net.module[1].weight
    assert weight.is_contiguous() and weight.shape == (2, 16, 40) and weight.view(-1).numel() == 2 * 16 * 40
    with torch.no_grad():
        assert torch.equal(net(net.inputs_shared(x[:64])), grouped(grouped.inputs_shared(x[:64])))


def test_bf16_falls_back_to_the_autograd_step_of_the_grouped_layers():
    """The fused step writes out the fp32 backward only; under bf16 autocast a fused net trains as grouped."""
    x, y = _data()
    bf16 = Execution(precision="bf16")
    fused, _ = _train([0, 1], x, y, execution=bf16, config={"epochs": 1})
    grouped, _ = _train([0, 1], x, y, backend="grouped", execution=bf16, config={"epochs": 1})
    for key, value in grouped.stacked_state().items():
        assert torch.equal(fused.stacked_state()[key], value), key


def test_the_compiled_step_gives_the_eager_result(monkeypatch):
    """The whole fused step traced by torch.compile (aot_eager: the same graph capture, without the ~20 s of C++
    code generation; inductor's own kernels are measured by benchmarks/cohort.py --fused)."""
    from workloads import cohort_fused

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, dynamic=None: real_compile(
        fn, backend="aot_eager", dynamic=dynamic))
    monkeypatch.setattr(cohort_fused, "_COMPILED", {})
    x, y = _data()
    eager, _ = _train([0, 1], x, y, config={"epochs": 1})
    compiled, _ = _train([0, 1], x, y, execution=Execution(compile="default"), config={"epochs": 1})
    assert list(cohort_fused._COMPILED) == ["default"]
    for key, value in eager.stacked_state().items():
        torch.testing.assert_close(compiled.stacked_state()[key], value, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------
# Curves (workloads/metrics/connectivity.py's middle-point SGD on the fused step)


def _curve_pairs(dtype, width=16, depth=2, pairs=3):
    models = [seeded_model("mlp", s, width=width, depth=depth, num_classes=10, input_shape=(40,)).to(dtype)
              for s in range(pairs + 1)]
    return [(models[i], models[i + 1]) for i in range(pairs)]


def _curve_configs(count, epochs=3):
    base = CurveConfig(epochs=epochs, lr=0.05, batch_size=32, points=3, weight_decay=5e-4)  # epoch 3: lr decays
    changes = [{}, dict(lr=0.02, seed=3, weight_decay=0.0), dict(momentum=0.5, seed=1, weight_decay=2e-3)]
    return [dataclasses.replace(base, **changes[i % 3]) for i in range(count)]


def _train_curves(pairs, backend, configs, x, y):
    net, end_a, end_b = curve_cohort(pairs, "cpu", backend)
    return train_curves(net, end_a, end_b, x, y.expand(len(pairs), -1), configs)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_fused_curves_equal_the_autograd_curves_in_float64(depth):
    """Per pair its own lr, momentum, weight decay and t draws; the grouped backend's autograd of the penalised
    loss at γ(t) is the reference for the middle points and the epoch means."""
    x, y = _data(dtype=torch.float64)
    pairs = _curve_pairs(torch.float64, depth=depth)
    configs = _curve_configs(3)
    fused, fused_hist, _ = _train_curves(pairs, "fused", configs, x, y)
    want, want_hist, _ = _train_curves(pairs, "grouped", configs, x, y)
    assert list(fused) == list(want)
    assert all(t.is_contiguous() for t in fused.values())
    # The middle points move by 4-11% of their norm in these 3 epochs; the two float64 paths round differently
    # (fused multiply-adds, products in another orientation): 4e-11 apart, 2e-13 after the first epoch.
    assert relative_difference(fused, want) < 1e-9
    for got, ref in zip(fused_hist, want_hist):
        for key in ("train_loss", "objective", "train_error"):
            assert [h[key] for h in got] == pytest.approx([h[key] for h in ref], rel=1e-9), key
    assert any(h["objective"] > h["train_loss"] for h in fused_hist[0])  # the penalty is in the objective


@pytest.mark.parametrize("threads", [1, 2])
def test_a_curve_does_not_depend_on_the_pairs_it_trains_with(threads):
    torch.set_num_threads(threads)
    x, y = _data()
    pairs, configs = _curve_pairs(torch.float32), _curve_configs(3)
    together, hist, _ = _train_curves(pairs, "fused", configs, x, y)
    for p in range(3):
        alone, [alone_hist], _ = _train_curves(pairs[p:p + 1], "fused", configs[p:p + 1], x, y)
        for name in alone:
            assert torch.equal(together[name][p], alone[name][0]), (p, name)
        assert [h["train_loss"] for h in hist[p]] == [h["train_loss"] for h in alone_hist]


def test_a_diverged_curve_is_frozen_bit_for_bit():
    x, y = _data()
    pairs, configs = _curve_pairs(torch.float32, pairs=2), _curve_configs(2, epochs=2)
    configs[0] = dataclasses.replace(configs[0], lr=1e6)
    middle, hist, failures = _train_curves(pairs, "fused", configs, x, y)
    assert isinstance(failures[0], CurveDiverged) and failures[1] is None and len(hist[0]) < 2
    alone, _, _ = _train_curves(pairs[1:], "fused", configs[1:], x, y)
    assert all(torch.equal(middle[name][1], alone[name][0]) for name in alone)


def test_fused_curve_points_must_be_the_nets_parameters():
    pairs = _curve_pairs(torch.float32, pairs=1)
    net, end_a, end_b = curve_cohort(pairs, "cpu", "fused")
    middle = dict(reversed(list(initial_middle(end_a, end_b).items())))
    with pytest.raises(ValueError, match="in its order"):
        FusedCurveStep(net, end_a, middle, end_b, lr=[0.1], momentum=[0.9], weight_decay=[0.0])
