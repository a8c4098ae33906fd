"""Mode connectivity along a trained quadratic Bezier curve (Garipov et al. 2018; method.md §4).
(Over ~400 lines: the curve, its training, its evaluation and the metric are one method.)

Two trained models θ_a, θ_b are joined by

    γ(t) = (1 − t)² θ_a + 2 t (1 − t) θ_c + t² θ_b,      t ∈ [0, 1],

for every parameter tensor. The endpoints are fixed; only the middle point θ_c is trained, starting at the
midpoint (θ_a + θ_b)/2, by drawing one t ~ U(0, 1) per minibatch and minimising cross-entropy at γ(t) plus
0.5·wd·||γ(t)||². The curve's training error e(t) on a t-grid then gives

    ē = (e(0) + e(1)) / 2,   t* = argmax_t |ē − e(t)|,   mc = ē − e(t*)    (percentage points).

mc < 0: an error barrier between the models; mc ≈ 0: well connected; mc > 0: the curve beats the endpoints.

Design choices:
- t is an argument of every call (`curve(x, t)`, `curve.params_at(t)`), evaluated with
  torch.func.functional_call on a template module: there is no global "current t", so any number of curves
  can live in one process.
- BatchNorm running statistics are not on the curve. For evaluation each point γ(t) is materialised as an
  ordinary model and its statistics recomputed with one pass over the training data (train mode, cumulative
  average); without that even the endpoints do not reproduce the trained models. During curve training the
  template is in train mode, so BatchNorm uses batch statistics, as when the endpoints were trained.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from workloads import objective
from workloads.metrics.batchnorm import batchnorm_layers, recompute_batchnorm
from workloads.objective import evaluate_model
from workloads.settings import CURVE_LR_SCHEDULES, CurveConfig  # noqa: F401  (re-exported: declared there)

# Two deviations |ē − e(t)| closer than this (percentage points) are a tie, and the first t wins. Needed because
# the two endpoints always tie exactly in real arithmetic (ē − e(0) = −(ē − e(1))), but not always in floats.
_TIE_ATOL = 1e-9


# ----------------------------------------------------------------------------------------------------------
# The scalar metric


def mode_connectivity(ts, errors) -> tuple[float, float]:
    """mc = ē − e(t*) with ē = (e(0) + e(1))/2 and t* = argmax over all grid points of |ē − e(t)|.

    ts: (p,) strictly increasing t-grid with ts[0] = 0 and ts[-1] = 1; errors: (p,) e(t) in percent.
    Returns (mc, t*) in percentage points and t units. Ties for the maximum go to the first (smallest) t.

    Note: when no interior point deviates more than the endpoints, t* = 0 and mc = (e(1) − e(0))/2, whose
    sign depends on which model is called A. That is the definition (Yang et al. 2021), kept as is.
    """
    t = np.asarray(ts, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if t.ndim != 1 or e.shape != t.shape:
        raise ValueError(f"ts and errors must be 1-D of equal length, got shapes {t.shape} and {e.shape}")
    if t.size < 2:
        raise ValueError("the t-grid needs at least the two endpoints t=0 and t=1")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(e))):
        raise ValueError("ts and errors must be finite")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"ts must be strictly increasing, got {t.tolist()}")
    if abs(t[0]) > 1e-12 or abs(t[-1] - 1.0) > 1e-12:
        raise ValueError(
            f"ts must include both endpoints (first 0, last 1), got first {t[0]} and last {t[-1]}: "
            "mc is defined relative to the endpoint errors e(0) and e(1)"
        )
    mean_end = 0.5 * (e[0] + e[-1])
    dev = mean_end - e
    size = np.abs(dev)
    i = int(np.flatnonzero(size >= size.max() - _TIE_ATOL)[0])
    return float(dev[i]), float(t[i])


def curve_mode_connectivity(curves: dict, config: CurveConfig) -> tuple[float, float]:
    """(mc, t*) of an evaluated curve (``evaluate_curve``'s arrays): on the train error in percentage points, or,
    with ``config.mc_on == "loss"``, on the train loss in nats (the paper's choice for translation, App. D.4)."""
    return mode_connectivity(curves["t"], curves["train_loss" if config.mc_on == "loss" else "train_error"])


# ----------------------------------------------------------------------------------------------------------
# The curve


def bezier_coefficients(t: float) -> tuple[float, float, float]:
    """Weights of (θ_a, θ_c, θ_b) at t: ((1 − t)², 2t(1 − t), t²); they sum to 1."""
    return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t


def _check_t(t) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    return t


def _check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    """ValueError unless both models have the same parameter and buffer names and shapes."""
    for kind, get in (("parameters", nn.Module.named_parameters), ("buffers", nn.Module.named_buffers)):
        sa = {n: tuple(p.shape) for n, p in get(model_a)}
        sb = {n: tuple(p.shape) for n, p in get(model_b)}
        if sa.keys() != sb.keys():
            diff = sorted(set(sa) ^ set(sb))
            raise ValueError(f"endpoint models differ in their {kind} (not the same architecture): {diff[:5]}")
        bad = [f"{n} {sa[n]} vs {sb[n]}" for n in sa if sa[n] != sb[n]]
        if bad:
            raise ValueError(f"endpoint models have {kind} of different shapes: {bad[:5]}")


def _key(name: str) -> str:
    # Module attribute names cannot contain ".", so "layer1.0.conv1.weight" is stored as "layer1__0__conv1__weight".
    return name.replace(".", "__")


class BezierCurve(nn.Module):
    """Quadratic Bezier curve between two models of one architecture; only the middle point is trainable.

    model_a, model_b: the endpoints (copied; never modified). template: the architecture to evaluate
    (default: a copy of model_a). Its own parameters are never read: they are set to NaN so that any path
    bypassing the curve parameters shows up at once. Its buffers (e.g. BatchNorm running statistics) are
    used in eval-mode calls of `forward`; for meaningful eval-mode numbers use `point_model(t)` followed by
    `recompute_bn`, as `evaluate_curve` does.

    Storage: `end_a`, `end_b` hold the endpoint parameters as buffers (move with .to(), not trainable);
    `middle` is a ParameterDict with θ_c, initialised at (θ_a + θ_b)/2.
    """

    def __init__(self, model_a: nn.Module, model_b: nn.Module, *, template: nn.Module | None = None):
        super().__init__()
        _check_same_architecture(model_a, model_b)
        template = copy.deepcopy(model_a if template is None else template)
        _check_same_architecture(model_a, template)
        pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
        self._names = list(pa)
        self._keys = [_key(n) for n in self._names]
        if len(set(self._keys)) != len(self._keys):
            raise ValueError("parameter names collide after replacing '.' with '__'; rename the model's modules")
        self._requires_grad = {n: p.requires_grad for n, p in pa.items()}
        self.end_a = nn.Module()
        self.end_b = nn.Module()
        self.middle = nn.ParameterDict()
        with torch.no_grad():
            for name, key in zip(self._names, self._keys):
                a = pa[name].detach().clone()
                b = pb[name].detach().to(device=a.device, dtype=a.dtype).clone()
                self.end_a.register_buffer(key, a)
                self.end_b.register_buffer(key, b)
                self.middle[key] = nn.Parameter(0.5 * (a + b))
            template.requires_grad_(False)
            for p in template.parameters():
                p.fill_(math.nan)
        self.template = template

    @property
    def param_names(self) -> list[str]:
        """The template's parameter names, in order; the keys of `params_at`."""
        return list(self._names)

    def endpoint_params(self, which: str) -> dict[str, torch.Tensor]:
        """name -> tensor for "a", "b" (the fixed endpoints) or "middle" (the trainable θ_c)."""
        holder = {"a": self.end_a, "b": self.end_b, "middle": self.middle}[which]
        return {n: getattr(holder, k) for n, k in zip(self._names, self._keys)}

    def params_at(self, t: float) -> dict[str, torch.Tensor]:
        """γ(t) for every parameter, as name -> tensor, differentiable with respect to the middle point.

        Terms with a zero weight are skipped, so γ(0) is θ_a and γ(1) is θ_b bit for bit (and stay finite
        even if the middle point has diverged).
        """
        ca, cm, cb = bezier_coefficients(_check_t(t))
        out = {}
        for name, key in zip(self._names, self._keys):
            terms = [
                c * v
                for c, v in ((ca, getattr(self.end_a, key)), (cm, self.middle[key]), (cb, getattr(self.end_b, key)))
                if c != 0.0
            ]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            out[name] = total
        return out

    def call_with(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The template's forward pass on x with the given parameters (e.g. from `params_at`)."""
        return functional_call(self.template, params, (x,))

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Outputs of the model γ(t) on x: (batch, *input_shape) -> (batch, classes)."""
        return self.call_with(self.params_at(t), x)

    @torch.no_grad()
    def point_model(self, t: float) -> nn.Module:
        """An independent copy of the template holding γ(t) (detached), in eval mode.

        Buffers (BatchNorm running statistics) are the template's, i.e. not yet valid for t: call
        `recompute_bn` before evaluating a model with BatchNorm.
        """
        params = self.params_at(t)
        model = copy.deepcopy(self.template)
        for name, p in model.named_parameters():
            p.copy_(params[name])
            p.requires_grad_(self._requires_grad[name])
        return model.eval()


# ----------------------------------------------------------------------------------------------------------
# BatchNorm and evaluation


@torch.no_grad()
def recompute_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 128, seed: int = 0) -> bool:
    """Recompute BatchNorm running statistics as training sees the data; False if there is no BatchNorm.

    x: (n, *input_shape). One pass in a seeded random order, the last partial batch dropped as in
    training (see `recompute_batchnorm`).
    """
    if not batchnorm_layers(model):
        return False
    recompute_batchnorm(model, x, batch_size=batch_size, seed=seed, drop_last=True)
    return True


def loss_and_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy in nats, 0-1 error in percent) of `model` on (x, y), eval mode, no gradients."""
    result = evaluate_model(model, x, y, batch_size=batch_size)
    return result.loss, result.error_percent


def evaluate_curve(
    curve: BezierCurve,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    ts,
    *,
    bn_batch_size: int = 128,
    bn_seed: int = 0,
    eval_batch_size: int = 1000,
) -> dict[str, np.ndarray]:
    """Train and test loss/error of the curve at each t in ts.

    Each point is materialised (`point_model`) and, if the architecture has BatchNorm, its running statistics
    are recomputed on the training inputs (`recompute_bn`, same batch size and seed for every t).
    Returns float64 arrays of shape (len(ts),): t, train_error (percent), train_loss (nats), test_error, test_loss.
    """
    rows = {k: [] for k in ("t", "train_error", "train_loss", "test_error", "test_loss")}
    for t in np.asarray(ts, dtype=np.float64):
        model = curve.point_model(float(t))
        recompute_bn(model, train_x, bn_batch_size, bn_seed)
        train_loss, train_error = loss_and_error(model, train_x, train_y, eval_batch_size)
        test_loss, test_error = loss_and_error(model, test_x, test_y, eval_batch_size)
        for k, v in (("t", t), ("train_error", train_error), ("train_loss", train_loss),
                     ("test_error", test_error), ("test_loss", test_loss)):
            rows[k].append(v)
        del model
    return {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}


# ----------------------------------------------------------------------------------------------------------
# Training


def curve_lr_factor(epoch: int, epochs: int) -> float:
    """Multiplier of the base lr in the epoch numbered `epoch` of `epochs`, as in Garipov et al.'s curve training:
    1 while epoch/epochs <= 0.5, then linear down to 0.01 at epoch/epochs = 0.9, then 0.01.

    Garipov numbers the epochs 1..epochs (`CURVE_LR_SCHEDULES["garipov"]`); `train_curve` passes the number
    its config's lr_schedule gives."""
    frac = epoch / epochs
    if frac <= 0.5:
        return 1.0
    if frac < 0.9:  # strict, so that the boundary gives exactly 0.01 rather than 0.01 + rounding
        return 1.0 - 0.99 * (frac - 0.5) / 0.4
    return 0.01


class CurveDiverged(RuntimeError):
    """Curve training produced a non-finite loss; `history` holds the epochs completed before it."""

    def __init__(self, message: str, history: list[dict]):
        super().__init__(message)
        self.history = history

    def __reduce__(self):  # picklable (a worker's exception crosses to the driver): cls(*args) lacks history
        return (type(self), (self.args[0], self.history))


def train_curve(curve: BezierCurve, train_x: torch.Tensor, train_y: torch.Tensor, config: CurveConfig) -> list[dict]:
    """Train the middle point of `curve` in place; returns per-epoch history.

    train_x: (n, *input_shape), train_y: (n,) int64. The curve and data are moved to config.device.
    Each minibatch (drawn without replacement, last partial batch dropped) gets its own t ~ U(0, 1), and the
    loss is cross-entropy at γ(t) + 0.5·wd·||γ(t)||², minimised by SGD with momentum over the middle point only.
    The lr of each epoch is config.lr x curve_lr_factor, with the epochs counted as config.lr_schedule says.
    History entries: epoch (1-based), lr, train_loss (mean batch cross-entropy), train_error (percent, on the
    batches at their t, train mode), objective (mean loss including the penalty), seconds (cumulative).
    Raises CurveDiverged if an epoch's loss is not finite (checked once per epoch to avoid a device sync per
    step), ValueError if batch_size exceeds the training set.
    """
    device = torch.device(config.device)
    n = train_x.shape[0]
    if config.batch_size > n:
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the training set ({n} examples); it is not shrunk because "
            "the batch size is part of the experiment"
        )
    curve.to(device)
    x, y = train_x.to(device), train_y.to(device)
    optimizer = torch.optim.SGD(curve.middle.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)  # CPU: permutations and t draws, no global RNG use
    steps = n // config.batch_size
    history: list[dict] = []
    start_time = time.perf_counter()
    curve.train()
    first = CURVE_LR_SCHEDULES[config.lr_schedule]
    per_example = objective.predictions(y[:1])  # predictions per example (1, or a sequence's targets)
    for epoch in range(config.epochs):
        lr = config.lr * curve_lr_factor(first + epoch, config.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(n, generator=generator).to(device)
        ce_sum = torch.zeros((), dtype=torch.float64, device=device)
        obj_sum = torch.zeros((), dtype=torch.float64, device=device)
        wrong = torch.zeros((), dtype=torch.int64, device=device)
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            t = float(torch.rand((), generator=generator, dtype=torch.float64))
            params = curve.params_at(t)
            logits = curve.call_with(params, x[idx])
            ce = objective.mean_loss(logits, y[idx])
            penalty = sum(p.pow(2).sum() for p in params.values())
            loss = ce + 0.5 * config.weight_decay * penalty
            # At t = 0 exactly (possible, if rare) γ(t) does not involve the middle point: its gradient is zero
            # and the graph has nothing to differentiate, so there is no step to take.
            if loss.requires_grad:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            ce_sum += ce.detach()
            obj_sum += loss.detach()
            wrong += objective.predictions(y[idx]) - objective.correct(logits.detach(), y[idx])
        mean_ce, mean_obj = float(ce_sum) / steps, float(obj_sum) / steps
        if not (math.isfinite(mean_ce) and math.isfinite(mean_obj)):
            raise CurveDiverged(f"curve training diverged in epoch {epoch + 1}: mean loss {mean_ce}", history)
        history.append(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": mean_ce,
                "train_error": 100.0 * float(wrong) / (steps * config.batch_size * per_example),
                "objective": mean_obj,
                "seconds": time.perf_counter() - start_time,
            }
        )
    return history


# ----------------------------------------------------------------------------------------------------------
# End to end


@dataclass
class CurveResult:
    """One connected pair. Arrays have shape (points,), or (0,) when status is "diverged"."""

    ts: np.ndarray
    train_error: np.ndarray  # percent
    train_loss: np.ndarray  # nats
    test_error: np.ndarray  # percent
    test_loss: np.ndarray  # nats
    mode_connectivity: float | None  # percentage points; None if diverged
    t_star: float | None
    history: list[dict] = field(default_factory=list)
    status: str = "ok"  # "ok" | "diverged"
    error: str | None = None
    seconds: float = 0.0
    config: CurveConfig | None = None


def connect_models(
    model_a: nn.Module,
    model_b: nn.Module,
    train_x,
    train_y: torch.Tensor | None = None,
    test_x: torch.Tensor | None = None,
    test_y: torch.Tensor | None = None,
    config: CurveConfig | None = None,
) -> CurveResult:
    """Train a Bezier curve between two models and measure mode connectivity on its training error.

    Call as connect_models(a, b, train_x, train_y, test_x, test_y, config) with tensors, or as
    connect_models(a, b, data, config) with a workloads.data.Dataset (anything with train_x, train_y, test_x,
    test_y). The models are not modified. A curve whose training loss becomes non-finite gives status
    "diverged" with the message in `error`, empty arrays and mc None, instead of an exception.
    """
    if not isinstance(train_x, torch.Tensor):  # the Dataset form
        data = train_x
        if isinstance(train_y, CurveConfig) and config is None:
            config, train_y = train_y, None
        if train_y is not None or test_x is not None or test_y is not None:
            raise TypeError("pass either (train_x, train_y, test_x, test_y, config) tensors or (data, config)")
        train_x, train_y, test_x, test_y = data.train_x, data.train_y, data.test_x, data.test_y
    elif train_y is None or test_x is None or test_y is None:
        raise TypeError("train_x, train_y, test_x and test_y are all required in the tensor form")
    config = CurveConfig() if config is None else config
    start = time.perf_counter()
    curve = BezierCurve(model_a, model_b).to(torch.device(config.device))
    try:
        history = train_curve(curve, train_x, train_y, config)
    except CurveDiverged as exc:
        empty = np.zeros(0, dtype=np.float64)
        return CurveResult(
            ts=empty, train_error=empty, train_loss=empty, test_error=empty, test_loss=empty,
            mode_connectivity=None, t_star=None, history=exc.history, status="diverged", error=str(exc),
            seconds=time.perf_counter() - start, config=config,
        )
    device = torch.device(config.device)
    curves = evaluate_curve(
        curve, train_x.to(device), train_y.to(device), test_x.to(device), test_y.to(device), config.ts(),
        bn_batch_size=config.bn_batch_size, bn_seed=config.seed, eval_batch_size=config.eval_batch_size,
    )
    mc, t_star = curve_mode_connectivity(curves, config)
    return CurveResult(
        ts=curves["t"], train_error=curves["train_error"], train_loss=curves["train_loss"],
        test_error=curves["test_error"], test_loss=curves["test_loss"], mode_connectivity=mc, t_star=t_star,
        history=history, status="ok", error=None, seconds=time.perf_counter() - start, config=config,
    )
