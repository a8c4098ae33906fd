"""Hessian metrics of every member of a cohort, the members' Hessian-vector products computed as one.

The estimator is hessian.py's "lanczos" backend, `lanczos_members`, the same code a single model runs as
one member: each member runs ``lanczos`` and then ``deflated_hutchinson`` with its own generator seeded like
the single-model call (so the same start vector and probes, in the same blocks), in lock-step with the others.
Only the operator is the cohort's: the loss is the sum over members of each member's mean cross-entropy on the
points (eval mode, BatchNorm running statistics, no weight decay), whose Hessian is block-diagonal with member
m's Hessian as block m, so one double-backward through the cohort's cached gradient graph gives H_m v_m for
every member at once (a block of trace probes per member when trace_block_size > 1). Results equal the
single-model ones up to the float rounding of the products, which can move a stop by a step: the tolerances of
hessian.py apply (tests/workloads/test_cohort_metrics.py). An MLP cohort (FusedNet) with one class label per
point gets its products written out instead of through autograd (fused_hessian.py, ``uses_fused_products``).
"""

from __future__ import annotations

import time

import torch

from workloads import objective
from workloads.cohort_net import CohortNet, FusedNet
from workloads.cohort_train import check_member_targets
from workloads.metrics.hessian import (
    DEFLATION_STEPS,
    EIGEN_MAX_ITER,
    EIGEN_TOL,
    TRACE_MAX_PROBES,
    TRACE_MIN_PROBES,
    TRACE_PROBE_BLOCK,
    TRACE_TOL,
    HessianEstimate,
    hessian_products,
    lanczos_members,
)
from workloads.metrics.fused_hessian import FusedHessianOperator


class CohortHessianOperator:
    """{member: v (dim,)} -> {member: H_m v}, all in one backward pass through the cohort's gradient graph.

    dim = one member's number of trainable scalars; vectors are flat in the member model's parameters()
    order, as hessian.py's HessianOperator. inputs (k, *input_shape) are shared; targets (M, k, ...).
    """

    def __init__(self, net: CohortNet, inputs: torch.Tensor, targets: torch.Tensor):
        self.params = [p for p in net.params().values() if p.requires_grad]
        self.members = net.members
        self.numels = [p[0].numel() for p in self.params]
        self.dim = sum(self.numels)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        logits = net(net.inputs_shared(inputs.to(self.device)))  # (M, k, ..., K)
        losses, _ = objective.member_losses(logits, targets.to(self.device))
        grads = torch.autograd.grad(losses.sum(), self.params, create_graph=True, allow_unused=True)
        self.grads = [g if g is not None and g.requires_grad else None for g in grads]
        self.counts = [0] * self.members

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
        flat = hessian_products(self.grads, self.params, self.numels, stacked, retain=True)  # (width, M, dim)
        # Copies, not views into ``flat``: a view of member m starts m * dim elements in, and the vectorised
        # reductions Lanczos then runs on it (dot products, norms) round differently at another alignment, so
        # a member's estimate would depend on its place in the cohort.
        return {member: (flat[: rows[member], member] if v.dim() == 2 else flat[0, member]).clone()
                for member, v in vectors.items()}


def uses_fused_products(net: CohortNet, targets: torch.Tensor) -> bool:
    """Whether ``estimate_hessian_cohort`` takes this cohort's products by FusedHessianOperator (an MLP cohort,
    targets (M, k) class labels) rather than by autograd's double-backward (CohortHessianOperator)."""
    return isinstance(net, FusedNet) and targets.dim() == 2 and not targets.is_floating_point()


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

    inputs (k, *input_shape) shared by all members; targets (M, k, ...): each member's (a token model's
    (M, k, T); targets all share: y.expand(M, *y.shape)), as the training engine takes them. members: which to measure
    (default all; e.g. leave out diverged ones); the others get None. The cohort's modes are restored. The
    products are FusedHessianOperator's where ``uses_fused_products``, else CohortHessianOperator's.
    """
    if not (top_eigenvalue or trace):
        raise ValueError("nothing to compute: top_eigenvalue and trace are both False")
    k = len(inputs)
    if k == 0:
        raise ValueError("need at least one input point")
    check_member_targets(targets, net.members, k, "targets")
    m = net.members
    members = list(range(m)) if members is None else sorted(set(members))
    settings = dict(eigen_tol=eigen_tol, eigen_max_iter=eigen_max_iter, trace_tol=trace_tol,
                    trace_max_probes=trace_max_probes, trace_min_probes=trace_min_probes,
                    trace_block_size=trace_block_size, deflation_steps=deflation_steps, seed=seed,
                    batch_size=None, retain_graphs=None)
    started = time.perf_counter()
    was_training = net.training
    net.eval()
    try:
        operator = FusedHessianOperator if uses_fused_products(net, targets) else CohortHessianOperator
        op = operator(net, inputs, targets)
        outs = lanczos_members(op, members, op.dim, op.dtype, op.device, settings, want_eigen=top_eigenvalue,
                               want_trace=trace)
    finally:
        net.train(was_training)
    seconds = time.perf_counter() - started
    return [HessianEstimate(**outs[i], hvps=op.counts[i], backend="lanczos", samples=k, seconds=seconds,
                            settings=settings) if i in outs else None for i in range(m)]
