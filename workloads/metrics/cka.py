"""Linear CKA similarity between two models' outputs on shared mixup probes (method.md §4).

Kornblith et al. (2019) define linear CKA of two representations X (m × d1) and Y (m × d2) of the same m
inputs as

    CKA(X, Y) = <H X Xᵀ H, H Y Yᵀ H>_F / (||H X Xᵀ H||_F ||H Y Yᵀ H||_F),     H = I - 11ᵀ/m,

which, on column-centred X̃ = HX and Ỹ = HY, equals ||X̃ᵀỸ||²_F / (||X̃ᵀX̃||_F ||ỸᵀỸ||_F). The second
("feature-space") form costs O(m d²) instead of O(m²) memory and time, which matters because m is in the
hundreds or thousands while d is the number of classes. `linear_cka` uses it; the tests check it against
the Gram/HSIC form (tests/workloads/test_cka.py).

A model whose outputs are constant over the probes (e.g. a collapsed or diverged network) makes both forms 0/0.
That is reported as `CKAUndefined` with a reason, never as NaN, so a table can say why a value is missing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from workloads import objective
from workloads.models import model_device

# A centred matrix whose Frobenius norm is at most this fraction of the uncentred norm is treated as constant.
# Why relative and not == 0: the float64 column mean of m identical float32 values can differ from them in the
# last bit, so an exactly constant output leaves ~1e-16 relative residue; real variation in float32 outputs
# is at least ~1e-8 relative, far above the threshold.
_CONSTANT_RTOL = 1e-12

_DEFAULT_NAMES = ("model A's outputs", "model B's outputs")


class CKAUndefined(ValueError):
    """CKA is 0/0 (an input is constant over the rows) or the inputs are not finite; `reason` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _as_float64_matrix(a, name: str) -> torch.Tensor:
    """Any array-like (m × d) -> float64 torch tensor on its own device (numpy -> CPU). Shape errors are ValueError."""
    t = torch.as_tensor(a) if not isinstance(a, torch.Tensor) else a
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (examples × features) array, got shape {tuple(t.shape)}")
    return t.detach().to(torch.float64)


def _check_pair(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str]) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have one row per probe each: got {x.shape[0]} and {y.shape[0]} rows"
        )
    if x.shape[0] < 2:
        raise ValueError(f"CKA needs at least 2 rows (probes), got {x.shape[0]}")
    bad = [n for n, t in zip(names, (x, y)) if not bool(torch.isfinite(t).all())]
    if bad:
        raise CKAUndefined(f"undefined: {' and '.join(bad)} contain NaN or inf")


def _is_constant(raw: torch.Tensor, centred: torch.Tensor) -> bool:
    """True when the centred matrix is zero up to rounding, relative to the raw matrix's size."""
    raw_norm = float(torch.linalg.matrix_norm(raw))
    return float(torch.linalg.matrix_norm(centred)) <= _CONSTANT_RTOL * raw_norm


def _raise_if_constant(flags: tuple[bool, bool], names: tuple[str, str]) -> None:
    const = [n for n, f in zip(names, flags) if f]
    if const:
        # Names are plural nouns ("model A's outputs"), hence "are" for one or both.
        raise CKAUndefined(f"undefined: {' and '.join(const)} are constant on the probes")


def linear_cka(x, y, *, names: tuple[str, str] = _DEFAULT_NAMES) -> float:
    """Linear CKA in feature space: ||X̃ᵀỸ||²_F / (||X̃ᵀX̃||_F ||ỸᵀỸ||_F), X̃, Ỹ column-centred.

    x: (m × d1), y: (m × d2), torch tensors or numpy arrays; rows are the same m inputs in the same order.
    Computed in float64; cost O(m (d1² + d2² + d1 d2)). Returns a value in [0, 1].
    `names` (plural nouns) only label the inputs in error messages.
    Raises CKAUndefined when either input is constant over the rows (0/0) or not finite;
    ValueError on shape mismatch or fewer than 2 rows.
    """
    xt = _as_float64_matrix(x, names[0])
    yt = _as_float64_matrix(y, names[1]).to(xt.device)
    _check_pair(xt, yt, names)
    xc = xt - xt.mean(dim=0, keepdim=True)
    yc = yt - yt.mean(dim=0, keepdim=True)
    _raise_if_constant((_is_constant(xt, xc), _is_constant(yt, yc)), names)
    cross = torch.linalg.matrix_norm(xc.T @ yc) ** 2  # (d1 × d2)
    self_x = torch.linalg.matrix_norm(xc.T @ xc)  # (d1 × d1)
    self_y = torch.linalg.matrix_norm(yc.T @ yc)  # (d2 × d2)
    value = float(cross / (self_x * self_y))
    # Cauchy-Schwarz bounds the exact value by 1; rounding can overshoot by an ulp or two (e.g. CKA(X, X)).
    return min(value, 1.0)


def cka_or_reason(x, y, *, names: tuple[str, str] = _DEFAULT_NAMES) -> tuple[float | None, str]:
    """(linear_cka(x, y), "ok"), or (None, reason) when CKA is undefined. Never returns NaN.

    Shape errors still raise: they are bugs in the caller, not properties of the models.
    """
    try:
        return linear_cka(x, y, names=names), "ok"
    except CKAUndefined as exc:
        return None, exc.reason


def mixup_plan(n: int, num: int, seed: int, alpha: float = 16.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The random choices behind `mixup_probes`: (a, b, lam), each of length `num`.

    a, b: int64 indices in [0, n), drawn uniformly with replacement (a == b is allowed, as in batch mixup);
    lam: float64 ~ Beta(alpha, alpha). All from numpy's Generator(seed), because torch.distributions.Beta
    cannot take a torch.Generator: a private generator keeps the probes reproducible without touching
    any global RNG state.
    """
    if n < 1:
        raise ValueError(f"mixup needs at least one training example, got n={n}")
    if num < 1:
        raise ValueError(f"number of probes must be >= 1, got {num}")
    if not alpha > 0:
        raise ValueError(f"Beta parameter alpha must be > 0, got {alpha}")
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, n, size=num, dtype=np.int64)
    b = rng.integers(0, n, size=num, dtype=np.int64)
    lam = rng.beta(alpha, alpha, size=num)
    return a, b, lam


def mixup_probes(x: torch.Tensor, num: int, seed: int, alpha: float = 16.0) -> torch.Tensor:
    """Mixup probe inputs x̃_i = λ_i x[a_i] + (1 − λ_i) x[b_i], λ_i ~ Beta(alpha, alpha) (method.md §4).

    x: (n, *input_shape) training inputs; returns (num, *input_shape), same dtype and device as x.
    Labels are not needed: CKA compares the two models' outputs on the same inputs.
    Deterministic in (n, num, seed, alpha), see `mixup_plan`; pass the same seed for every pair of a cell
    so all pairs are compared on one probe set, and record the seed.
    """
    a, b, lam = mixup_plan(x.shape[0], num, seed, alpha)
    ia = torch.as_tensor(a, device=x.device)
    ib = torch.as_tensor(b, device=x.device)
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device).reshape(num, *([1] * (x.ndim - 1)))
    return lam_t * x[ia] + (1.0 - lam_t) * x[ib]


@torch.no_grad()
def softmax_outputs(model: nn.Module, probes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities of `model` on `probes`: (m, *input_shape) -> (m × outputs) float64, with outputs the
    classes (or, for a sequence model, positions × classes: workloads.objective.probabilities).

    Eval mode (BatchNorm uses running statistics), no gradients; the model's train/eval mode is restored.
    Probes are moved to the model's device batch by batch. Softmax is taken in float64 so that
    near-saturated outputs keep their small differences for CKA.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    device = model_device(model, probes.device)
    model.eval()
    try:
        chunks = [objective.probabilities(model(probes[i : i + batch_size].to(device)))
                  for i in range(0, probes.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)
