"""Hessian metrics against independent references.

References: dense Hessians from torch.func.hessian over the flattened float64 parameters (torch.func
functional_call, eval mode, so BatchNorm uses its running statistics), dense matrices with a chosen spectrum,
and a hand-derived model whose Hessian at θ = 0 is exactly a chosen matrix. Trace tolerances come from the
Hutchinson variance of the dense Hessian: Var(zᵀHz) = 2(||H||_F² − Σ H_ii²) for a Rademacher probe z.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workloads.metrics.hessian import (
    HessianEstimate,
    HessianOperator,
    _eval_mode,
    _trainable,
    deflated_hutchinson,
    estimate_hessian,
    hessian_top_eigenvalue,
    hessian_trace,
    lanczos,
    recompute_batchnorm,
)

BACKENDS = ["lanczos", "pyhessian"]
# PyHessian needs a tight change-tolerance to be within 1% on these small-gap Hessians (its stopping rule is a
# stall test); the tests check its maths, not its defaults.
PYHESSIAN_OPTS = dict(eigen_tol=1e-6, eigen_max_iter=2000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- references ------------------------------------------------------------------------------------------


def dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 Hessian of the mean cross-entropy w.r.t. all parameters, eval mode, on a float64 copy."""
    m = copy.deepcopy(model).double().eval()
    names = [name for name, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    sizes = [p.numel() for p in m.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss(theta):
        params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        return F.cross_entropy(functional_call(m, params, (x.double(),)), y)

    h = torch.func.hessian(loss)(flat)
    return (h + h.T) / 2


def hutchinson_std(h: torch.Tensor) -> float:
    """Standard deviation of one Rademacher Hutchinson sample zᵀHz."""
    return math.sqrt(2 * float((h**2).sum() - (h.diagonal() ** 2).sum()))


def top_eig(h: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(h)[-1])


def assert_matches_dense(est: HessianEstimate, h: torch.Tensor):
    exact_top, exact_trace = top_eig(h), float(h.trace())
    assert est.top_eigenvalue == pytest.approx(exact_top, rel=1e-2)
    # A coarse bound (plain-Hutchinson error after `probes` samples, which the deflated estimator can only
    # beat): these tests are about modes and BatchNorm. The trace itself is checked tightly by
    # test_lanczos_trace_is_exact_when_its_basis_spans_the_parameters and the many-probe test.
    allowed = 4 * hutchinson_std(h) / math.sqrt(max(est.trace_probes, 1)) + 1e-4 * abs(exact_trace)
    assert abs(est.trace - exact_trace) <= allowed


# ---- models ----------------------------------------------------------------------------------------------


def make_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 4))


def make_bn_cnn(seed=0):
    """Conv -> BatchNorm -> ReLU -> pool -> linear on (2, 6, 6) images; 4 classes; ~200 parameters."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 4),
    )


def data(shape, n=48, classes=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def give_running_stats(model, seed=7):
    """Running statistics that differ from any batch's own (shifted, scaled inputs), so eval mode matters."""
    x, _ = data((2, 6, 6), n=64, seed=seed)
    recompute_batchnorm(model, 3 * x + 1)
    return model


class QuadraticLogit(nn.Module):
    """Two logits (θᵀAθ, 0); with target class 1 the loss is log(1 + exp(θᵀAθ)), whose Hessian at θ = 0 is
    exactly σ(0)·2A = A. A chosen spectrum gives a Hessian with a known, possibly negative-dominant, top."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.register_buffer("a", a)
        self.theta = nn.Parameter(torch.zeros(len(a)))

    def forward(self, x):
        q = self.theta @ self.a @ self.theta
        return torch.stack([q.expand(len(x)), torch.zeros(len(x))], dim=1)


def symmetric_with_spectrum(values, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.as_tensor(values, dtype=torch.float64)) @ q.T


# ---- agreement with dense Hessians -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_matches_dense_hessian(backend):
    model, (x, y) = make_mlp(), data((6,))
    h = dense_hessian(model, x, y)
    ev = torch.linalg.eigvalsh(h)
    assert ev[-1] > -ev[0], "precondition: top eigenvalue is also the largest in magnitude (PyHessian finds that)"
    opts = PYHESSIAN_OPTS if backend == "pyhessian" else {}
    est = estimate_hessian(model, x, y, backend=backend, trace_max_probes=60, **opts)
    assert_matches_dense(est, h)
    assert est.samples == len(x) and est.backend == backend
    assert est.hvps >= est.eigen_iterations + est.trace_probes > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_model_eval_mode_matches_dense_hessian(backend):
    model, (x, y) = give_running_stats(make_bn_cnn()), data((2, 6, 6))
    h = dense_hessian(model, x, y)  # eval mode: running statistics
    model.train()  # the metric must switch to eval mode itself
    opts = PYHESSIAN_OPTS if backend == "pyhessian" else {}
    est = estimate_hessian(model, x, y, backend=backend, trace_max_probes=60, **opts)
    assert_matches_dense(est, h)
    assert model.training


@pytest.mark.parametrize("make", [make_mlp, lambda: give_running_stats(make_bn_cnn())], ids=["mlp", "bn_cnn"])
def test_lanczos_trace_is_exact_when_its_basis_spans_the_parameters(make):
    """With as many Lanczos steps as parameters the deflated part is the whole trace: no probe is left."""
    model = make()
    x, y = data((6,)) if isinstance(model[0], nn.Linear) else data((2, 6, 6))
    h = dense_hessian(model, x, y)
    est = estimate_hessian(model, x, y, deflation_steps=h.shape[0], trace_max_probes=5, top_eigenvalue=False)
    assert est.trace_probes == 0 and est.trace_std_error == 0
    assert est.trace == pytest.approx(float(h.trace()), rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_probe_trace_matches_dense_within_its_standard_error(backend):
    """The random part: 2000 probes (fixed seed) land within 4 of their own standard errors of the dense
    trace, and that standard error is small (a few % of the trace), so the check has teeth."""
    model, (x, y) = make_mlp(), data((6,))
    exact = float(dense_hessian(model, x, y).trace())
    est = estimate_hessian(model, x, y, backend=backend, trace_tol=1e-9, trace_max_probes=2000, seed=5,
                           top_eigenvalue=False)
    assert est.trace_probes == 2000
    assert est.trace_std_error < 0.03 * exact
    assert abs(est.trace - exact) <= 4 * est.trace_std_error


def test_recomputed_batchnorm_gives_the_hessian_of_the_recomputed_model():
    model, (x, y) = give_running_stats(make_bn_cnn()), data((2, 6, 6))
    x_train, _ = data((2, 6, 6), n=96, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recomputed = recompute_batchnorm(copy.deepcopy(model), x_train, batch_size=32)
    h_recomputed, h_stale = dense_hessian(recomputed, x, y), dense_hessian(model, x, y)
    assert abs(top_eig(h_recomputed) - top_eig(h_stale)) > 0.05 * top_eig(h_stale), "precondition: BN matters"

    est = estimate_hessian(model, x, y, recompute_bn_on=x_train, bn_batch_size=32, trace_max_probes=60)
    assert est.bn_recomputed
    assert_matches_dense(est, h_recomputed)
    for k, v in model.state_dict().items():  # the caller's running statistics are put back
        assert torch.equal(v, before[k]), k


def test_recompute_batchnorm_is_the_average_of_batch_statistics():
    """First-layer BatchNorm sees the raw inputs: its statistics must be their per-channel mean and variance."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1))
    model[0].momentum = 0.3
    model.eval()
    x = torch.randn(40, 3, 4, 4) * 2 + 5
    recompute_batchnorm(model, x, batch_size=10)
    chunks = x.split(10)
    mean = torch.stack([c.mean(dim=(0, 2, 3)) for c in chunks]).mean(0)
    var = torch.stack([c.transpose(0, 1).reshape(3, -1).var(dim=1) for c in chunks]).mean(0)  # unbiased
    assert torch.allclose(model[0].running_mean, mean, atol=1e-5)
    assert torch.allclose(model[0].running_var, var, rtol=1e-5)
    assert model[0].momentum == 0.3 and not model.training
    assert recompute_batchnorm(nn.Linear(2, 2), x) is not None  # no BatchNorm: a no-op


# ---- largest algebraic eigenvalue ------------------------------------------------------------------------


def test_lanczos_reports_largest_algebraic_eigenvalue_when_a_negative_one_dominates():
    spectrum = [-5.0, 2.0, 1.0, 0.5, 0.25, 0.1, -0.3, 0.05]
    model = QuadraticLogit(symmetric_with_spectrum(spectrum).float())
    x, y = torch.zeros(4, 1), torch.ones(4, dtype=torch.long)
    h = dense_hessian(model, x, y)
    assert torch.allclose(h, model.a.double(), atol=1e-6), "the construction: Hessian = A at θ = 0"

    est = estimate_hessian(model, x, y)
    assert est.top_eigenvalue == pytest.approx(2.0, rel=1e-3)
    assert est.trace == pytest.approx(sum(spectrum), abs=1e-4)  # basis spans all 8 dimensions: exact
    # PyHessian's power iteration converges to the eigenvalue of largest magnitude instead.
    ph = estimate_hessian(model, x, y, backend="pyhessian", **PYHESSIAN_OPTS)
    assert ph.top_eigenvalue == pytest.approx(-5.0, rel=1e-2)


def test_lanczos_error_estimate_on_a_small_gap_spectrum():
    """λ1/λ2 = 0.98 over a 300-dimensional bulk: power iteration would need hundreds of steps."""
    rng = np.random.default_rng(0)
    spectrum = np.concatenate([[10.0, 9.8, 9.0], rng.uniform(-1.0, 3.0, size=297)])
    a = symmetric_with_spectrum(spectrum)
    g = torch.Generator().manual_seed(0)
    run = lanczos(lambda v: a @ v, torch.randn(300, generator=g, dtype=torch.float64), tol=1e-6, max_steps=300)
    assert run.converged_at is not None and run.steps < 100
    assert abs(run.eigenvalue - 10.0) <= max(run.error_estimate, 1e-9) <= 1e-5
    q = torch.stack(run.basis)
    assert torch.allclose(q @ q.T, torch.eye(len(run.basis), dtype=torch.float64), atol=1e-10)


# ---- trace estimator -------------------------------------------------------------------------------------


def test_deflated_hutchinson_is_unbiased_and_its_standard_error_is_honest():
    """Over many seeds the z-scores (estimate − truth)/SE must look standard (SE slightly conservative)."""
    rng = np.random.default_rng(1)
    spectrum = np.concatenate([[50.0, 40.0, 30.0, 20.0], rng.uniform(-0.5, 2.0, size=196)])
    a = symmetric_with_spectrum(spectrum, seed=2)
    matvec = lambda v: v @ a  # noqa: E731  (a is symmetric: one vector or a block of rows)
    truth = float(spectrum.sum())
    z_plain, z_deflated, probes = [], [], []
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        run = lanczos(matvec, torch.randn(200, generator=g, dtype=torch.float64), tol=math.inf, max_steps=8,
                      min_steps=8)
        for basis, exact, out in ((run.basis, sum(run.diagonal), z_deflated), ([], 0.0, z_plain)):
            res = deflated_hutchinson(matvec, 200, basis, exact, generator=g, dtype=torch.float64, tol=0.0,
                                      max_probes=10)
            out.append((res.trace - truth) / res.std_error)
        probes.append(res.probes)
    for z in (np.array(z_plain), np.array(z_deflated)):
        assert abs(z.mean()) < 0.6  # unbiased: mean of 40 z-scores has sd ≈ 0.16
        assert 0.4 < np.sqrt((z**2).mean()) < 1.3  # SE neither optimistic nor useless
    assert probes == [10] * 40


@pytest.mark.parametrize("make, shape, chunk", [(make_mlp, (6,), None), (make_bn_cnn, (2, 6, 6), None),
                                                (make_bn_cnn, (2, 6, 6), 16)], ids=["mlp", "bn-cnn", "bn-cnn-chunked"])
def test_a_block_of_products_equals_the_products_one_by_one(make, shape, chunk):
    """H·V for a block (batched backward) is H·v column by column, whole-batch and chunked, BatchNorm in eval."""
    model, (x, y) = make(), data(shape, n=50)
    if make is make_bn_cnn:
        give_running_stats(model)
    with _eval_mode(model):
        op = HessianOperator(model, _trainable(model), x, y, batch_size=chunk, retain_graph=chunk is None)
        block = torch.randn(5, op.dim, generator=torch.Generator().manual_seed(0))
        together = op(block)
        one_by_one = torch.stack([op(v) for v in block])
    assert together.shape == (5, op.dim) and op.count == 10
    assert torch.allclose(together, one_by_one, rtol=1e-5, atol=1e-6 * float(one_by_one.abs().max()))
    dense = dense_hessian(model, x, y).float()
    assert torch.allclose(together, block @ dense, rtol=1e-3, atol=1e-4 * float(one_by_one.abs().max()))


def _trace_problem():
    rng = np.random.default_rng(3)
    spectrum = np.concatenate([[30.0, 20.0], rng.uniform(-0.5, 2.0, size=98)])
    a = symmetric_with_spectrum(spectrum, seed=4)
    run = lanczos(lambda v: v @ a, torch.randn(100, generator=torch.Generator().manual_seed(0),
                                               dtype=torch.float64), tol=math.inf, max_steps=4, min_steps=4)
    return (lambda v: v @ a), torch.stack(run.basis), float(np.sum(run.diagonal))


def trace_run(block_size, **kw):
    matvec, basis, exact = _trace_problem()
    return deflated_hutchinson(matvec, 100, basis, exact, generator=torch.Generator().manual_seed(5),
                               dtype=torch.float64, block_size=block_size, **kw)


@pytest.mark.parametrize("block_size", [2, 7, 16])
def test_blocks_use_the_same_probes_and_give_the_same_estimate(block_size):
    sequential, blocked = trace_run(1, tol=0.0, max_probes=30), trace_run(block_size, tol=0.0, max_probes=30)
    assert blocked.probes == sequential.probes == 30  # the last block is cut at max_probes
    assert np.allclose(blocked.samples, sequential.samples, rtol=1e-12)
    assert blocked.trace == pytest.approx(sequential.trace, rel=1e-12)
    assert blocked.std_error == pytest.approx(sequential.std_error, rel=1e-12)


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_blocks_stop_at_the_first_block_that_meets_the_rule(block_size):
    tol = 0.02
    run = trace_run(block_size, tol=tol, max_probes=400)
    assert run.probes % block_size == 0 and run.probes >= 3 and run.std_error <= tol * abs(run.trace)
    same_probes = trace_run(1, tol=0.0, max_probes=run.probes)  # the sequential computation of those probes
    assert run.trace == pytest.approx(same_probes.trace, rel=1e-12)
    earlier = run.probes - block_size
    if earlier >= 3:  # the block before did not meet the rule
        before = trace_run(block_size, tol=0.0, max_probes=earlier)
        assert before.std_error > tol * abs(before.trace)
    sequential = trace_run(1, tol=tol, max_probes=400)
    assert sequential.probes <= run.probes


def test_blocked_trace_of_a_model_equals_the_probe_by_probe_one():
    model, (x, y) = make_mlp(), data((6,))
    one = estimate_hessian(model, x, y, trace_tol=0.0, trace_max_probes=12, top_eigenvalue=False)
    four = estimate_hessian(model, x, y, trace_tol=0.0, trace_max_probes=12, top_eigenvalue=False,
                            trace_block_size=4)
    assert (four.trace_probes, four.hvps) == (one.trace_probes, one.hvps) == (12, one.lanczos_steps + 12)
    assert four.trace == pytest.approx(one.trace, rel=1e-5)
    assert four.trace_std_error == pytest.approx(one.trace_std_error, rel=1e-5)
    blocked = estimate_hessian(model, x, y, trace_tol=0.05, trace_max_probes=500, top_eigenvalue=False,
                               trace_block_size=8)
    assert blocked.trace_probes % 8 == 0 and blocked.trace_std_error <= 0.05 * abs(blocked.trace)
    assert abs(blocked.trace - float(dense_hessian(model, x, y).trace())) <= 4 * blocked.trace_std_error
    with pytest.raises(ValueError, match="block_size"):
        estimate_hessian(model, x, y, trace_block_size=0, top_eigenvalue=False)


def test_trace_stops_at_the_requested_relative_standard_error():
    model, (x, y) = make_mlp(), data((6,))
    est = estimate_hessian(model, x, y, trace_tol=0.05, trace_max_probes=500, top_eigenvalue=False)
    assert est.trace_std_error <= 0.05 * abs(est.trace)
    assert abs(est.trace - float(dense_hessian(model, x, y).trace())) <= 4 * est.trace_std_error
    assert est.top_eigenvalue is None and est.eigen_iterations == 0


# ---- bookkeeping: seeds, modes, grads, chunks, API -------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_numbers(backend):
    model, (x, y) = make_mlp(), data((6,))
    a = estimate_hessian(model, x, y, backend=backend, seed=3, trace_max_probes=20)
    b = estimate_hessian(model, x, y, backend=backend, seed=3, trace_max_probes=20)
    c = estimate_hessian(model, x, y, backend=backend, seed=4, trace_max_probes=20)
    assert (a.top_eigenvalue, a.trace, a.hvps) == (b.top_eigenvalue, b.trace, b.hvps)
    assert a.trace != c.trace


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_state_is_restored(backend):
    model, (x, y) = give_running_stats(make_bn_cnn()), data((2, 6, 6))
    model.train()
    model[1].eval()  # a mixed state must survive too
    flags = [m.training for m in model.modules()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    grads = [p.grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}

    estimate_hessian(model, x, y, backend=backend, eigen_max_iter=5, trace_max_probes=3)

    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is g and torch.all(g == 0.5) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("retain", [True, False])
def test_chunked_loss_gives_the_same_hessian(retain):
    model, (x, y) = give_running_stats(make_bn_cnn()), data((2, 6, 6), n=50)
    whole = estimate_hessian(model, x, y, trace_max_probes=10)
    chunked = estimate_hessian(model, x, y, batch_size=16, retain_graphs=retain, trace_max_probes=10)
    assert chunked.top_eigenvalue == pytest.approx(whole.top_eigenvalue, rel=1e-4)
    assert chunked.trace == pytest.approx(whole.trace, rel=1e-4)  # same probes, same products up to rounding


def test_pyhessian_chunked_matches_whole_batch():
    model, (x, y) = make_mlp(), data((6,), n=50)
    whole = estimate_hessian(model, x, y, backend="pyhessian", trace=False, **PYHESSIAN_OPTS)
    chunked = estimate_hessian(model, x, y, backend="pyhessian", batch_size=16, trace=False, **PYHESSIAN_OPTS)
    assert chunked.top_eigenvalue == pytest.approx(whole.top_eigenvalue, rel=1e-4)
    assert chunked.eigen_iterations > 0


def test_a_failed_product_raises_its_own_exception(monkeypatch):
    """The estimator runs a model as the one member of its lock-step driver: what a product raises (an out of
    memory, say) still reaches the caller as itself."""
    model, (x, y) = make_mlp(), data((6,))

    def out_of_memory(self, v):
        raise torch.cuda.OutOfMemoryError("no room for this product")

    monkeypatch.setattr(HessianOperator, "__call__", out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="no room"):
        estimate_hessian(model, x, y)


def test_convenience_functions_fill_info_and_reject_bad_arguments():
    model, (x, y) = make_mlp(), data((6,))
    info: dict = {}
    top = hessian_top_eigenvalue(model, x, y, info=info)
    assert info["top_eigenvalue"] == top and info["eigen_iterations"] > 0 and info["trace"] is None
    info = {}
    tr = hessian_trace(model, x, y, info=info, trace_max_probes=10)
    assert info["trace"] == tr and info["trace_probes"] > 0 and info["top_eigenvalue"] is None
    with pytest.raises(ValueError, match="backend"):
        estimate_hessian(model, x, y, backend="power")
    with pytest.raises(ValueError):
        estimate_hessian(model, x, y[:-1])
