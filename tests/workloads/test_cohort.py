"""The training engine (workloads/cohort_net.py, cohort_train.py, cohort_checkpoint.py) against one-at-a-time runs.

The reference is independent of the engine: a plain loop of the member's nn.Module with torch.optim.SGD in the
method's batch order (``tests.helpers.sgd_reference``), in float32 and, where float32 rounding of different
kernels would be amplified by BatchNorm nets, in float64, where the cohort must agree to rounding. workloads.train.train is the
engine's cohort of one: the tests below also hold a member alone against the same member in a cohort.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys

import pytest
import torch

from torch import nn

from workloads.cohort_checkpoint import CHECKPOINT_FORMAT, ResumeStateError
from workloads.cohort_net import BACKENDS, build_cohort_net, member_state, resolve_backend
from workloads.cohort_train import Execution, evaluate_cohort, learning_rate, train_cohort
from workloads.data import Dataset, corrupt_labels
from workloads.models import seeded_model
from workloads.train import TrainConfig, evaluate, train

from tests.helpers import relative_difference, round_trip, sgd_reference
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIES = [
    ("mlp", (40,), {}),
    ("cnn", (40,), {"batch_norm": True}),
    ("cnn", (3, 8, 8), {}),
    ("resnet18", (3, 8, 8), {}),
    ("resnet18", (40,), {}),
    ("vgg11", (3, 32, 32), {}),
]
FAMILY_IDS = [f"{name}-{'x'.join(map(str, shape))}{'-bn' if kw else ''}" for name, shape, kw in FAMILIES]


def members(name, shape, seeds=(0, 1, 2), width=4, **kw):
    return [seeded_model(name, s, width=width, num_classes=10, input_shape=shape, **kw) for s in seeds]


def train_shared(net, data, configs, **kw):
    """train_cohort on ``data`` with every member on the same labels (the (M, n) view of data.train_y)."""
    return train_cohort(net, data.train_x, data.train_y.expand(net.members, -1), configs, **kw)


# ---------------------------------------------------------------------------------------------------------
# The stacked network


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_forward_and_batchnorm_statistics_are_each_members_own(family, backend):
    name, shape, kw = family
    models = members(name, shape, seeds=(0,) if backend == "plain" else (0, 1, 2), width=2, **kw)
    if backend == "fused" and name != "mlp":  # the fused step trains chains of Linear and ReLU only
        with pytest.raises(NotImplementedError, match="the fused step trains"):
            build_cohort_net(models[0], [m.state_dict() for m in models], backend)
        return
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, *shape, generator=gen)
    index = torch.stack([torch.randperm(40, generator=gen)[:8] for _ in models])
    net.train()
    out = net(net.inputs(x, index))
    for i, m in enumerate(models):
        m.train()
        assert torch.allclose(out[i], m(x[index[i]]), atol=1e-5, rtol=1e-4)
    stacked = net.stacked_state()
    for i, m in enumerate(models):  # one train-mode pass updated every member's running statistics as its own
        for key, value in m.state_dict().items():
            assert torch.allclose(member_state(stacked, i)[key].to(value.dtype), value, atol=1e-6), key
    net.eval()
    out = net(net.inputs_shared(x[:5]))
    for i, m in enumerate(models):
        assert torch.allclose(out[i], m.eval()(x[:5]), atol=1e-5, rtol=1e-4)


def test_members_must_share_one_architecture():
    a = seeded_model("mlp", 0, width=4, num_classes=10, input_shape=(40,))
    b = seeded_model("mlp", 1, width=8, num_classes=10, input_shape=(40,))
    with pytest.raises(ValueError, match="shape"):
        build_cohort_net(a, [a.state_dict(), b.state_dict()])


# ---------------------------------------------------------------------------------------------------------
# Training equals the one-at-a-time runs


def _check_against_train(data, models, configs, result, *, rel=1e-4):
    stacked = result.net.stacked_state()
    for i, (model, config) in enumerate(zip(models, configs)):
        d = data if not isinstance(data, list) else data[i]
        state, history = sgd_reference(model, d.train_x, d.train_y, config)
        assert result.statuses[i] == "ok"
        assert relative_difference(member_state(stacked, i), state) <= rel
        assert len(result.histories[i]) == len(history)
        for epoch, (got, (loss, acc)) in enumerate(zip(result.histories[i], history)):
            assert got["lr"] == learning_rate(config, epoch) and got["epoch"] == epoch
            assert got["train_loss"] == pytest.approx(loss, rel=1e-5)
            assert got["train_acc"] == pytest.approx(acc, abs=1e-9)


def test_seeds_of_a_cell_train_as_their_one_at_a_time_runs(mnist1d):
    models = members("mlp", (40,), width=16)
    configs = [TrainConfig(epochs=2, batch_size=128, lr=0.05, seed=s) for s in (0, 1, 2)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    _check_against_train(mnist1d, models, configs, train_shared(net, mnist1d, configs))


def test_members_differing_in_scalars_and_labels(mnist1d):
    """lr, weight decay, momentum, schedule and label noise (same x, own y) per member, seeds repeated."""
    models = members("mlp", (40,), seeds=(0, 0, 1, 1), width=8)
    base = TrainConfig(epochs=4, batch_size=200, lr=0.05, seed=0)
    configs = [base, dataclasses.replace(base, lr=0.2, schedule="step"),
               dataclasses.replace(base, seed=1, weight_decay=0.0, momentum=0.5),
               dataclasses.replace(base, seed=1, weight_decay=1e-2)]
    noisy = corrupt_labels(mnist1d, 0.3, seed=7)
    datasets = [mnist1d, mnist1d, noisy, mnist1d]
    labels = torch.stack([d.train_y for d in datasets])
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    result = train_cohort(net, mnist1d.train_x, labels, configs)
    _check_against_train(datasets, models, configs, result)
    assert result.histories[1][-1]["lr"] == pytest.approx(0.02)  # the step schedule, per member


def test_batchnorm_cnn_follows_train_for_a_short_run(mnist1d):
    models = members("cnn", (40,), width=4, batch_norm=True)
    configs = [TrainConfig(epochs=1, batch_size=400, lr=0.05, seed=s) for s in (0, 1, 2)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    _check_against_train(mnist1d, models, configs, train_shared(net, mnist1d, configs))


@pytest.mark.parametrize("name, kw", [("mlp", {}), ("cnn", {"batch_norm": True})], ids=["mlp", "cnn-bn"])
def test_a_member_alone_is_itself_in_a_cohort(mnist1d, name, kw):
    """train() is the engine's cohort of one. With the fused step an MLP member gets the same bits alone as
    beside two others (its own slice of every batched matmul and its own row of every update). A
    convolution's weight gradient does not: one convolution of groups = 3 sums over the batch in another order
    than one of groups = 1 (measured on this CPU: forward passes equal, weight gradients ~1e-8 apart), so there
    only rounding separates them."""
    models = members(name, (40,), width=4, **kw)
    configs = [TrainConfig(epochs=2, batch_size=250, lr=0.05, seed=s) for s in (0, 1, 2)]
    backend = "fused" if name == "mlp" else "grouped"
    cohort = train_shared(build_cohort_net(models[0], [m.state_dict() for m in models], backend), mnist1d,
                          configs)
    alone = train(copy.deepcopy(models[1]), mnist1d, configs[1])
    assert alone.backend == backend
    together = member_state(cohort.net.stacked_state(), 1)
    if name == "mlp":
        for key, value in alone.model.state_dict().items():
            assert torch.equal(together[key], value), key
        assert [h["train_loss"] for h in alone.history] == [h["train_loss"] for h in cohort.histories[1]]
    else:
        assert relative_difference(together, alone.model.state_dict()) <= 1e-6


class _LayerNormMLP(nn.Module):
    """A plug-in-like model: LayerNorm and GELU have no hand-batched version."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(40, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


def _dropout_mlp():
    return nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10))


def test_the_backend_follows_the_models_layers():
    x = torch.randn(4, 40)
    for name, shape, kw in FAMILIES:
        model = seeded_model(name, 0, width=2, num_classes=10, input_shape=shape, **kw)
        want = "fused" if name == "mlp" else "grouped"
        assert resolve_backend("auto", model, 3, torch.randn(2, *shape)) == want, name
    assert resolve_backend("auto", _LayerNormMLP(), 3, x) == "vmap"
    dropout = _dropout_mlp()
    before = torch.get_rng_state()
    assert resolve_backend("auto", dropout, 1, x) == "plain"
    assert torch.equal(torch.get_rng_state(), before)  # the probes drew on copies, under fork_rng
    with pytest.raises(ValueError, match="'vmap' cannot.*draws random numbers .dropout.*backend 'plain'"):
        resolve_backend("vmap", dropout, 1, x)
    with pytest.raises(ValueError, match="'grouped' cannot.*do not support _LayerNormMLP"):
        resolve_backend("grouped", _LayerNormMLP(), 2, x)
    with pytest.raises(ValueError, match="no cohort backend can train 3 x Sequential.*plain: it runs one member"):
        resolve_backend("auto", dropout, 3, x)
    with pytest.raises(ValueError, match="plain backend runs one member at a time"):
        build_cohort_net(dropout, [dropout.state_dict()] * 2, "plain")


def test_a_subclass_with_its_own_forward_is_not_taken_for_its_base():
    class Twice(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    assert resolve_backend("auto", Twice(nn.Linear(40, 10)), 2, torch.randn(2, 40)) == "vmap"


@pytest.fixture
def seqnets():
    example = os.path.join(REPO_ROOT, "examples", "translation")
    sys.path.insert(0, example)
    try:
        import seqnets

        yield seqnets
    finally:
        sys.path.remove(example)
        sys.modules.pop("seqnets", None)


def test_sequence_targets_train_per_member_as_alone(seqnets):
    """Token targets (n, T) per member as (M, n, T): the translation example's Transformer (LayerNorm: vmap), a
    cohort of two on their own targets against the plain loop, and train() on (n, T)."""
    x, y, tx, ty = seqnets.reorder_translation(seed=3, train_size=96, test_size=16, length=6, vocab=10)
    models = [seeded_model("seqnets:transformer", s, width=8, num_classes=10, input_shape=(6,)) for s in (0, 1)]
    targets = torch.stack([y, y.roll(1, dims=1)])  # the second member learns another task on the same inputs
    configs = [TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=s) for s in (0, 1)]
    backend = resolve_backend("auto", models[0], 2, x)
    assert backend == "vmap"
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    result = train_cohort(net, x, targets, configs, test_set=(tx, torch.stack([ty, ty.roll(1, dims=1)])))
    data = [Dataset("tok", x, t, tx, ty, 10) for t in targets]
    _check_against_train(data, models, configs, result)
    assert all(h["test_loss"] is not None for h in result.histories[0])
    alone = train(copy.deepcopy(models[0]), data[0], configs[0])
    assert alone.backend == "vmap"
    assert relative_difference(alone.model.state_dict(), member_state(net.stacked_state(), 0)) <= 1e-5
    with pytest.raises(ValueError, match=r"train_y must be \(M, n, ...\) = \(2, 96, ...\)"):
        train_cohort(net, x, y, configs)  # (n, T) is not read as (M, n): the member axis is never guessed


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "fused"])  # fused: test_cohort_fused.py
@pytest.mark.parametrize("name, kw", [("cnn", {"batch_norm": True}), ("resnet18", {})], ids=["cnn-bn", "resnet18"])
def test_float64_batchnorm_nets_equal_torch_optim_per_member(name, kw, backend):
    """Same arithmetic, no kernel rounding: in float64 the cohort reproduces each member's own SGD run."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 40, generator=gen, dtype=torch.float64), torch.randint(0, 10, (96,), generator=gen)
    count = 1 if backend == "plain" else 3  # plain runs one member
    models = members(name, (40,), seeds=range(count), width=2, **kw)
    configs = [TrainConfig(epochs=2, batch_size=32, lr=lr, weight_decay=wd, momentum=mom, seed=s)
               for s, lr, wd, mom in ((0, 0.05, 5e-4, 0.9), (1, 0.1, 0.0, 0.5), (2, 0.02, 1e-3, 0.0))][:count]
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    net.module.double()
    train_cohort(net, x, y.expand(count, -1), configs)
    stacked = net.stacked_state()
    for i, (model, config) in enumerate(zip(models, configs)):
        state, _ = sgd_reference(model, x, y, config, torch.float64)
        assert relative_difference(member_state(stacked, i), state) <= 1e-12


# ---------------------------------------------------------------------------------------------------------
# Divergence


def test_a_diverged_member_is_frozen_while_the_others_finish(mnist1d):
    models = members("mlp", (40,), width=8)
    configs = [TrainConfig(epochs=3, batch_size=100, lr=0.05, seed=0), TrainConfig(epochs=3, batch_size=100, lr=1e4, seed=1),
               TrainConfig(epochs=3, batch_size=100, lr=0.05, seed=2)]
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    result = train_shared(net, mnist1d, configs)
    alone = train(copy.deepcopy(models[1]), mnist1d, configs[1])
    assert alone.status == "diverged" and result.statuses == ["ok", "diverged", "ok"]
    assert result.errors[1] == alone.error  # the same message: epoch, step, loss, lr, batch size
    assert result.epochs_completed == [3, len(alone.history), 3]
    # The others are untouched by the diverged one: they end as in a cohort without it (a cohort of healthy
    # members follows train(): the tests above). The masked update once used its own arithmetic, whose
    # rounding SGD amplified to 5e-3 over 120 steps.
    healthy = build_cohort_net(models[0], [models[0].state_dict(), models[2].state_dict()])
    reference = train_shared(healthy, mnist1d, [configs[0], configs[2]])
    assert reference.statuses == ["ok", "ok"]
    stacked, alone_stacked = net.stacked_state(), healthy.stacked_state()
    for i, j in ((0, 0), (2, 1)):
        assert relative_difference(member_state(stacked, i), member_state(alone_stacked, j)) <= 1e-6
        assert result.histories[i][-1]["train_loss"] == pytest.approx(reference.histories[j][-1]["train_loss"], rel=1e-5)


def test_a_frozen_member_keeps_its_weights(mnist1d):
    """Frozen from the check that found it: its weights and BatchNorm statistics after training are those at
    that moment."""
    models = members("cnn", (40,), seeds=(0, 1), width=2, batch_norm=True)
    configs = [TrainConfig(epochs=1, batch_size=100, lr=1e4, seed=0), TrainConfig(epochs=2, batch_size=100, lr=0.05, seed=1)]
    one_epoch = build_cohort_net(models[0], [m.state_dict() for m in models])
    train_shared(one_epoch, mnist1d,
                 [configs[0], dataclasses.replace(configs[1], epochs=1)])
    two = build_cohort_net(models[0], [m.state_dict() for m in models])
    result = train_shared(two, mnist1d,
                          [dataclasses.replace(configs[0], epochs=2), configs[1]])
    assert result.statuses == ["diverged", "ok"]
    first, later = member_state(one_epoch.stacked_state(), 0), member_state(two.stacked_state(), 0)
    for key in first:
        torch.testing.assert_close(later[key], first[key], rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.mark.parametrize("name, kw", [("mlp", {}), ("cnn", {"batch_norm": True})], ids=["mlp", "cnn-bn"])
def test_checkpoint_resumes_bit_exactly_and_loads_weights_only(mnist1d, name, kw):
    models = members(name, (40,), width=4, **kw)
    configs = [TrainConfig(epochs=3, batch_size=500, lr=0.05, seed=s, checkpoint_every=1) for s in (0, 1)]
    configs.append(TrainConfig(epochs=3, batch_size=500, lr=1e5, seed=2, checkpoint_every=1))  # diverges
    full = build_cohort_net(models[0], [m.state_dict() for m in models])
    saved = []
    whole = train_shared(full, mnist1d, configs, checkpoint_fn=saved.append)
    assert [s["epoch"] for s in saved] == [1, 2, 3] and saved[0]["format"] == CHECKPOINT_FORMAT
    resumed_net = build_cohort_net(models[0], [m.state_dict() for m in models])
    resumed = train_shared(resumed_net, mnist1d, configs, resume_state=round_trip(saved[0]))
    for key, value in full.stacked_state().items():  # bit for bit, the frozen member's NaNs included
        torch.testing.assert_close(resumed_net.stacked_state()[key], value, rtol=0, atol=0, equal_nan=True)
    without_time = lambda histories: [[{k: v for k, v in h.items() if k != "seconds"} for h in hs]  # noqa: E731
                                      for hs in histories]
    assert without_time(resumed.histories) == without_time(whole.histories)
    assert resumed.statuses == whole.statuses == ["ok", "ok", "diverged"] and resumed.errors == whole.errors


def test_a_checkpoint_of_another_cohort_is_refused_with_a_clear_error(mnist1d):
    models = members("mlp", (40,), seeds=(0, 1), width=4)
    configs = [TrainConfig(epochs=2, batch_size=500, lr=0.05, seed=s, checkpoint_every=1) for s in (0, 1)]
    saved = []
    train_shared(build_cohort_net(models[0], [m.state_dict() for m in models]), mnist1d,
                 configs, checkpoint_fn=saved.append)
    fresh = lambda: build_cohort_net(models[0], [m.state_dict() for m in models])  # noqa: E731
    other = [dataclasses.replace(configs[0], lr=0.1), configs[1]]
    with pytest.raises(ResumeStateError, match="resume_state was made with a different TrainConfig for member 0"):
        train_shared(fresh(), mnist1d, other, resume_state=saved[0])
    named = []
    train_shared(fresh(), mnist1d, configs, checkpoint_fn=named.append, members=["a", "b"])
    with pytest.raises(ValueError, match=r"resume_state was made for other cohort members: \['a', 'b'\]"):
        train_shared(fresh(), mnist1d, configs, resume_state=named[0], members=["a", "c"])
    broken = {**saved[0], "state": {k: v[:, :1] for k, v in saved[0]["state"].items()}}
    with pytest.raises(ValueError, match="resume_state is not a usable cohort checkpoint: state does not fit"):
        train_shared(fresh(), mnist1d, configs, resume_state=broken)
    with pytest.raises(ResumeStateError, match="resume_state is not a usable cohort checkpoint: missing"):
        train_shared(fresh(), mnist1d, configs, resume_state={"epoch": 1})


def test_members_must_agree_on_step_counts(mnist1d):
    models = members("mlp", (40,), seeds=(0, 1), width=4)
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    configs = [TrainConfig(epochs=1, batch_size=100), TrainConfig(epochs=1, batch_size=200, seed=1)]
    with pytest.raises(ValueError, match="must share batch_size"):
        train_shared(net, mnist1d, configs)


# ---------------------------------------------------------------------------------------------------------
# Evaluation, precision, compile


def test_evaluation_is_each_members_own(mnist1d):
    models = members("cnn", (40,), width=4, batch_norm=True)
    for m in models:  # give the running statistics something to say
        with torch.no_grad():
            m.train()(mnist1d.train_x[:500])
    net = build_cohort_net(models[0], [m.state_dict() for m in models])
    noisy = torch.stack([mnist1d.test_y, corrupt_labels(mnist1d, 0.5, 1).train_y[:1000], mnist1d.test_y])
    losses, accs = evaluate_cohort(net, mnist1d.test_x, noisy, batch_size=300)
    for i, m in enumerate(models):
        loss, acc = evaluate(m, mnist1d.test_x, noisy[i])
        assert losses[i] == pytest.approx(loss, rel=1e-6) and accs[i] == pytest.approx(acc, abs=1e-12)


def test_bf16_training_runs_and_stays_close_to_fp32(mnist1d):
    models = members("mlp", (40,), seeds=(0, 1), width=16)
    configs = [TrainConfig(epochs=2, batch_size=100, lr=0.05, seed=s) for s in (0, 1)]
    fp32 = train_shared(build_cohort_net(models[0], [m.state_dict() for m in models]), mnist1d, configs)
    bf16 = train_shared(build_cohort_net(models[0], [m.state_dict() for m in models]), mnist1d, configs,
                        execution=Execution(precision="bf16"))
    assert all(p.dtype == torch.float32 for p in bf16.net.params().values())  # master weights stay fp32
    for a, b in zip(fp32.histories, bf16.histories):
        assert b[-1]["train_loss"] == pytest.approx(a[-1]["train_loss"], rel=0.02)
        assert b[-1]["train_loss"] != a[-1]["train_loss"]  # bf16 did change the arithmetic


def test_compiled_training_step_gives_the_eager_result(mnist1d, monkeypatch):
    """The compile path traced by torch.compile (the aot_eager backend: the same graph capture, without a
    C++ code generation step that would cost this CI ~40 s)."""
    real_compile = torch.compile
    calls = []

    def quick_compile(fn, mode=None, dynamic=None):
        calls.append(mode)
        return real_compile(fn, backend="aot_eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", quick_compile)
    models = members("cnn", (40,), seeds=(0, 1), width=2, batch_norm=True)
    configs = [TrainConfig(epochs=1, batch_size=500, lr=0.05, seed=s) for s in (0, 1)]
    eager = build_cohort_net(models[0], [m.state_dict() for m in models])
    train_shared(eager, mnist1d, configs)
    compiled = build_cohort_net(models[0], [m.state_dict() for m in models])
    train_shared(compiled, mnist1d, configs, execution=Execution(compile="default"))
    assert calls == ["default"]
    for key, value in eager.stacked_state().items():
        assert torch.allclose(value.double(), compiled.stacked_state()[key].double(), rtol=1e-4, atol=1e-6), key
