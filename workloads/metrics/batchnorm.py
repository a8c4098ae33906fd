"""BatchNorm running statistics, recomputed from data: shared by the Hessian and the curve metrics.

The Hessian is measured in eval mode, so it depends on the running statistics; a point γ(t) on a Bezier
curve has no running statistics of its own at all. Both recompute them the same way: one pass over the
data in train mode with momentum=None, which makes PyTorch keep the plain (cumulative) average of the
per-batch statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.models import model_device


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers (any dimension) that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


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

    batch_size: examples per pass step; each step's batch statistics weigh equally.
    seed: if given, the pass visits `inputs` in a seeded random order (data stored by class would otherwise
        give per-class batch statistics); if None, in the stored order.
    drop_last: drop the last partial batch (as training does), unless n < batch_size (then one batch of all n).
    Momenta and every submodule's train/eval flag are restored; parameters are untouched. Returns the model;
    a model without BatchNorm is returned unchanged.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return model
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("recomputing BatchNorm statistics needs at least one input")
    if batch_size < 2:
        raise ValueError(f"BatchNorm statistics need batch_size >= 2, got {batch_size}")
    size = min(batch_size, n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if seed is not None else torch.arange(n)
    stop = n - size + 1 if drop_last else n
    device = model_device(model)
    momenta = [m.momentum for m in layers]
    flags = [(m, m.training) for m in model.modules()]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average instead of an exponential one
        model.train()
        for start in range(0, stop, size):
            model(inputs[order[start : start + size].to(inputs.device)].to(device))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, flag in flags:
            m.training = flag
    return model
