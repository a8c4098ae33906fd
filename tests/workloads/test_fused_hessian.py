"""The written-out Hessian-vector product of MLP cohorts (workloads/metrics/fused_hessian.py) against autograd.

float64: equal to the autograd double-backward (CohortHessianOperator) to rounding, and to the dense Hessian of
a single member. float32: a member's product bit for bit the same alone and in a cohort. The estimator on top
of it: hessian.py's tolerances against the autograd path.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workloads.cohort_net import FusedNet, build_cohort_net, member_state
from workloads.metrics.cohort_hessian import CohortHessianOperator, estimate_hessian_cohort, uses_fused_products
from workloads.metrics.fused_hessian import FusedHessianOperator
from workloads.models import seeded_model
from workloads.cohort_train import train_cohort
from workloads.train import TrainConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def _models(seeds, dtype=torch.float64, **kw):
    kw = {"width": 6, "num_classes": 10, "input_shape": (40,), **kw}
    return [seeded_model("mlp", s, **kw).to(dtype) for s in seeds]


def _cohort(models, backend="fused"):
    net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
    return net.to(next(models[0].parameters()).dtype).eval()


def _data(k, shape=(40,), members=3, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(k, *shape, generator=gen, dtype=dtype),
            torch.randint(0, 10, (members, k), generator=gen))


@pytest.mark.parametrize("depth, width, shape", [(0, 5, (40,)), (1, 7, (40,)), (2, 5, (2, 20)), (3, 9, (40,))])
def test_products_equal_autograds_double_backward(depth, width, shape):
    """Single vectors and blocks of unequal sizes (members still in Lanczos and members probing the trace),
    a member that asks nothing; the mlp flattens its (2, 20) inputs."""
    models = _models((0, 1, 2), depth=depth, width=width, input_shape=shape)
    x, y = _data(50, shape)
    fused = FusedHessianOperator(_cohort(models), x, y)
    autograd = CohortHessianOperator(_cohort(models, "grouped"), x, y)
    assert (fused.dim, fused.members, fused.dtype) == (autograd.dim, autograd.members, autograd.dtype)
    gen = torch.Generator().manual_seed(1)
    for asked in ({0: 1, 1: 1, 2: 1}, {0: 4, 2: 2}, {1: 3}):
        vectors = {m: torch.randn(b, fused.dim, generator=gen, dtype=torch.float64) if b > 1 else
                   torch.randn(fused.dim, generator=gen, dtype=torch.float64) for m, b in asked.items()}
        got, want = fused(vectors), autograd(vectors)
        assert set(got) == set(asked)
        for m in asked:
            assert got[m].shape == vectors[m].shape
            assert _relative(got[m], want[m]) < 1e-12, (asked, m)
    assert fused.counts == autograd.counts == [5, 4, 3]


def test_products_of_a_sequential_without_flatten_and_of_a_cohort_after_fused_training():
    """FusedNet takes any Sequential of Linear and ReLU; a cohort the fused step trained (its parameters released
    from the step's buffers) gives autograd's products."""
    templates = []
    for seed in range(2):
        torch.manual_seed(seed)
        templates.append(nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4)).double())
    x, y = _data(40, (12,), members=2)
    y = y % 4
    net = _cohort(templates)
    train_cohort(net, x, y, [TrainConfig(epochs=2, batch_size=10, lr=0.1, seed=s) for s in range(2)])
    assert net.linears[0].weight.is_contiguous()
    stacked = net.stacked_state()
    grouped = build_cohort_net(templates[0], [member_state(stacked, m) for m in range(2)], "grouped").eval()
    fused, autograd = FusedHessianOperator(net.eval(), x, y), CohortHessianOperator(grouped, x, y)
    v = {m: torch.randn(fused.dim, dtype=torch.float64) for m in range(2)}
    got, want = fused(v), autograd(v)
    assert all(_relative(got[m], want[m]) < 1e-12 for m in range(2))


def test_products_equal_the_dense_hessian_of_one_member():
    """torch.autograd.functional.hessian of member 1's mean cross-entropy over its flat parameters (weight
    row-major, then bias, layer after layer), applied to random vectors."""
    models = _models((0, 1), width=4, depth=2, input_shape=(3,), num_classes=3)
    x, y = _data(20, (3,), members=2)
    y = y % 3
    op = FusedHessianOperator(_cohort(models), x, y)
    model = models[1]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        params, start = [], 0
        for shape in shapes:
            params.append(theta[start:start + shape.numel()].view(shape))
            start += shape.numel()
        h = x
        for i in range(0, len(params), 2):
            h = h @ params[i].T + params[i + 1]
            if i + 2 < len(params):
                h = torch.relu(h)
        return nn.functional.cross_entropy(h, y[1])

    dense = torch.autograd.functional.hessian(loss, flat)
    assert op.dim == len(flat)
    block = torch.randn(3, op.dim, dtype=torch.float64)
    got = op({1: block})[1]
    assert _relative(got, block @ dense.T) < 1e-12


@pytest.mark.parametrize("threads", [1, 2])
def test_a_members_product_does_not_depend_on_its_cohort(threads):
    """float32, member 1 alone, second of three (all asking, then only it and member 2): the same bits, at one
    and two threads (where the BLAS may split one member's product)."""
    torch.set_num_threads(threads)  # one_torch_thread puts the count back
    models = _models((0, 1, 2), dtype=torch.float32, width=24, depth=2)
    x, y = _data(64, dtype=torch.float32)
    v = torch.randn(3, FusedHessianOperator(_cohort(models[1:2]), x, y[1:2]).dim)
    alone = FusedHessianOperator(_cohort(models[1:2]), x, y[1:2])({0: v[1]})[0]
    three = FusedHessianOperator(_cohort(models), x, y)
    assert torch.equal(three({0: v[0], 1: v[1], 2: v[2]})[1], alone)
    assert torch.equal(three({1: v[1], 2: v[2]})[1], alone)
    assert torch.equal(three({1: v[:2]})[1][1], FusedHessianOperator(_cohort(models[1:2]), x, y[1:2])({0: v[1]})[0])


def test_the_estimator_on_fused_products_equals_the_autograd_path():
    """estimate_hessian_cohort takes a FusedNet's products written out, a grouped net's through autograd:
    λ_max within 1e-3, trace within its standard error (hessian.py's accuracy), over trained-ish members."""
    models = _models((0, 1, 2), dtype=torch.float32, width=16, depth=2)
    x, y = _data(200, dtype=torch.float32)
    for m in models:
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        for _ in range(10):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y[0]).backward()
            opt.step()
    fused, grouped = _cohort(models), _cohort(models, "grouped")
    assert isinstance(fused, FusedNet) and uses_fused_products(fused, y) and not uses_fused_products(grouped, y)
    opts = dict(eigen_max_iter=40, trace_max_probes=30, members=[0, 2])
    got, want = estimate_hessian_cohort(fused, x, y, **opts), estimate_hessian_cohort(grouped, x, y, **opts)
    assert got[1] is None
    for i in (0, 2):
        assert got[i].top_eigenvalue == pytest.approx(want[i].top_eigenvalue, rel=1e-3)
        assert abs(got[i].trace - want[i].trace) <= 2 * want[i].trace_std_error + 1e-3 * abs(want[i].trace)
        assert abs(got[i].eigen_iterations - want[i].eigen_iterations) <= 2
        assert got[i].hvps == got[i].lanczos_steps + got[i].trace_probes


def test_targets_other_than_one_label_per_point_are_refused():
    models = _models((0, 1))
    x, y = _data(10, members=2)
    with pytest.raises(ValueError, match=r"\(M, k\)"):
        FusedHessianOperator(_cohort(models), x, y[:, :5])


def test_a_members_estimate_does_not_depend_on_its_cohort():
    """λ_max and trace bit for bit alone and in a cohort of three, whose products the members' threads take in
    turn: a thread's first products were split over every core (its OpenMP count not yet set) and the
    estimate differed from run to run."""
    models = _models((0, 1, 2), dtype=torch.float32, width=8, input_shape=(64,))
    x, y = _data(300, (64,), dtype=torch.float32)
    together = estimate_hessian_cohort(_cohort(models), x, y)
    for i, model in enumerate(models):
        [alone] = estimate_hessian_cohort(_cohort([model]), x, y[i:i + 1])
        assert (alone.top_eigenvalue, alone.trace) == (together[i].top_eigenvalue, together[i].trace), i
