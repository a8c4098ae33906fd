"""L2 distance in parameter space, against a manual flatten of the trainable parameters."""

import pytest
import torch
from torch import nn

from workloads.metrics.distance import l2_distance


def _model(seed, width=8, depth=2):
    torch.manual_seed(seed)
    layers, d = [], 5
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.BatchNorm1d(width), nn.ReLU()]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, 3))


def _manual(a, b):
    va = torch.cat([p.detach().flatten().double() for p in a.parameters() if p.requires_grad])
    vb = torch.cat([p.detach().flatten().double() for p in b.parameters() if p.requires_grad])
    return float(torch.sqrt(((va - vb) ** 2).sum()))


def test_matches_manual_flatten():
    a, b = _model(0), _model(1)
    assert l2_distance(a, b) == pytest.approx(_manual(a, b), rel=1e-12)
    assert l2_distance(a, b) == pytest.approx(l2_distance(b, a), rel=1e-15)
    assert l2_distance(a, a) == 0.0


def test_known_value():
    a = nn.Linear(2, 1)
    b = nn.Linear(2, 1)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[0.0, 0.0]]))
        a.bias.fill_(0.0)
        b.weight.copy_(torch.tensor([[3.0, 0.0]]))
        b.bias.fill_(4.0)
    assert l2_distance(a, b) == pytest.approx(5.0)


def test_ignores_buffers_and_frozen_parameters():
    a, b = _model(0), _model(1)
    base = l2_distance(a, b)
    with torch.no_grad():
        b[1].running_mean.add_(100.0)  # BatchNorm statistics are not weights
    assert l2_distance(a, b) == base
    a[0].bias.requires_grad_(False)
    b[0].bias.requires_grad_(False)
    with torch.no_grad():
        b[0].bias.add_(100.0)
    assert l2_distance(a, b) == pytest.approx(_manual(a, b), rel=1e-12)
    assert l2_distance(a, b) < base + 1.0  # the +100 shift did not count


def test_mismatched_architectures_raise_clear_errors():
    with pytest.raises(ValueError, match="only in model B"):
        l2_distance(_model(0, depth=1), _model(0, depth=2))
    with pytest.raises(ValueError, match="different shapes"):
        l2_distance(_model(0, width=8), _model(0, width=9))
    a, b = _model(0), _model(0)
    a[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="only in model B: 0.weight"):
        l2_distance(a, b)
