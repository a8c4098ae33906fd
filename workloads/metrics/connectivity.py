"""Mode connectivity along trained quadratic Bezier curves (Garipov et al. 2018; method.md §4), for P >= 1
pairs of models at once. (Over ~400 lines: the curve, its training, its evaluation and the metric are one method.)

Two trained models θ_a, θ_b are joined by

    γ(t) = (1 − t)² θ_a + 2 t (1 − t) θ_c + t² θ_b,      t ∈ [0, 1],

for every parameter tensor. The endpoints are fixed; only the middle point θ_c is trained, starting at the
midpoint (θ_a + θ_b)/2, by drawing one t ~ U(0, 1) per minibatch and minimising cross-entropy at γ(t) plus
0.5·wd·||γ(t)||². The curve's training error e(t) on a t-grid then gives

    ē = (e(0) + e(1)) / 2,   t* = argmax_t |ē − e(t)|,   mc = ē − e(t*)    (percentage points).

mc < 0: an error barrier between the models; mc ≈ 0: well connected; mc > 0: the curve beats the endpoints.

Design choices:
- One engine for any number of pairs: the P curves are a CohortNet of P members (workloads/cohort_net.py)
  whose own parameters are NaN, every call passing the curve points γ_p(t_p), so any path that bypasses
  them shows up at once; endpoints and middle points are {name: (P, *shape)} tensors. `connect_models`
  connects one pair (P = 1), `connect_cohort` P pairs; a pair's result does not depend on the others.
- t is an argument of every call (`curve_points`): there is no global "current t".
- Each pair has its own CPU generator, seeded with its CurveConfig.seed, drawing per epoch one randperm(n)
  and then one t ~ U(0, 1) per step, so a pair's curve is reproducible alone or in any cohort. A step at
  t = 0 exactly does not involve θ_c: that pair takes no step. A pair whose epoch loss is not finite
  diverges (`CurveDiverged`) and is frozen while the others go on.
- BatchNorm running statistics are not on the curve. For evaluation they are recomputed at every point of
  every pair (workloads/metrics/batchnorm.py: one seeded pass over the training inputs, cumulative average,
  last partial batch dropped); without that even the endpoints do not reproduce the trained models. During
  curve training the net is in train mode, so BatchNorm uses batch statistics, as when the endpoints were
  trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from workloads import objective
from workloads.cohort_net import CohortNet, build_cohort_net, resolve_backend, stack_states
from workloads.cohort_fused import FusedCurveStep
from workloads.cohort_train import CohortSGD
from workloads.metrics.batchnorm import recompute_cohort_batchnorm
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
    """(mc, t*) of an evaluated curve (one pair of ``evaluate_curves``): on the train error in percentage points, or,
    with ``config.mc_on == "loss"``, on the train loss in nats (the paper's choice for translation, App. D.4)."""
    return mode_connectivity(curves["t"], curves["train_loss" if config.mc_on == "loss" else "train_error"])


# ----------------------------------------------------------------------------------------------------------
# The curves


def bezier_coefficients(t: float) -> tuple[float, float, float]:
    """Weights of (θ_a, θ_c, θ_b) at t: ((1 − t)², 2t(1 − t), t²); they sum to 1. ValueError outside [0, 1]."""
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    return (1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t


def curve_cohort(pairs: list[tuple[nn.Module, nn.Module]], device: str | torch.device,
                 backend: str) -> tuple[CohortNet, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """What connects `pairs` [(model_a, model_b), ...] of one architecture: (net, end_a, end_b) on `device`.

    end_a, end_b: {name: (P, *shape)} copies of the endpoints' parameters (the models are not modified; ValueError
    if they are not one architecture). net: a CohortNet of P members of the first model's architecture and
    parameter dtype, whose own parameters and running statistics `connect_cohort` never reads. backend: a
    cohort_net backend (connect_models and the sweep pass what resolve_backend("auto", ...) chose).
    """
    ends = stack_states([dict(m.named_parameters()) for m in [a for a, _ in pairs] + [b for _, b in pairs]])
    p, template = len(pairs), pairs[0][0]
    states = [a.state_dict() for a, _ in pairs]
    net = build_cohort_net(template, states, backend, device)
    net.module.to(next(iter(ends.values())).dtype)  # grouped BatchNorm layers are built in the default dtype
    end_a = {name: t[:p].to(device) for name, t in ends.items()}
    end_b = {name: t[p:].to(device) for name, t in ends.items()}
    return net, end_a, end_b


def initial_middle(end_a: dict, end_b: dict) -> dict[str, torch.Tensor]:
    """Where training starts θ_c: the midpoints (θ_a + θ_b)/2, {name: (P, *shape)}."""
    return {name: (0.5 * (end_a[name] + end_b[name])).detach() for name in end_a}


def curve_points(end_a: dict, middle: dict, end_b: dict, coefficients: torch.Tensor | tuple) -> dict[str, torch.Tensor]:
    """γ_p(t_p) for every parameter, {name: (P, *shape)}, differentiable with respect to the middle points.

    coefficients: a (P, 3) tensor (each pair its own t, as in training), or one (ca, cm, cb) tuple shared by
    all pairs (evaluation); then terms with a zero weight are left out, so γ(0) is θ_a and γ(1) is θ_b bit for
    bit (and stay finite even if a middle point has diverged).
    """
    out = {}
    if isinstance(coefficients, tuple):
        for name in end_a:
            terms = [c * v for c, v in zip(coefficients, (end_a[name], middle[name], end_b[name])) if c != 0.0]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            out[name] = total
        return out
    ca, cm, cb = coefficients.unbind(1)
    for name, a in end_a.items():
        shape = (-1,) + (1,) * (a.dim() - 1)
        out[name] = ca.view(shape) * a + cm.view(shape) * middle[name] + cb.view(shape) * end_b[name]
    return out


def check_curve_configs(configs: list[CurveConfig], n: int) -> None:
    """ValueError unless the pairs can share a cohort: same epochs, batch size, t-grid, device, B <= n."""
    if not configs:
        raise ValueError("a curve cohort needs at least one pair")
    for key in ("epochs", "batch_size", "points", "lr_schedule", "device", "bn_batch_size", "eval_batch_size"):
        values = sorted({str(getattr(c, key)) for c in configs})
        if len(values) > 1:
            raise ValueError(f"curve cohort members must share {key}; got {values}")
    if configs[0].batch_size > n:
        raise ValueError(f"batch_size {configs[0].batch_size} exceeds the training set ({n} examples); it is not "
                         "shrunk because the batch size is part of the experiment")


# ----------------------------------------------------------------------------------------------------------
# Training


def curve_lr_factor(epoch: int, epochs: int) -> float:
    """Multiplier of the base lr in the epoch numbered `epoch` of `epochs`, as in Garipov et al.'s curve training:
    1 while epoch/epochs <= 0.5, then linear down to 0.01 at epoch/epochs = 0.9, then 0.01.

    Garipov numbers the epochs 1..epochs (`CURVE_LR_SCHEDULES["garipov"]`); `train_curves` passes the number
    each pair's config's lr_schedule gives."""
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


def train_curves(net: CohortNet, end_a: dict, end_b: dict, train_x: torch.Tensor, train_y: torch.Tensor,
                 configs: list[CurveConfig]) -> tuple[dict, list[list[dict]], list[CurveDiverged | None]]:
    """Train the P middle points; returns (middle {name: (P, *shape)}, histories, per pair None or CurveDiverged).

    end_a, end_b: {name: (P, *shape)} endpoint parameters, on the device of train_x (n, *input_shape), shared;
    train_y (P, n). Each minibatch (drawn without replacement, last partial batch dropped) gets per pair its
    own t ~ U(0, 1); the loss is cross-entropy at γ_p(t_p) + 0.5·wd·||γ_p(t_p)||², minimised by SGD with
    momentum over the middle points only, lr = config.lr x curve_lr_factor with the epochs counted as
    config.lr_schedule says. History entries: epoch (1-based), lr, train_loss (mean batch cross-entropy),
    train_error (percent, on the batches at their t, train mode), objective (mean loss including the penalty),
    seconds (cumulative). Losses are checked once per epoch (a device sync per step would cost more); a pair
    whose epoch loss is not finite gets a CurveDiverged holding its history so far, and stops. ValueError if
    the configs cannot share a cohort (`check_curve_configs`).
    """
    p_count, n = net.members, int(train_x.shape[0])
    check_curve_configs(configs, n)
    batch, epochs, steps = configs[0].batch_size, configs[0].epochs, n // configs[0].batch_size
    per_example = objective.predictions(train_y[0, :1])  # predictions per example (1, or a sequence's targets)
    device = train_x.device
    middle = initial_middle(end_a, end_b)
    curve_step = make_curve_step(net, end_a, middle, end_b, configs)
    dtype = next(iter(middle.values())).dtype
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]  # CPU: orders and t draws
    histories: list[list[dict]] = [[] for _ in range(p_count)]
    diverged: list[CurveDiverged | None] = [None] * p_count
    active = torch.ones(p_count, dtype=torch.bool, device=device)
    started = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        if all(d is not None for d in diverged):
            break
        lrs = [c.lr * curve_lr_factor(CURVE_LR_SCHEDULES[c.lr_schedule] + epoch, c.epochs) for c in configs]
        curve_step.set_lr(lrs)
        orders, ts = [], []
        for g in generators:  # per pair: the permutation first, then one t per step
            orders.append(torch.randperm(n, generator=g))
            ts.append([float(torch.rand((), generator=g, dtype=torch.float64)) for _ in range(steps)])
        order = torch.stack(orders).to(device)
        t_cpu = torch.tensor(ts, dtype=torch.float64).t()  # (steps, P)
        coefficients = torch.tensor([[bezier_coefficients(t) for t in row] for row in t_cpu.tolist()],
                                    dtype=dtype).to(device)  # (steps, P, 3), as Python floats would
        at_zero = (t_cpu == 0).tolist()
        ce_sum = torch.zeros(p_count, dtype=torch.float64, device=device)
        obj_sum = torch.zeros(p_count, dtype=torch.float64, device=device)
        wrong = torch.zeros(p_count, dtype=torch.int64, device=device)
        for step in range(steps):
            index = order[:, step * batch:(step + 1) * batch]
            mask = None  # at t = 0 exactly γ(t) does not involve θ_c: that pair takes no step
            if any(at_zero[step]) or any(d is not None for d in diverged):
                mask = active & torch.tensor([not z for z in at_zero[step]], device=device)
            ce, loss, correct = curve_step(net.inputs(train_x, index), objective.member_targets(train_y, index),
                                           coefficients[step], mask)
            ce_sum += ce
            obj_sum += loss
            wrong += batch * per_example - correct
        mean_ce, mean_obj, wrong_list = (ce_sum / steps).tolist(), (obj_sum / steps).tolist(), wrong.tolist()
        for pair in range(p_count):
            if diverged[pair] is not None:
                continue
            if not (math.isfinite(mean_ce[pair]) and math.isfinite(mean_obj[pair])):
                diverged[pair] = CurveDiverged(
                    f"curve training diverged in epoch {epoch + 1}: mean loss {mean_ce[pair]}", histories[pair])
                active[pair] = False
                continue
            histories[pair].append({"epoch": epoch + 1, "lr": lrs[pair], "train_loss": mean_ce[pair],
                                    "train_error": 100.0 * wrong_list[pair] / (steps * batch * per_example),
                                    "objective": mean_obj[pair], "seconds": time.perf_counter() - started})
    # Copies in the parameters' own layout (the fused step's are views of its buffer, weights transposed).
    return {k: v.detach().contiguous() for k, v in middle.items()}, histories, diverged


def make_curve_step(net: CohortNet, end_a: dict, middle: dict, end_b: dict, configs: list[CurveConfig]):
    """The SGD step of the P middle points ``middle`` {name: (P, *shape)} (updated in place):
    ``step(inputs, targets, coefficients (P, 3), active)`` -> (cross-entropy (P,), objective (P,), correct
    (P,)), with ``set_lr(lrs)``. A FusedNet's curves take the fused MLP step (workloads/cohort_fused.py); other
    nets ``AutogradCurveStep``. Weight decay is the penalty ½·wd·||γ(t)||² of the objective, not the optimiser's."""
    lr, momentum = [c.lr for c in configs], [c.momentum for c in configs]
    weight_decay = [c.weight_decay for c in configs]
    step = FusedCurveStep if net.backend == "fused" else AutogradCurveStep
    return step(net, end_a, middle, end_b, lr=lr, momentum=momentum, weight_decay=weight_decay)


class AutogradCurveStep:
    """``make_curve_step``'s step for any CohortNet: the penalised loss at the curve points (``curve_points``),
    its gradient with respect to the middle points by autograd, and CohortSGD (no weight decay of its own)."""

    def __init__(self, net: CohortNet, end_a: dict, middle: dict, end_b: dict, *, lr: list[float],
                 momentum: list[float], weight_decay: list[float]):
        self.net, self.end_a, self.middle, self.end_b = net, end_a, middle, end_b
        self.params = [v.requires_grad_(True) for v in middle.values()]
        device = self.params[0].device
        self.sgd = CohortSGD(self.params, lr=lr, momentum=momentum, weight_decay=[0.0] * len(lr), device=device)
        half_wd = [0.5 * wd for wd in weight_decay]
        self.half_wd = half_wd[0] if len(set(half_wd)) == 1 else torch.tensor(half_wd, device=device)

    def set_lr(self, lrs: list[float]) -> None:
        self.sgd.set_lr(lrs)

    def __call__(self, inputs, targets, coefficients, active=None):
        points = curve_points(self.end_a, self.middle, self.end_b, coefficients)
        ce, correct = objective.member_losses(self.net(inputs, points), targets)
        penalty = sum(w.pow(2).flatten(1).sum(1) for w in points.values())
        loss = ce + self.half_wd * penalty
        self.sgd.step(torch.autograd.grad(loss.sum(), self.params), active)
        return ce.detach(), loss.detach(), correct


# ----------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def _loss_and_error(net: CohortNet, points: dict, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int) -> tuple[list[float], list[float]]:
    """Per pair (mean cross-entropy in nats, error in percent) at its point on (x, y (P, n)), eval mode."""
    n, p_count = int(x.shape[0]), net.members
    total = torch.zeros(p_count, dtype=torch.float64, device=x.device)
    wrong = torch.zeros(p_count, dtype=torch.int64, device=x.device)
    net.eval()
    for start in range(0, n, batch_size):
        logits = net(net.inputs_shared(x[start:start + batch_size]), points)  # (P, b, ..., K)
        yb = y[:, start:start + batch_size]
        sums, hits = objective.member_summed_losses(logits, yb)
        total += sums
        wrong += objective.predictions(yb[0]) - hits
    count = objective.predictions(y[0])  # one pair's predictions
    return (total / count).tolist(), (100.0 * wrong.double() / count).tolist()


def evaluate_curves(net: CohortNet, end_a: dict, middle: dict, end_b: dict, train_x, train_y, test_x, test_y,
                    configs: list[CurveConfig]) -> list[dict[str, np.ndarray]]:
    """Train and test loss and error of every pair's curve at each t of the configs' grid.

    At each t every pair's point is formed (`curve_points`) and, if the architecture has BatchNorm, its
    running statistics recomputed on the training inputs (`recompute_cohort_batchnorm`: batches of
    bn_batch_size, in the order of the pair's seed, last partial batch dropped), then evaluated in eval mode.
    x tensors shared, y (P, n). Returns per pair float64 arrays of shape (points,): t, train_error (percent),
    train_loss (nats), test_error, test_loss.
    """
    rows = [{k: [] for k in ("t", "train_error", "train_loss", "test_error", "test_loss")} for _ in configs]
    for t in np.asarray(configs[0].ts(), dtype=np.float64):
        points = curve_points(end_a, middle, end_b, bezier_coefficients(float(t)))
        recompute_cohort_batchnorm(net, train_x, seeds=[c.seed for c in configs], params=points,
                                   batch_size=configs[0].bn_batch_size, drop_last=True)
        train_loss, train_error = _loss_and_error(net, points, train_x, train_y, configs[0].eval_batch_size)
        test_loss, test_error = _loss_and_error(net, points, test_x, test_y, configs[0].eval_batch_size)
        for p, row in enumerate(rows):
            for k, v in (("t", t), ("train_error", train_error[p]), ("train_loss", train_loss[p]),
                         ("test_error", test_error[p]), ("test_loss", test_loss[p])):
                row[k].append(v)
    return [{k: np.asarray(v, dtype=np.float64) for k, v in row.items()} for row in rows]


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


def connect_cohort(net: CohortNet, end_a: dict, end_b: dict, train_x, train_y, test_x, test_y,
                   configs: list[CurveConfig]) -> list[CurveResult]:
    """Train P pairs' curves and measure their mode connectivity: one CurveResult per pair.

    net: a CohortNet of P members (its own parameters are overwritten with NaN and never read); end_a, end_b:
    {name: (P, *shape)} endpoint parameters (`curve_cohort` makes all three); x tensors shared, train_y (P, n),
    test_y (P, m); all on one device. A pair whose curve diverges gets status "diverged" with the
    CurveDiverged message in `error`, its history, empty arrays and mc None, instead of an exception.
    """
    started = time.perf_counter()
    with torch.no_grad():
        for p in net.params().values():
            p.fill_(math.nan)  # any path that bypasses the curve points shows up at once
    middle, histories, diverged = train_curves(net, end_a, end_b, train_x, train_y, configs)
    curves = evaluate_curves(net, end_a, middle, end_b, train_x, train_y, test_x, test_y, configs)
    seconds = time.perf_counter() - started
    out = []
    empty = np.zeros(0, dtype=np.float64)
    for config, curve, history, failure in zip(configs, curves, histories, diverged):
        if failure is not None:
            out.append(CurveResult(ts=empty, train_error=empty, train_loss=empty, test_error=empty, test_loss=empty,
                                   mode_connectivity=None, t_star=None, history=failure.history, status="diverged",
                                   error=str(failure), seconds=seconds, config=config))
            continue
        mc, t_star = curve_mode_connectivity(curve, config)
        out.append(CurveResult(ts=curve["t"], train_error=curve["train_error"], train_loss=curve["train_loss"],
                               test_error=curve["test_error"], test_loss=curve["test_loss"], mode_connectivity=mc,
                               t_star=t_star, history=history, status="ok", error=None, seconds=seconds,
                               config=config))
    return out


def connect_models(
    model_a: nn.Module,
    model_b: nn.Module,
    train_x,
    train_y: torch.Tensor | None = None,
    test_x: torch.Tensor | None = None,
    test_y: torch.Tensor | None = None,
    config: CurveConfig | None = None,
) -> CurveResult:
    """Train a Bezier curve between two models and measure mode connectivity: `connect_cohort` of one pair.

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
    device = torch.device(config.device)
    net, end_a, end_b = curve_cohort([(model_a, model_b)], device, resolve_backend("auto", model_a, 1, train_x))
    [result] = connect_cohort(net, end_a, end_b, train_x.to(device), train_y.to(device).unsqueeze(0),
                              test_x.to(device), test_y.to(device).unsqueeze(0), [config])
    return result
