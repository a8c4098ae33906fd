"""Linear CKA and mixup probes, checked against identities and an independent (Gram-form) reference."""

import numpy as np
import pytest
import torch
from torch import nn

from workloads.metrics.cka import (
    CKAUndefined,
    cka_or_reason,
    linear_cka,
    mixup_plan,
    mixup_probes,
    softmax_outputs,
)


def _rand(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gram_linear_cka(x, y) -> float:
    """The reference: linear CKA in Gram (HSIC) form, <HKH, HLH>_F / (||HKH||_F ||HLH||_F) with K = XXᵀ and
    L = YYᵀ (m × m), centred on the Gram matrices (H K H without forming H), so it shares no intermediate step
    with linear_cka's feature-space form. Clamped at 1 as linear_cka is."""
    x, y = (torch.as_tensor(a, dtype=torch.float64) for a in (x, y))

    def double_centre(k):
        return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()

    kc, lc = double_centre(x @ x.T), double_centre(y @ y.T)
    return min(float((kc * lc).sum() / (torch.linalg.matrix_norm(kc) * torch.linalg.matrix_norm(lc))), 1.0)


@pytest.mark.parametrize("m,d1,d2", [(50, 7, 4), (30, 10, 10), (8, 20, 3)])
def test_feature_form_equals_gram_form(m, d1, d2):
    x, y = _rand((m, d1), 0), _rand((m, d2), 1)
    y = y + 0.5 * x[:, :d2]  # some shared structure, so the value is not near 0
    assert linear_cka(x, y) == pytest.approx(gram_linear_cka(x, y), abs=1e-12)


def test_one_dimensional_cka_is_squared_pearson_correlation():
    # An independent closed form: for d1 = d2 = 1, linear CKA is corr(x, y)².
    x = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    y = np.array([2.0, 1.0, 7.0, 4.0, 9.0])
    expected = np.corrcoef(x, y)[0, 1] ** 2
    assert linear_cka(x[:, None], y[:, None]) == pytest.approx(expected, abs=1e-14)


def test_self_similarity_is_one_and_symmetric():
    x, y = _rand((40, 6), 2), _rand((40, 3), 3)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-14)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-14)


def test_invariant_to_orthogonal_maps_scaling_and_translation():
    x, y = _rand((60, 5), 4), _rand((60, 4), 5)
    y = y + x[:, :4]
    q, _ = torch.linalg.qr(_rand((5, 5), 6))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(base, abs=1e-12)


def test_not_invariant_to_general_invertible_maps():
    # Sanity check that the invariance test above can fail: an anisotropic map changes CKA.
    x, y = _rand((60, 5), 7), _rand((60, 4), 8)
    y = y + x[:, :4]
    a = torch.diag(torch.tensor([1.0, 30.0, 1.0, 0.1, 1.0], dtype=torch.float64))
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 1e-2


def test_feature_and_gram_forms_agree_on_random_and_softmax_like_inputs():
    # Both clamp at 1, so the range alone proves little; the two forms share no intermediate step.
    values = []
    for seed in range(20):
        x, y = _rand((25, 3), 100 + seed), _rand((25, 6), 200 + seed)
        for a, b in ((x, y), (torch.softmax(x, 1), torch.softmax(y, 1))):
            v = linear_cka(a, b)
            assert v == pytest.approx(gram_linear_cka(a, b), abs=1e-12)
            assert 0.0 <= v <= 1.0
            values.append(v)
    assert max(values) - min(values) > 0.15  # not one value over and over


def test_accepts_numpy_and_float32():
    x, y = _rand((20, 3), 9), _rand((20, 2), 10)
    v = linear_cka(x, y)
    assert linear_cka(x.numpy(), y.float()) == pytest.approx(v, abs=1e-6)


def test_constant_output_is_undefined_with_reason():
    x = _rand((30, 4), 11)
    # A collapsed model: every probe gets the same (float32) softmax vector.
    const = torch.softmax(torch.tensor([0.1, 2.0, -1.0, 0.3]), 0).repeat(30, 1)
    assert issubclass(CKAUndefined, ValueError)
    with pytest.raises(CKAUndefined, match="model A's outputs are constant"):
        linear_cka(const, x)
    with pytest.raises(CKAUndefined, match="model B's outputs are constant"):
        linear_cka(x, const)
    value, reason = cka_or_reason(x, const)
    assert value is None and reason == "undefined: model B's outputs are constant on the probes"
    value, reason = cka_or_reason(const, const)
    assert value is None and "model A's outputs and model B's outputs are constant" in reason
    value, reason = cka_or_reason(x, x)
    assert value == pytest.approx(1.0) and reason == "ok"


def test_nearly_constant_but_varying_output_is_defined():
    x = _rand((30, 4), 12)
    y = torch.full((30, 3), 0.25, dtype=torch.float32)
    y[0, 0] += 1e-6  # a real (if tiny) difference in float32 is not rounding noise
    value, reason = cka_or_reason(x, y)
    assert reason == "ok" and 0.0 <= value <= 1.0


def test_non_finite_output_is_undefined_not_nan():
    x = _rand((10, 3), 13)
    y = x.clone()
    y[2, 1] = float("nan")
    value, reason = cka_or_reason(x, y)
    assert value is None and "NaN" in reason


def test_shape_errors_are_not_undefined():
    with pytest.raises(ValueError, match="rows") as info:
        linear_cka(_rand((10, 3), 0), _rand((11, 3), 1))
    assert not isinstance(info.value, CKAUndefined)
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(_rand((10,), 0), _rand((10, 3), 1))
    with pytest.raises(ValueError, match="at least 2"):
        linear_cka(_rand((1, 3), 0), _rand((1, 3), 1))


# ---------------------------------------------------------------------------------------------- mixup


def test_mixup_probes_follow_the_plan_and_are_deterministic():
    x = torch.randn(37, 1, 12, generator=torch.Generator().manual_seed(0))
    p1 = mixup_probes(x, 64, seed=5)
    p2 = mixup_probes(x, 64, seed=5)
    p3 = mixup_probes(x, 64, seed=6)
    assert p1.shape == (64, 1, 12) and p1.dtype == x.dtype and p1.device == x.device
    assert torch.equal(p1, p2)
    assert not torch.allclose(p1, p3)
    a, b, lam = mixup_plan(37, 64, seed=5)
    assert a.min() >= 0 and a.max() < 37 and b.min() >= 0 and b.max() < 37
    # The two sources are drawn independently and uniformly: mostly distinct, every example used.
    a_many, b_many, _ = mixup_plan(37, 5000, seed=5)
    assert np.mean(a_many == b_many) < 0.1  # 1/37 expected
    assert set(a_many) == set(b_many) == set(range(37))
    assert abs(np.corrcoef(a_many, b_many)[0, 1]) < 0.1
    lam_t = torch.tensor(lam, dtype=torch.float32)[:, None, None]
    expected = lam_t * x[torch.tensor(a)] + (1 - lam_t) * x[torch.tensor(b)]
    torch.testing.assert_close(p1, expected, rtol=0, atol=1e-6)


def test_mixup_lambda_is_beta_16_16():
    _, _, lam = mixup_plan(10, 40_000, seed=1)
    assert np.all((lam > 0) & (lam < 1))
    # Beta(16, 16): mean 1/2, variance αβ/((α+β)²(α+β+1)) = 1/(4·33).
    assert lam.mean() == pytest.approx(0.5, abs=0.002)
    assert lam.std() == pytest.approx(np.sqrt(1 / (4 * 33)), abs=0.002)
    _, _, wide = mixup_plan(10, 40_000, seed=1, alpha=1.0)  # Beta(1,1) = uniform: std 1/sqrt(12)
    assert wide.std() == pytest.approx(np.sqrt(1 / 12), abs=0.005)


def test_mixup_argument_errors():
    x = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="probes"):
        mixup_probes(x, 0, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        mixup_probes(x, 3, seed=0, alpha=0.0)
    with pytest.raises(ValueError, match="training example"):
        mixup_probes(torch.zeros(0, 3), 3, seed=0)


def test_softmax_outputs_eval_mode_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    model(torch.randn(32, 6))  # give BatchNorm non-trivial running statistics
    probes = torch.randn(25, 6)
    out = softmax_outputs(model, probes, batch_size=7)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(probes).double(), dim=1)
    assert out.shape == (25, 3) and out.dtype == torch.float64
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.sum(1), torch.ones(25, dtype=torch.float64))
