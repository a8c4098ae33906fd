"""BatchNorm running statistics, recomputed from data: shared by the Hessian and the curve metrics.

The Hessian is measured in eval mode, so it depends on the running statistics; a point γ(t) on a Bezier
curve has no running statistics of its own at all. Both recompute them the same way: one pass over the
data in train mode, every BatchNorm reset and then updated with factor 1/k at the k-th batch, which is the
plain (cumulative) average of the per-batch statistics (what PyTorch's momentum=None computes).
``recompute_batchnorm`` does it for one model, ``recompute_cohort_batchnorm`` for every member of a
CohortNet at once; both visit the data as ``pass_plan`` says.
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.cohort_net import CohortNet, batchnorm_layers
from workloads.models import model_device


def pass_plan(n: int, batch_size: int, seed: int | None, drop_last: bool) -> tuple[torch.Tensor, list[int], int]:
    """How a recompute pass visits n examples: (order (n,) on the CPU, batch starts, batch size).

    seed: a seeded random order if given (data stored by class would otherwise give per-class batch
    statistics), else the stored order. drop_last: drop the last partial batch (as training does), unless
    n < batch_size (then one batch of all n). ValueError for no data or batches too small for a variance.
    """
    if n == 0:
        raise ValueError("recomputing BatchNorm statistics needs at least one input")
    if batch_size < 2:
        raise ValueError(f"BatchNorm statistics need batch_size >= 2, got {batch_size}")
    size = min(batch_size, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(n)
    stop = n - size + 1 if drop_last else n
    return order, list(range(0, stop, size)), size


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    batch_size: int = 256,
    seed: int | None = None,
    drop_last: bool = False,
) -> nn.Module:
    """Replace every BatchNorm's running mean/var by their average over `inputs` (n, *input_shape). In place.

    batch_size: examples per pass step; each step's batch statistics weigh equally. seed, drop_last: see
    `pass_plan`. Momenta and every submodule's train/eval flag are restored; parameters are untouched.
    Returns the model; a model without BatchNorm is returned unchanged.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return model
    order, starts, size = pass_plan(int(inputs.shape[0]), batch_size, seed, drop_last)
    device = model_device(model)
    momenta = [m.momentum for m in layers]
    flags = [(m, m.training) for m in model.modules()]
    try:
        for m in layers:
            m.reset_running_stats()
        model.train()
        for k, start in enumerate(starts, 1):
            for m in layers:
                m.momentum = 1.0 / k  # the cumulative average: what momentum=None computes at the k-th batch
            model(inputs[order[start : start + size].to(inputs.device)].to(device))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, flag in flags:
            m.training = flag
    return model


@torch.no_grad()
def recompute_cohort_batchnorm(
    net: CohortNet,
    inputs: torch.Tensor,
    *,
    seeds: list[int | None],
    params: dict[str, torch.Tensor] | None = None,
    batch_size: int = 256,
    drop_last: bool = False,
) -> CohortNet:
    """`recompute_batchnorm` for every member of a CohortNet at once, member m visiting `inputs` (n, ...) (on
    the net's device) in the order of seeds[m]; `params` replace the net's parameters for the pass (e.g. the
    curve points). The net's momenta and train/eval mode are restored. Returns the net.
    """
    if not net.has_batchnorm:
        return net
    plans = [pass_plan(int(inputs.shape[0]), batch_size, seed, drop_last) for seed in seeds]
    _, starts, size = plans[0]
    order = torch.stack([plan[0] for plan in plans]).to(inputs.device)  # (M, n)
    shared = all(seed == seeds[0] for seed in seeds)
    previous = net.set_batchnorm_momentum(None)
    was_training = net.training
    try:
        net.reset_batchnorm()
        net.train()
        for k, start in enumerate(starts, 1):
            net.set_batchnorm_momentum(1.0 / k)
            index = order[:, start : start + size]
            net(net.inputs_shared(inputs[index[0]]) if shared else net.inputs(inputs, index), params)
    finally:
        net.restore_batchnorm_momentum(previous)
        net.train(was_training)
    return net
