"""Hessian metrics of the training loss: top eigenvalue λ_max and trace (method.md §3).
(Over ~400 lines: one estimator, for one model or a cohort's members, with two backends, its stopping rules and
their measured accuracy.)

What is measured
    H = ∇²_θ L(θ), L = mean cross-entropy over the given points, θ = all parameters with requires_grad,
    model in eval mode (BatchNorm uses its running statistics), no weight-decay term. The model's train/eval
    flags, its .grad fields and its BatchNorm buffers are the same afterwards as before.

BatchNorm decides the metric
    A train-mode Hessian (batch statistics) can differ from the eval-mode one by two orders of magnitude
    (165x in this project's measurements), so the mode is a setting, not an accident. Default: eval mode with
    the model's own running statistics. With ``recompute_bn_on=x_train`` the running statistics are first
    recomputed on those inputs (cumulative average, see `recompute_batchnorm`), the Hessian is measured with
    them, and the model's original statistics are put back; call `recompute_batchnorm` yourself to keep them.

One estimator for M >= 1 members
    `lanczos_members` runs the "lanczos" backend for every member in lock-step, all members' products in one
    call: a model is one member with its module's HessianOperator, a cohort (cohort_hessian.py) M members of
    one batched operator. A model is not made a one-member CohortNet: its module's own products need no layers
    re-expressed (grouped kernels or torch.func) and can chunk the loss (batch_size), which the cohort's cannot.

Backends
    "lanczos" (default). Hessian-vector products (HVPs) through one cached double-backward graph: the
        gradient is built once with create_graph=True and every HVP is one more backward through it.
        The graph is already near the CPU floor per product, so the gains come from needing fewer products:
        * λ_max: Lanczos with full reorthogonalisation gives the largest ALGEBRAIC eigenvalue. It stops on an
          accuracy, not on a stall: the Ritz residual r bounds |λ − θ| for some eigenvalue λ, and r²/gap is
          the standard sharper estimate once the top Ritz value has separated; the estimate min(r, r²/gap)
          must fall below eigen_tol·|θ|, and θ must have moved by ≤ eigen_tol·|θ| in the last step. The second
          condition costs about one product; it guards the early steps, where the Ritz gap is not yet the true
          gap and r²/gap understated the error 2-5x on a small-gap MLP (a 10x looser move test let 1 of 40
          seeds stop at 2x the tolerance; this rule: worst of 40 at 0.5x).
        * trace: the Krylov basis Q that Lanczos built is reused. tr(H) = tr(QᵀHQ) + tr(PHP), P = I − QQᵀ.
          The first term is exact (sum of the Lanczos diagonal, no extra products); the second is estimated
          by Hutchinson with Rademacher probes projected by P. Hessians of trained networks have outlier
          eigenvalues that carry much of ||H||_F² and hence of the Hutchinson variance 2(||H||_F² − Σ H_ii²);
          deflating them first cut the per-probe variance 3x (small MLP without strong outliers) to ~50x
          (trained ResNet18, k=4) in benchmarks/hessian.py. The standard error comes from the variance formula
          (see `deflated_hutchinson`); probing stops when it is ≤ trace_tol·|trace|. Probes can be multiplied
          in blocks (trace_block_size, one batched backward per block, the rule checked per block); the
          default 1 is the probe-by-probe computation, which was the faster one on CPUs.
    "pyhessian". The PyHessian 0.1 package (Yao et al.), the reference the authors used: power iteration
        that stops when the Rayleigh quotient changes by < tol relative (so it finds the eigenvalue of largest
        MAGNITUDE, and a slow stall looks like convergence), and plain Hutchinson that stops when the running
        mean changes by < tol relative (without abs() on the denominator, so a negative running mean stops at
        once). Kept as published apart from bookkeeping: HVPs are counted, global RNG state is forked and
        seeded, .grad fields and modes are restored.

Accuracy of the defaults (eigen_tol=1e-3, trace_tol=1e-2; see benchmarks/hessian.py and tests/workloads/test_hessian.py)
    λ_max: stops at an estimated relative error ≤ 1e-3. Measured: worst of 40 seeds 5e-4 on a small-gap MLP
    (λ2/λ1 = 0.94; median 1e-4), ≤ 3e-5 on ResNet18 k=4 and k=8. Do not loosen eigen_tol to 1e-2 on small
    gaps: Lanczos can settle on λ2 before λ1 shows up (7% error seen). (PyHessian at the authors' 1e-3 change
    tolerance was 0.8% off on that MLP; it needed 1e-4 and ~4x the products to be within 1e-3.)
    trace: one standard error ≤ 1% of the trace, or what TRACE_MAX_PROBES probes reach (1.0-1.6% in the
    benchmark), returned as trace_std_error. It is slightly conservative (rms z-score 0.75 over 30 seeds).

Memory
    The Lanczos basis holds one float vector per step (steps × #params × 4 bytes for float32): about 45 MB per
    step for ResNet18 at k=64. batch_size=None keeps the whole double-backward graph (memory ∝ samples);
    a batch_size smaller than the sample count recomputes per-chunk graphs for every product instead (memory
    ∝ batch_size, about twice the time per product), unless retain_graphs=True.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from workloads import objective
from workloads.cohort_net import batchnorm_layers
from workloads.metrics.batchnorm import recompute_batchnorm
from workloads.models import model_device

# ---- defaults, in one place ------------------------------------------------------------------------------
EIGEN_TOL = 1e-3  # relative error estimate of λ_max at which Lanczos stops (power iteration: relative change)
EIGEN_MAX_ITER = 100  # cap on HVPs for λ_max (Lanczos steps / power iterations); the authors' cap
TRACE_TOL = 1e-2  # relative standard error of the trace at which probing stops ("lanczos")
PYHESSIAN_TRACE_TOL = 1e-3  # "pyhessian": relative change of the running mean; the authors' setting
TRACE_MAX_PROBES = 100  # cap on Hutchinson probes (HVPs); the authors' cap
TRACE_PROBE_BLOCK = 1  # Hutchinson probes multiplied together (`deflated_hutchinson`). 1, measured: on a CPU
#                       thread a product over 1000 points is already matrix-matrix work (the points are the other
#                       dimension); on the demo's MLP blocks of 4-16 were 0.76-1.12x as fast per probe at every
#                       width, before the extra probes a per-block stopping check costs (benchmarks/hessian_probes.py;
#                       docs/benchmarks.md, "Hutchinson trace probes in blocks")
TRACE_MIN_PROBES = 3  # fewest probes before the standard error is trusted (it comes from mean ||Az||², see
#                       `deflated_hutchinson`, which is steady after a few probes)
DEFLATION_STEPS = 20  # fewest Lanczos steps when the trace is wanted: enough to capture the ~#classes
#                       outlier eigenvalues of a classifier's Hessian, after which probes are cheap
BN_BATCH_SIZE = 256  # chunk size for recomputing BatchNorm statistics (large enough for stable batch stats)
BACKENDS = ("lanczos", "pyhessian")
# A Lanczos residual below this fraction of the largest |Ritz value| means the Krylov space is invariant
# (float32 HVPs carry ~1e-6 relative noise, so smaller "residuals" are rounding, not directions).
_BREAKDOWN_RTOL = 1e-5


@dataclass(frozen=True)
class HessianEstimate:
    """λ_max and trace of the loss Hessian, with what they cost and how accurate they are.

    top_eigenvalue: largest algebraic eigenvalue ("lanczos") / eigenvalue of largest |λ| ("pyhessian");
        None if not requested.
    trace: estimate of tr(H); None if not requested.
    eigen_iterations: HVPs spent until λ_max met its stopping rule (Lanczos steps / power iterations).
    trace_probes: Hutchinson probes (one HVP each) for the trace. "lanczos" also reuses its Lanczos steps.
    hvps: all Hessian-vector products used, both quantities together.
    eigen_error_estimate: "lanczos": absolute error estimate min(r, r²/gap) of λ_max (floored at 10 ulp);
        "pyhessian": None (power iteration knows only its last change, which is not an accuracy).
    trace_std_error: standard error of the trace estimate ("lanczos": from the Hutchinson variance formula,
        see `deflated_hutchinson`; "pyhessian": sample std of its probes / √probes).
    samples: number of points in the loss; batch_size: chunk used for it (None: all at once).
    bn_recomputed: whether BatchNorm statistics were recomputed before measuring.
    """

    top_eigenvalue: float | None
    trace: float | None
    eigen_iterations: int
    trace_probes: int
    backend: str
    samples: int
    eigen_error_estimate: float | None
    trace_std_error: float | None
    seconds: float
    hvps: int = 0
    lanczos_steps: int = 0
    batch_size: int | None = None
    bn_recomputed: bool = False
    settings: dict = field(default_factory=dict)

    def as_info(self) -> dict:
        """The fields as a plain dict (what the `info=` argument of the convenience functions receives)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ---- the model side: modes, buffers, loss ----------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every submodule's own training flag restored afterwards (mixed modes survive)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def _batchnorm_recomputed_on(model: nn.Module, inputs: torch.Tensor | None, batch_size: int) -> Iterator[bool]:
    """Inside: BatchNorm statistics recomputed on `inputs` (if given). Afterwards: the original buffers back."""
    if inputs is None or not batchnorm_layers(model):
        yield False
        return
    saved = [{k: b.clone() for k, b in bn.named_buffers(recurse=False)} for bn in batchnorm_layers(model)]
    try:
        recompute_batchnorm(model, inputs, batch_size=batch_size)
        yield True
    finally:
        with torch.no_grad():
            for bn, buffers in zip(batchnorm_layers(model), saved):
                for k, b in bn.named_buffers(recurse=False):
                    b.copy_(buffers[k])


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")
    return params


def _chunks(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int | None) -> list[tuple]:
    """[(x_c, y_c, weight_c)] with weight_c = n_c / n, so Σ_c weight_c · mean-loss_c = mean loss."""
    n = len(inputs)
    size = n if batch_size is None else batch_size
    return [(inputs[s : s + size], targets[s : s + size], min(size, n - s) / n) for s in range(0, n, size)]


# ---- Hessian-vector products -----------------------------------------------------------------------------


class HessianOperator:
    """v (n,) -> H v (n,): the Hessian of the mean cross-entropy over (inputs, targets) w.r.t. `params`.

    n = total number of elements of `params`; vectors are flat, in `params` order, with their dtype and device.
    Call inside `_eval_mode` (the operator does not set modes). With retain_graph the gradient graph is
    built once (create_graph=True) and each product is one backward through it; otherwise every product
    rebuilds each chunk's graph, so memory is bounded by one chunk. `count` = products computed so far.
    """

    def __init__(self, model, params, inputs, targets, *, batch_size=None, retain_graph=True):
        self.model = model
        self.params = list(params)
        self.numels = [p.numel() for p in self.params]
        self.dim = sum(self.numels)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.chunks = _chunks(inputs.to(self.device), targets.to(self.device), batch_size)
        self.count = 0
        # One graph for all chunks: gradients of the weighted chunk losses summed with their graphs.
        self._grads = self._gradient(self.chunks) if retain_graph else None

    def _gradient(self, chunks) -> list[torch.Tensor | None]:
        """∇L with create_graph=True, summed over chunks; None where a parameter has no second-order path."""
        total = None
        for x, y, weight in chunks:
            loss = objective.mean_loss(self.model(x), y) * weight
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            total = grads if total is None else [_add(a, b) for a, b in zip(total, grads)]
        # A gradient that does not depend on θ (no grad_fn) has zero Hessian rows: leave it out of products.
        return [g if g is not None and g.requires_grad else None for g in total]

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """v (dim,) -> H v; a block V (b, dim) -> (b, dim), row i = H V[i] (counts b products)."""
        self.count += len(v) if v.dim() == 2 else 1
        rows = (v if v.dim() == 2 else v.unsqueeze(0)).to(self.dtype)
        if self._grads is not None:
            out = hessian_products(self._grads, self.params, self.numels, rows, retain=True)
        else:  # one chunk's graph alive at a time
            out = sum(hessian_products(self._gradient([chunk]), self.params, self.numels, rows, retain=False)
                      for chunk in self.chunks)
        return out if v.dim() == 2 else out[0]


def hessian_products(grads, params, numels, rows: torch.Tensor, *, retain: bool) -> torch.Tensor:
    """One backward through a create_graph gradient: the Hessian applied to each row of `rows`.

    grads: ∇L per parameter (None: no second-order path, so a zero row block). rows: (b, *stack, dim), each
    row cut into per-parameter pieces of `numels` in `params` order; *stack are the parameters' leading dimensions
    that a row spans: () for one module's parameters, (M,) for a cohort's stacked ones (M members' vectors at
    once). A block of b > 1 rows is one batched backward (autograd's is_grads_batched, vmapped over the rows);
    b = 1 is the plain backward. Returns H applied to each row, shaped as `rows`. Shared by HessianOperator and
    the cohort's operator (cohort_hessian.py), so single-model and cohort products are the same computation.
    """
    batched = len(rows) > 1
    lead = rows.shape[:1] if batched else ()
    pieces = [piece.reshape(*lead, *p.shape) for piece, p in zip(rows.split(numels, dim=-1), params)]
    used = [i for i, g in enumerate(grads) if g is not None]
    out = [torch.zeros_like(piece) for piece in pieces]
    if used:
        hv = torch.autograd.grad([grads[i] for i in used], params, grad_outputs=[pieces[i] for i in used],
                                 retain_graph=retain, allow_unused=True, is_grads_batched=batched)
        out = [h if h is not None else z for h, z in zip(hv, out)]
    return torch.cat([o.reshape(*rows.shape[:-1], -1) for o in out], dim=-1)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


# ---- Lanczos ---------------------------------------------------------------------------------------------


@dataclass
class LanczosResult:
    """Outcome of `lanczos`. basis: orthonormal q_1..q_m (each (n,)); diagonal: α_j = q_jᵀ H q_j (so
    tr(QᵀHQ) = Σ α_j); eigenvalue: largest Ritz value; error_estimate: its absolute error estimate
    min(r, r²/gap); converged_at: first step meeting the tolerance (None: never); steps = products used."""

    eigenvalue: float
    error_estimate: float
    steps: int
    converged_at: int | None
    basis: list[torch.Tensor]
    diagonal: list[float]
    off_diagonal: list[float]


def _orthogonalise(w: torch.Tensor, basis: list[torch.Tensor] | torch.Tensor, passes: int = 2) -> torch.Tensor:
    """w (n,) minus its projection on the orthonormal `basis` (a list of (n,) or an (m, n) matrix).

    Two passes ("twice is enough") keep float32 orthogonality at rounding level, which is what makes the
    Ritz values and tr(QᵀHQ) trustworthy. A matrix basis projects with two matrix-vector products per pass
    (used for the trace probes, where the basis is fixed); a list is used while Lanczos is growing it.
    """
    if len(basis) == 0:
        return w
    for _ in range(passes):
        if isinstance(basis, torch.Tensor):
            w = w - basis.T @ (basis @ w)
        else:
            for q in basis:
                w = w - torch.dot(q, w) * q
    return w


def _top_ritz(alphas: list[float], betas: list[float], residual_norm: float) -> tuple[float, float]:
    """(θ_1, error estimate) for the tridiagonal T with diagonal `alphas`, off-diagonal `betas`.

    r = residual_norm · |last component of θ_1's eigenvector of T| is ||H y − θ_1 y|| for the Ritz vector y,
    so some eigenvalue lies within r of θ_1; with the Ritz gap g = θ_1 − θ_2 the error is ~ r²/g.
    """
    m = len(alphas)
    t = np.diag(np.asarray(alphas, dtype=np.float64))
    if m > 1:
        off = np.asarray(betas[: m - 1], dtype=np.float64)
        t += np.diag(off, 1) + np.diag(off, -1)
    values, vectors = np.linalg.eigh(t)
    theta = float(values[-1])
    r = abs(residual_norm * float(vectors[-1, -1]))
    second = float(values[-2]) if m > 1 else -math.inf
    gap = theta - second
    estimate = min(r, r * r / gap) if gap > 0 else r
    return theta, estimate


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    *,
    tol: float = EIGEN_TOL,
    max_steps: int = EIGEN_MAX_ITER,
    min_steps: int = 1,
    generator: torch.Generator | None = None,
) -> LanczosResult:
    """Lanczos with full reorthogonalisation for the largest algebraic eigenvalue of a symmetric operator.

    matvec: (n,) -> (n,); start: (n,) nonzero starting vector. Stops at the first step ≥ min_steps where
    the estimate min(r, r²/gap) ≤ tol·|θ| and θ changed by ≤ tol·|θ| in that step, or at max_steps, or when
    the basis spans the whole space. If the Krylov space becomes invariant early (exact θ), and more steps
    are wanted (min_steps, for trace deflation), it continues from a fresh random vector orthogonal to the
    basis (drawn from `generator`), which decouples T into blocks exactly as it should.
    """
    n = start.numel()
    max_steps = min(max_steps, n)
    min_steps = min(max(min_steps, 1), max_steps)
    q = start / start.norm()
    basis: list[torch.Tensor] = []
    alphas: list[float] = []
    betas: list[float] = []
    theta_prev, converged_at = None, None
    theta, estimate = math.nan, math.inf
    for step in range(1, max_steps + 1):
        basis.append(q)
        w = matvec(q)
        alphas.append(float(torch.dot(q, w)))
        w = _orthogonalise(w, basis)
        beta = float(w.norm())
        theta, estimate = _top_ritz(alphas, betas, beta)
        scale = max(abs(theta), 1e-30)
        invariant = beta <= _BREAKDOWN_RTOL * max(max(abs(a) for a in alphas), abs(theta), 1e-30)
        steady = theta_prev is not None and abs(theta - theta_prev) <= tol * scale
        if converged_at is None and (invariant or (estimate <= tol * scale and steady)):
            converged_at = step
        theta_prev = theta
        if step >= max_steps or (converged_at is not None and step >= min_steps):
            break
        if invariant:
            # Krylov space exhausted: restart orthogonally (T gets a zero off-diagonal entry, i.e. a new block).
            fresh = torch.randn(n, generator=generator, dtype=torch.float64).to(start.device, start.dtype)
            w = _orthogonalise(fresh, basis)
            betas.append(0.0)
            q = w / w.norm()
        else:
            betas.append(beta)
            q = w / beta
    # Below ~10 ulp the estimate is about rounding in the products and dot products, not about Lanczos.
    estimate = max(estimate, 10 * torch.finfo(start.dtype).eps * abs(theta))
    return LanczosResult(theta, estimate, len(basis), converged_at, basis, alphas, betas)


# ---- trace -----------------------------------------------------------------------------------------------


@dataclass
class TraceResult:
    """Outcome of `deflated_hutchinson`: trace estimate, its standard error, probes (= products) used, and
    the probe values zᵀHz (each an unbiased sample of trace − exact_part)."""

    trace: float
    std_error: float
    probes: int
    samples: list[float]


def _rademacher(n: int, generator: torch.Generator, dtype: torch.dtype, device) -> torch.Tensor:
    """(n,) of ±1, drawn on the CPU so that a seed gives the same probes on every device."""
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int8)
    return (signs.to(dtype) * 2 - 1).to(device)


def deflated_hutchinson(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    basis: list[torch.Tensor] | torch.Tensor,
    exact_part: float,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    tol: float = TRACE_TOL,
    max_probes: int = TRACE_MAX_PROBES,
    min_probes: int = TRACE_MIN_PROBES,
    block_size: int = TRACE_PROBE_BLOCK,
) -> TraceResult:
    """tr(H) = exact_part + tr(A), A = PHP, P = I − QQᵀ, Q = the orthonormal `basis`, by Hutchinson on A.

    matvec: a block (b, dim) -> (b, dim), row i = H row i, in `dtype` on `device` (HessianOperator and the
    cohort's operator take blocks; b = 1 is a single product); basis: orthonormal (dim,) vectors, as a list or
    an (m, dim) matrix (may be empty: plain Hutchinson); exact_part must be tr(QᵀHQ) (Σ of the Lanczos diagonal).
    Each probe r is Rademacher (dim,); z = Pr gives rᵀAr = zᵀHz, an unbiased sample of tr(A) given Q.

    Standard error. The sample variance of a handful of quadratic forms is itself very noisy (stopping on it
    after 4 probes once reported 0.6% for a 6% error). Instead the same product gives Az = P(Hz), with
    E||Az||² = ||A||_F², while Var(rᵀAr) = 2(||A||_F² − Σ A_ii²) ≤ 2||A||_F² for Rademacher r. So
    SE = sqrt(2·mean||Az||² / probes): far steadier, and slightly conservative (it drops Σ A_ii², 9-13% of
    ||A||_F² on the benchmark MLP). Stops when probes ≥ min_probes and SE ≤ tol·|trace|,
    or at max_probes.

    Blocks. Probes are drawn one at a time from `generator`, in the same order for every block_size (a seed
    gives the same probes), and multiplied block_size at a time (the last block cut at max_probes). The rule
    is checked after each block, at b, 2b, ... probes: usually up to block_size − 1 probes more than checking
    after every probe would use (more only where the rule held at some probe count and no longer at the
    block's end). On the same probes the estimate and SE are those of block_size 1 up to the float rounding
    of batched products; block_size 1 is the probe-by-probe computation bit for bit.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    if len(basis) >= dim:  # Q spans everything: the trace is exact
        return TraceResult(exact_part, 0.0, 0, [])
    if isinstance(basis, list) and basis:
        basis = torch.stack(basis)  # (m, n): projections become two matrix-vector products
    samples: list[float] = []
    frobenius: list[float] = []  # ||A z||², each an unbiased sample of ||A||_F²
    trace, stderr = exact_part, math.inf
    while len(samples) < max_probes:
        b = min(block_size, max_probes - len(samples))
        # Projections and dot products stay per probe: matrix-vector work on the (m, dim) basis, small next to
        # a product, and computed per probe they keep block_size 1 bit for bit the probe-by-probe computation.
        z = torch.stack([_orthogonalise(_rademacher(dim, generator, dtype, device), basis) for _ in range(b)])
        hz = matvec(z)
        for zi, hzi in zip(z, hz):
            samples.append(float(torch.dot(zi, hzi)))
            frobenius.append(float(_orthogonalise(hzi, basis).pow(2).sum()))
        trace = exact_part + float(np.mean(samples))
        stderr = math.sqrt(2.0 * float(np.mean(frobenius)) / len(samples))
        if len(samples) >= min_probes and stderr <= tol * abs(trace):
            break
    return TraceResult(trace, stderr, len(samples), samples)


# ---- the estimator: Lanczos, then deflated Hutchinson, for each of M >= 1 members ----------------------


class _Lockstep:
    """Members' threads ask for products; the last live member to ask computes them all and wakes the rest."""

    def __init__(self, products: Callable[[dict], dict], members: list[int]):
        self.products = products
        self.live = set(members)
        self.pending: dict[int, torch.Tensor] = {}
        self.results: dict[int, torch.Tensor] = {}
        self.failure: BaseException | None = None
        self.cond = threading.Condition()

    def matvec(self, member: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def product(v: torch.Tensor) -> torch.Tensor:
            with self.cond:
                self.pending[member] = v
                self._compute_if_all_asked()
                while member not in self.results and self.failure is None:
                    self.cond.wait()
                if member not in self.results:
                    raise RuntimeError("the members' Hessian-vector product failed") from self.failure
                return self.results.pop(member)
        return product

    def done(self, member: int) -> None:
        with self.cond:
            self.live.discard(member)
            self._compute_if_all_asked()

    def _compute_if_all_asked(self) -> None:  # called holding the lock
        if not self.pending or len(self.pending) < len(self.live) or self.failure is not None:
            return
        try:
            self.results.update(self.products(self.pending))
        except BaseException as err:  # every waiting member must wake up and fail
            self.failure = err
        finally:
            self.pending = {}
            self.cond.notify_all()


def _nothing_yet() -> dict:
    """The HessianEstimate fields a backend fills, as they stand before it has computed anything."""
    return dict(top_eigenvalue=None, trace=None, eigen_error_estimate=None, trace_std_error=None,
                eigen_iterations=0, trace_probes=0)


def _one_member(matvec, dim: int, dtype, device, settings: dict, want_eigen: bool, want_trace: bool) -> dict:
    """λ_max by `lanczos` and tr(H) by `deflated_hutchinson` on its basis, from a generator seeded with
    settings["seed"]: the start vector, any restart vectors and the probes are drawn from it in this order."""
    generator = torch.Generator().manual_seed(settings["seed"])
    start = torch.randn(dim, generator=generator, dtype=torch.float64).to(device, dtype)
    run = lanczos(
        matvec,
        start,
        tol=settings["eigen_tol"] if want_eigen else math.inf,
        max_steps=max(settings["eigen_max_iter"], settings["deflation_steps"] if want_trace else 0),
        min_steps=settings["deflation_steps"] if want_trace else 1,
        generator=generator,
    )
    out = dict(_nothing_yet(), lanczos_steps=run.steps)
    if want_eigen:
        out.update(top_eigenvalue=run.eigenvalue, eigen_error_estimate=run.error_estimate,
                   eigen_iterations=run.converged_at or run.steps)
    if want_trace:
        basis = torch.stack(run.basis)
        run.basis.clear()  # one copy of the basis in memory, not two
        result = deflated_hutchinson(
            matvec, dim, basis, float(np.sum(run.diagonal)), generator=generator, dtype=dtype, device=device,
            tol=settings["trace_tol"], max_probes=settings["trace_max_probes"],
            min_probes=settings["trace_min_probes"], block_size=settings["trace_block_size"])
        out.update(trace=result.trace, trace_std_error=result.std_error, trace_probes=result.probes)
    return out


def lanczos_members(
    products: Callable[[dict[int, torch.Tensor]], dict[int, torch.Tensor]],
    members: list[int],
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    settings: dict,
    *,
    want_eigen: bool = True,
    want_trace: bool = True,
) -> dict[int, dict]:
    """The "lanczos" backend for M >= 1 members: {member: HessianEstimate fields (hvps left to the caller)}.

    products: {member: v (dim,) or a block (b, dim)} -> the same shapes with that member's Hessian applied (a
    module's HessianOperator for one member, CohortHessianOperator for a cohort's). settings: estimate_hessian's
    keyword arguments (eigen_tol, eigen_max_iter, trace_*, deflation_steps, seed). Each member runs `lanczos`,
    then `deflated_hutchinson`, in a thread of its own, with a generator of its own seeded alike (the start
    vector and probes of a single model with that seed); its products wait until every member still running has
    asked, then all are computed in one call (members that stopped ask for nothing). One member is the same
    code, each product computed as soon as asked. An exception is raised here once all members have finished.
    """
    lockstep = _Lockstep(products, members)
    outs: dict[int, dict] = {}
    failures: dict[int, BaseException] = {}

    def work(member: int) -> None:
        try:
            outs[member] = _one_member(lockstep.matvec(member), dim, dtype, device, settings, want_eigen, want_trace)
        except BaseException as err:
            failures[member] = err
        finally:
            lockstep.done(member)

    # The last member runs in the calling thread: one member (a single model) starts no thread at all, and
    # keeps the caller's thread-local state (grad mode, CUDA device, signal handling).
    threads = [threading.Thread(target=work, args=(i,), name=f"hessian-member-{i}") for i in members[:-1]]
    for t in threads:
        t.start()
    if members:  # none: nothing to measure (a cohort whose members all diverged)
        work(members[-1])
    for t in threads:
        t.join()
    if failures:  # a failed product failed every member waiting on it: raise its own exception (an OOM, say)
        raise lockstep.failure or failures[min(failures)]
    return outs


def _lanczos_backend(model, inputs, targets, settings, want_eigen, want_trace) -> dict:
    retain = settings["retain_graphs"]
    if retain is None:
        retain = settings["batch_size"] is None or settings["batch_size"] >= len(inputs)
    op = HessianOperator(model, _trainable(model), inputs, targets, batch_size=settings["batch_size"],
                         retain_graph=retain)
    out = lanczos_members(lambda asked: {0: op(asked[0])}, [0], op.dim, op.dtype, op.device, settings,
                          want_eigen=want_eigen, want_trace=want_trace)[0]
    return dict(out, hvps=op.count)


@contextlib.contextmanager
def _counting_pyhessian_products(ph_module) -> Iterator[list[int]]:
    """Count PyHessian's cached-graph HVPs by wrapping its module-level function (bookkeeping only)."""
    counter = [0]
    original = ph_module.hessian_vector_product

    def counted(*args, **kwargs):
        counter[0] += 1
        return original(*args, **kwargs)

    ph_module.hessian_vector_product = counted
    try:
        yield counter
    finally:
        ph_module.hessian_vector_product = original


@contextlib.contextmanager
def _grads_set_aside(params: list[torch.Tensor]) -> Iterator[None]:
    """PyHessian stores a create_graph gradient in .grad (a param <-> grad reference cycle and a stale
    input to its own sum); start from None and put the caller's .grad back afterwards, breaking the cycle."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def _pyhessian_backend(model, inputs, targets, settings, want_eigen, want_trace) -> dict:
    # lazy: only this backend needs the package. (`import pyhessian.hessian as m` would give the class that
    # pyhessian/__init__.py rebinds to that name, not the module whose function we count.)
    ph_module = importlib.import_module("pyhessian.hessian")

    device = model_device(model)
    cuda = device.type == "cuda"
    params = _trainable(model)
    inputs, targets = inputs.to(device), targets.to(device)
    chunked = settings["batch_size"] is not None and settings["batch_size"] < len(inputs)
    criterion = objective.mean_loss  # what PyHessian calls as criterion(outputs, targets)
    out = _nothing_yet()
    rng_devices = [device] if cuda else []
    with contextlib.ExitStack() as stack:
        stack.enter_context(_grads_set_aside(params))
        counter = stack.enter_context(_counting_pyhessian_products(ph_module))
        stack.enter_context(torch.random.fork_rng(devices=rng_devices))
        if cuda:
            stack.enter_context(torch.cuda.device(device))  # its .cuda() calls go to the model's GPU
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        torch.manual_seed(settings["seed"])
        if chunked:
            loader = [(x, y) for x, y, _ in _chunks(inputs, targets, settings["batch_size"])]
            engine = ph_module.hessian(model, criterion, dataloader=loader, cuda=cuda)
            original = engine.dataloader_hv_product

            def counted(v):  # chunked mode rebuilds the graph per product: count those instead
                counter[0] += 1
                return original(v)

            engine.dataloader_hv_product = counted
        else:
            engine = ph_module.hessian(model, criterion, data=(inputs, targets), cuda=cuda)
        if want_eigen:
            before = counter[0]
            values, _ = engine.eigenvalues(maxIter=settings["eigen_max_iter"], tol=settings["eigen_tol"], top_n=1)
            out.update(top_eigenvalue=float(values[0]), eigen_iterations=counter[0] - before)
        if want_trace:
            samples = engine.trace(maxIter=settings["trace_max_probes"], tol=settings["trace_tol"])
            stderr = float(np.std(samples, ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.inf
            out.update(trace=float(np.mean(samples)), trace_std_error=stderr, trace_probes=len(samples))
        out["hvps"] = counter[0]
        del engine  # drops the cached graph before the grads are restored
    return out


_BACKENDS = {"lanczos": _lanczos_backend, "pyhessian": _pyhessian_backend}


# ---- public entry points ---------------------------------------------------------------------------------


def estimate_hessian(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    backend: str = "lanczos",
    eigen_tol: float = EIGEN_TOL,
    eigen_max_iter: int = EIGEN_MAX_ITER,
    trace_tol: float | None = None,
    trace_max_probes: int = TRACE_MAX_PROBES,
    trace_min_probes: int = TRACE_MIN_PROBES,
    trace_block_size: int = TRACE_PROBE_BLOCK,
    deflation_steps: int = DEFLATION_STEPS,
    seed: int = 0,
    batch_size: int | None = None,
    retain_graphs: bool | None = None,
    recompute_bn_on: torch.Tensor | None = None,
    bn_batch_size: int = BN_BATCH_SIZE,
    top_eigenvalue: bool = True,
    trace: bool = True,
) -> HessianEstimate:
    """λ_max and trace of the Hessian of the mean cross-entropy of `model` on (inputs, targets).

    inputs: (N, *input_shape); targets: (N,) int64 class indices. Moved to the model's device.
    backend: "lanczos" (default; Lanczos + deflated Hutchinson, accuracy-based stopping) or "pyhessian"
        (PyHessian 0.1 power iteration + Hutchinson; eigen_tol/trace_tol are then its relative-change
        tolerances and deflation_steps/trace_min_probes/retain_graphs are unused).
    eigen_tol, eigen_max_iter: λ_max relative accuracy target and HVP cap (see module docstring).
    trace_tol, trace_max_probes, trace_min_probes: trace relative standard-error target (default TRACE_TOL;
        "pyhessian": relative change of the running mean, default PYHESSIAN_TRACE_TOL), probe cap and floor.
    trace_block_size: "lanczos": probes multiplied together, stopping rule checked per block (see
        `deflated_hutchinson`); "pyhessian" ignores it.
    deflation_steps: fewest Lanczos steps when the trace is wanted (its basis deflates the outliers).
    seed: seeds every random vector (deterministic for a given seed, device-independent draws for "lanczos").
    batch_size: chunk size for the loss (None = all N at once); the HVP of the mean loss is the size-weighted
        sum of chunk HVPs, so the value does not depend on it. retain_graphs: keep every chunk's graph for all
        products (default: only when there is a single chunk).
    recompute_bn_on: (M, *input_shape) training inputs; if given, BatchNorm running statistics are recomputed
        on them (chunks of bn_batch_size) for the measurement and restored afterwards.
    top_eigenvalue, trace: which quantities to compute (the other field is None).
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown Hessian backend {backend!r}; choose one of {BACKENDS}")
    if not (top_eigenvalue or trace):
        raise ValueError("nothing to compute: top_eigenvalue and trace are both False")
    if len(inputs) == 0 or len(inputs) != len(targets):
        raise ValueError(f"need as many targets as inputs, and at least one: got {len(inputs)} and {len(targets)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    if trace_tol is None:
        trace_tol = PYHESSIAN_TRACE_TOL if backend == "pyhessian" else TRACE_TOL
    settings = dict(eigen_tol=eigen_tol, eigen_max_iter=eigen_max_iter, trace_tol=trace_tol,
                    trace_max_probes=trace_max_probes, trace_min_probes=trace_min_probes,
                    trace_block_size=trace_block_size, deflation_steps=deflation_steps, seed=seed,
                    batch_size=batch_size, retain_graphs=retain_graphs)
    started = time.perf_counter()
    with _batchnorm_recomputed_on(model, recompute_bn_on, bn_batch_size) as recomputed, _eval_mode(model):
        out = _BACKENDS[backend](model, inputs, targets, settings, top_eigenvalue, trace)
    return HessianEstimate(**out, backend=backend, samples=len(inputs), seconds=time.perf_counter() - started,
                           batch_size=batch_size, bn_recomputed=recomputed, settings=settings)


def hessian_top_eigenvalue(model, inputs, targets, *, info: dict | None = None, **opts) -> float:
    """λ_max alone (see `estimate_hessian` for opts). If `info` is a dict it is filled with the full
    `HessianEstimate` fields (eigen_iterations, hvps, eigen_error_estimate, seconds, ...)."""
    est = estimate_hessian(model, inputs, targets, top_eigenvalue=True, trace=False, **opts)
    if info is not None:
        info.update(est.as_info())
    return est.top_eigenvalue


def hessian_trace(model, inputs, targets, *, info: dict | None = None, **opts) -> float:
    """tr(H) alone (see `estimate_hessian` for opts); `info`, if a dict, receives the estimate's fields."""
    est = estimate_hessian(model, inputs, targets, top_eigenvalue=False, trace=True, **opts)
    if info is not None:
        info.update(est.as_info())
    return est.trace
