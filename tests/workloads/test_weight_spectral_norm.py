"""The spectral norm of the weights (workloads/extra_metrics/weight_spectral_norm.py) against independent
references: an analytic case and numpy's SVD of each weight matrix of a real model."""

import numpy as np
import pytest
import torch
from torch import nn

from workloads.extra_metrics.weight_spectral_norm import METRIC, weight_spectral_norm
from workloads.metric_discovery import package_metrics
from workloads.models import seeded_model


def test_analytic_product_of_largest_singular_values():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
        model[2].weight.copy_(torch.tensor([[0.0, 2.0], [-5.0, 0.0]]))  # singular values 5 and 2
        model[0].bias.fill_(100.0)  # biases do not count
    assert weight_spectral_norm(model) == pytest.approx(15.0, rel=1e-12)


def test_matches_numpy_svd_on_a_real_model_with_convolutions():
    mlp = seeded_model("mlp", seed=3, width=16, num_classes=10, input_shape=(40,), depth=2)
    ref = np.prod([np.linalg.svd(m.weight.detach().double().numpy(), compute_uv=False)[0]
                   for m in mlp.modules() if isinstance(m, nn.Linear)])
    assert weight_spectral_norm(mlp) == pytest.approx(ref, rel=1e-10)

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    mats = [conv[0].weight.detach().double().numpy().reshape(4, -1), conv[3].weight.detach().double().numpy()]
    ref = np.prod([np.linalg.norm(m, 2) for m in mats])
    assert weight_spectral_norm(conv) == pytest.approx(ref, rel=1e-10)


def test_the_package_discovers_it_and_its_spec_is_complete():
    assert METRIC in package_metrics()
    assert METRIC.per == "model" and METRIC.aggregate == "log_of_mean" and not METRIC.required
    assert METRIC.panel is not None and METRIC.report is not None
