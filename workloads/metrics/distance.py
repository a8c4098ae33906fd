"""L2 distance between two trained models in parameter space (method.md §4)."""

from __future__ import annotations

import torch
from torch import nn


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> parameter for the parameters that SGD updates (requires_grad); buffers are not weights."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _describe(names: set[str], limit: int = 5) -> str:
    shown = sorted(names)[:limit]
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more


@torch.no_grad()
def l2_distance(model_a: nn.Module, model_b: nn.Module) -> float:
    """||θ_a − θ_b||_2 over the trainable parameters of two models of the same architecture.

    Both models must have the same trainable parameter names with the same shapes (ValueError otherwise,
    naming what differs). Differences are accumulated in float64 on model_a's device, one parameter at a
    time, so no flattened copy of either model is made.
    """
    pa, pb = _trainable(model_a), _trainable(model_b)
    if pa.keys() != pb.keys():
        only_a, only_b = set(pa) - set(pb), set(pb) - set(pa)
        parts = []
        if only_a:
            parts.append(f"only in model A: {_describe(only_a)}")
        if only_b:
            parts.append(f"only in model B: {_describe(only_b)}")
        raise ValueError("models have different trainable parameters (not the same architecture?): " + "; ".join(parts))
    shape_diffs = [f"{n} {tuple(pa[n].shape)} vs {tuple(pb[n].shape)}" for n in pa if pa[n].shape != pb[n].shape]
    if shape_diffs:
        raise ValueError("models have parameters of different shapes: " + "; ".join(shape_diffs[:5]))
    if not pa:
        raise ValueError("models have no trainable parameters")
    total = torch.zeros((), dtype=torch.float64, device=next(iter(pa.values())).device)
    for name, a in pa.items():
        diff = a.to(torch.float64) - pb[name].to(device=a.device, dtype=torch.float64)
        total += diff.pow(2).sum()
    return float(total.sqrt())
