"""Hessian metrics of every member of a cohort, the members' Hessian-vector products computed as one.

Definitions and stopping rules are those of workloads/metrics/hessian.py's "lanczos" backend, run by its own
functions: each member runs ``lanczos`` and then ``deflated_hutchinson`` unchanged, with its own generator
seeded like the single-model call (so the same start vector and probes, in the same blocks). Only the
operator differs: the loss is the sum over members of each member's mean cross-entropy on the points (eval
mode, BatchNorm running statistics, no weight decay), whose Hessian is block-diagonal with member m's Hessian
as block m, so one double-backward through the cohort's cached gradient graph gives H_m v_m for every member at
once (a block of trace probes per member when trace_block_size > 1).

To take all products at once the members' Lanczos runs go in lock-step: each runs in its own thread, and
a product is computed when every member still running has asked for one (members that stopped contribute
nothing). Results equal the single-model ones up to the float rounding of the products, which can move a
stop by a step: the tolerances of hessian.py apply (tests/test_cohort_metrics.py).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import torch

from workloads import objective
from workloads.cohort_net import CohortNet
from workloads.metrics.hessian import (
    DEFLATION_STEPS,
    EIGEN_MAX_ITER,
    EIGEN_TOL,
    TRACE_MAX_PROBES,
    TRACE_MIN_PROBES,
    TRACE_PROBE_BLOCK,
    TRACE_TOL,
    HessianEstimate,
    deflated_hutchinson,
    hessian_products,
    lanczos,
)


class CohortHessianOperator:
    """{member: v (dim,)} -> {member: H_m v}, all in one backward pass through the cohort's gradient graph.

    dim = one member's number of trainable scalars; vectors are flat in the member model's parameters()
    order, as hessian.py's HessianOperator. inputs (k, *input_shape) are shared; targets (M, k).
    """

    def __init__(self, net: CohortNet, inputs: torch.Tensor, targets: torch.Tensor):
        self.params = [p for p in net.params().values() if p.requires_grad]
        self.members = net.members
        self.numels = [p[0].numel() for p in self.params]
        self.dim = sum(self.numels)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        logits = net(net.inputs_shared(inputs.to(self.device)))  # (M, k, ..., K)
        m = logits.shape[0]
        losses, _ = objective.member_losses(logits, targets.to(self.device))
        grads = torch.autograd.grad(losses.sum(), self.params, create_graph=True, allow_unused=True)
        self.grads = [g if g is not None and g.requires_grad else None for g in grads]
        self.counts = [0] * m

    def __call__(self, vectors: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """{member: v (dim,) or a block V (b, dim)} -> the same shapes, H_m applied (row by row for a block).
        Members may ask with different block sizes (one in Lanczos, one probing the trace): all go through
        one batched backward of the largest size, shorter requests padded with zero vectors."""
        rows = {member: len(v) if v.dim() == 2 else 1 for member, v in vectors.items()}
        width = max(rows.values())
        stacked = torch.zeros(width, self.members, self.dim, dtype=self.dtype, device=self.device)
        for member, v in vectors.items():
            stacked[: rows[member], member] = v.to(self.dtype)
            self.counts[member] += rows[member]
        batched = width > 1  # a single row takes the plain backward, as HessianOperator's single product
        lead = (width,) if batched else ()
        pieces = [piece.reshape(*lead, *p.shape)
                  for piece, p in zip(stacked.split(self.numels, dim=2), self.params)]
        out = hessian_products(self.grads, self.params, pieces, retain=True, batched=batched)
        flat = torch.cat([o.reshape(width, self.members, -1) for o in out], dim=2)  # (width, M, dim)
        return {member: flat[: rows[member], member] if v.dim() == 2 else flat[0, member]
                for member, v in vectors.items()}


class _Lockstep:
    """Members' threads ask for products; the last live member to ask computes them all and wakes the rest."""

    def __init__(self, operator: CohortHessianOperator, members: list[int]):
        self.operator = operator
        self.live = set(members)
        self.pending: dict[int, torch.Tensor] = {}
        self.results: dict[int, torch.Tensor] = {}
        self.failure: BaseException | None = None
        self.cond = threading.Condition()

    def matvec(self, member: int):
        def product(v: torch.Tensor) -> torch.Tensor:
            with self.cond:
                self.pending[member] = v
                self._compute_if_all_asked()
                while member not in self.results and self.failure is None:
                    self.cond.wait()
                if member not in self.results:
                    raise RuntimeError("the cohort's Hessian-vector product failed") from self.failure
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
            self.results.update(self.operator(self.pending))
        except BaseException as err:  # every waiting member must wake up and fail
            self.failure = err
        finally:
            self.pending = {}
            self.cond.notify_all()


def _one_member(matvec, op: CohortHessianOperator, opts: dict) -> dict:
    """hessian.py's _lanczos_backend for one member with a given matvec (same calls, same arguments)."""
    generator = torch.Generator().manual_seed(opts["seed"])
    start = torch.randn(op.dim, generator=generator, dtype=torch.float64).to(op.device, op.dtype)
    want_eigen, want_trace = opts["want_eigen"], opts["want_trace"]
    run = lanczos(matvec, start, tol=opts["eigen_tol"] if want_eigen else math.inf,
                  max_steps=max(opts["eigen_max_iter"], opts["deflation_steps"] if want_trace else 0),
                  min_steps=opts["deflation_steps"] if want_trace else 1, generator=generator)
    out = {"lanczos_steps": run.steps, "eigen_iterations": 0, "trace_probes": 0}
    if want_eigen:
        out.update(top_eigenvalue=run.eigenvalue, eigen_error_estimate=run.error_estimate,
                   eigen_iterations=run.converged_at or run.steps)
    if want_trace:
        basis = torch.stack(run.basis)
        run.basis.clear()
        result = deflated_hutchinson(matvec, op.dim, basis, float(np.sum(run.diagonal)), generator=generator,
                                     dtype=op.dtype, device=op.device, tol=opts["trace_tol"],
                                     max_probes=opts["trace_max_probes"], min_probes=opts["trace_min_probes"],
                                     block_size=opts["trace_block_size"])
        out.update(trace=result.trace, trace_std_error=result.std_error, trace_probes=result.probes)
    return out


def estimate_hessian_cohort(
    net: CohortNet,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    members: list[int] | None = None,
    eigen_tol: float = EIGEN_TOL,
    eigen_max_iter: int = EIGEN_MAX_ITER,
    trace_tol: float = TRACE_TOL,
    trace_max_probes: int = TRACE_MAX_PROBES,
    trace_min_probes: int = TRACE_MIN_PROBES,
    trace_block_size: int = TRACE_PROBE_BLOCK,
    deflation_steps: int = DEFLATION_STEPS,
    seed: int = 0,
    top_eigenvalue: bool = True,
    trace: bool = True,
) -> list[HessianEstimate | None]:
    """λ_max and trace of each member's Hessian, as ``estimate_hessian(member, inputs, targets_m, ...)``
    with backend "lanczos", batch_size None and no BatchNorm recompute (the only settings offered here).

    inputs (k, *input_shape) shared by all members; targets (M, k) or (k,). members: which to measure
    (default all; e.g. leave out diverged ones); the others get None. The cohort's modes are restored.
    """
    if not (top_eigenvalue or trace):
        raise ValueError("nothing to compute: top_eigenvalue and trace are both False")
    k = len(inputs)
    if k == 0 or targets.shape[-1] != k:
        raise ValueError(f"need as many targets as inputs, and at least one: got {k} and {targets.shape[-1]}")
    m = net.members
    targets = targets if targets.dim() == 2 else targets.unsqueeze(0).expand(m, k)
    members = list(range(m)) if members is None else sorted(set(members))
    opts = dict(eigen_tol=eigen_tol, eigen_max_iter=eigen_max_iter, trace_tol=trace_tol,
                trace_max_probes=trace_max_probes, trace_min_probes=trace_min_probes,
                trace_block_size=trace_block_size,
                deflation_steps=deflation_steps, seed=seed, batch_size=None, retain_graphs=None,
                want_eigen=top_eigenvalue, want_trace=trace)
    started = time.perf_counter()
    was_training = net.training
    net.eval()
    try:
        op = CohortHessianOperator(net, inputs, targets)
        lockstep = _Lockstep(op, members)
        outs: dict[int, dict] = {}
        failures: dict[int, BaseException] = {}

        def work(member: int) -> None:
            try:
                outs[member] = _one_member(lockstep.matvec(member), op, opts)
            except BaseException as err:
                failures[member] = err
            finally:
                lockstep.done(member)

        threads = [threading.Thread(target=work, args=(i,), name=f"cohort-hessian-{i}") for i in members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        net.train(was_training)
    if failures:
        member, err = min(failures.items())
        raise err
    seconds = time.perf_counter() - started
    settings = {key: v for key, v in opts.items() if key not in ("want_eigen", "want_trace")}
    results: list[HessianEstimate | None] = [None] * m
    for member, out in outs.items():
        results[member] = HessianEstimate(
            top_eigenvalue=out.get("top_eigenvalue"), trace=out.get("trace"),
            eigen_iterations=out["eigen_iterations"], trace_probes=out["trace_probes"], backend="lanczos",
            samples=k, eigen_error_estimate=out.get("eigen_error_estimate"),
            trace_std_error=out.get("trace_std_error"), seconds=seconds, hvps=op.counts[member],
            lanczos_steps=out["lanczos_steps"], batch_size=None, bn_recomputed=False, settings=settings)
    return results
