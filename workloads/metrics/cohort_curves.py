"""Mode connectivity of P pairs at once: their Bezier curves trained and evaluated as one cohort.

The definitions are workloads/metrics/connectivity.py's, per pair: γ_p(t) = (1 − t)² θ_a + 2t(1 − t) θ_c + t² θ_b
with fixed endpoints; the middle points θ_c (stacked (P, *shape)) start at the midpoints and are trained by
SGD with momentum on cross-entropy at γ_p(t_p) + 0.5·wd·||γ_p(t_p)||², lr = lr_p · ``curve_lr_factor``
(connectivity.py's, called here exactly as its train_curve calls it, so a schedule change there is followed).
Each pair has its own CPU generator seeded with its CurveConfig.seed drawing, per epoch, one randperm(n) and
then one t ~ U(0, 1) per step, as train_curve does; a step at t = 0 exactly leaves that pair untouched, as
there. An epoch whose mean loss is not finite marks that pair diverged (train_curve's message), frozen while
the others go on. For evaluation every t of the grid gives every pair's point γ_p(t) (zero-weight terms
left out, so γ(0) = θ_a and γ(1) = θ_b bit for bit); BatchNorm statistics are recomputed per pair and point
(one seeded pass over the training inputs, cumulative average, last partial batch dropped) before the train
and test loss and error in eval mode. ``mode_connectivity`` is connectivity.py's.

The cohort is a CohortNet of P members whose own parameters are NaN: every call passes the curve points.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from workloads import objective
from workloads.cohort_net import CohortNet
from workloads.cohort_train import CohortSGD, member_losses
from workloads.metrics.connectivity import (
    CURVE_LR_SCHEDULES,
    CurveConfig,
    CurveResult,
    bezier_coefficients,
    curve_lr_factor,
    curve_mode_connectivity,
)


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


def _points(end_a: dict, middle: dict, end_b: dict, coefficients: torch.Tensor | tuple) -> dict[str, torch.Tensor]:
    """γ_p(t_p) for every parameter: coefficients (P, 3) tensor, or one (ca, cm, cb) tuple shared by all pairs
    (then zero-weight terms are left out, as BezierCurve.params_at does)."""
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


def train_curves(net: CohortNet, end_a: dict, end_b: dict, train_x: torch.Tensor, train_y: torch.Tensor,
                 configs: list[CurveConfig]) -> tuple[dict, list[list[dict]], list[str | None]]:
    """Train the P middle points; returns (middle {name: (P, *shape)}, histories, errors (None = ok)).

    end_a, end_b: {name: (P, *shape)} trainable parameters of the endpoints, on the device; train_x
    (n, *input_shape) shared, train_y (P, n). History entries are train_curve's.
    """
    p_count, n = net.members, int(train_x.shape[0])
    batch, epochs, steps = configs[0].batch_size, configs[0].epochs, n // configs[0].batch_size
    per_example = objective.predictions(train_y[0, :1])  # predictions per example (1, or a sequence's targets)
    device = train_x.device
    middle = {k: (0.5 * (end_a[k] + end_b[k])).detach().requires_grad_(True) for k in end_a}
    params = list(middle.values())
    sgd = CohortSGD(params, lr=[c.lr for c in configs], momentum=[c.momentum for c in configs],
                    weight_decay=[0.0] * p_count, device=device)
    half_wd = [0.5 * c.weight_decay for c in configs]
    half_wd = half_wd[0] if len(set(half_wd)) == 1 else torch.tensor(half_wd, device=device)
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]  # CPU: orders and t draws
    histories: list[list[dict]] = [[] for _ in range(p_count)]
    errors: list[str | None] = [None] * p_count
    active = torch.ones(p_count, dtype=torch.bool, device=device)
    started = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        if all(e is not None for e in errors):
            break
        lrs = [c.lr * curve_lr_factor(CURVE_LR_SCHEDULES[c.lr_schedule] + epoch, c.epochs) for c in configs]
        sgd.set_lr(lrs)
        orders, ts = [], []
        for g in generators:  # per pair: the permutation first, then one t per step (train_curve's order)
            orders.append(torch.randperm(n, generator=g))
            ts.append([float(torch.rand((), generator=g, dtype=torch.float64)) for _ in range(steps)])
        order = torch.stack(orders).to(device)
        t_cpu = torch.tensor(ts, dtype=torch.float64).t()  # (steps, P)
        coefficients = torch.tensor([[bezier_coefficients(t) for t in row] for row in t_cpu.tolist()],
                                    dtype=params[0].dtype).to(device)  # (steps, P, 3), as Python floats would
        at_zero = (t_cpu == 0).tolist()
        ce_sum = torch.zeros(p_count, dtype=torch.float64, device=device)
        obj_sum = torch.zeros(p_count, dtype=torch.float64, device=device)
        wrong = torch.zeros(p_count, dtype=torch.int64, device=device)
        for step in range(steps):
            index = order[:, step * batch:(step + 1) * batch]
            points = _points(end_a, middle, end_b, coefficients[step])
            yb = objective.member_targets(train_y, index)
            ce, correct = member_losses(net(net.inputs(train_x, index), points), yb)
            penalty = sum(w.pow(2).flatten(1).sum(1) for w in points.values())
            loss = ce + half_wd * penalty
            grads = torch.autograd.grad(loss.sum(), params)
            mask = None
            if any(at_zero[step]) or not bool(all(e is None for e in errors)):
                mask = active & torch.tensor([not z for z in at_zero[step]], device=device)
            sgd.step(grads, mask)
            ce_sum += ce.detach()
            obj_sum += loss.detach()
            wrong += batch * per_example - correct
        mean_ce = (ce_sum / steps).tolist()
        mean_obj = (obj_sum / steps).tolist()
        wrong_list = wrong.tolist()
        for pair in range(p_count):
            if errors[pair] is not None:
                continue
            if not (math.isfinite(mean_ce[pair]) and math.isfinite(mean_obj[pair])):
                errors[pair] = f"curve training diverged in epoch {epoch + 1}: mean loss {mean_ce[pair]}"
                active[pair] = False
                continue
            histories[pair].append({"epoch": epoch + 1, "lr": lrs[pair], "train_loss": mean_ce[pair],
                                    "train_error": 100.0 * wrong_list[pair] / (steps * batch * per_example),
                                    "objective": mean_obj[pair], "seconds": time.perf_counter() - started})
    return {k: v.detach() for k, v in middle.items()}, histories, errors


@torch.no_grad()
def _recompute_batchnorm(net: CohortNet, points: dict, x: torch.Tensor, batch_size: int, seeds: list[int]) -> None:
    """workloads.metrics.batchnorm.recompute_batchnorm(drop_last=True, seed) for every pair's point at once."""
    n = int(x.shape[0])
    size = min(batch_size, n)
    orders = [torch.randperm(n, generator=torch.Generator().manual_seed(s)) for s in seeds]
    shared = all(s == seeds[0] for s in seeds)
    order = torch.stack(orders).to(x.device)
    net.reset_batchnorm()
    previous = net.set_batchnorm_momentum(None)
    net.train()
    try:
        for k, start in enumerate(range(0, n - size + 1, size), 1):
            net.set_batchnorm_momentum(1.0 / k)  # what momentum=None computes for the k-th batch
            index = order[:, start:start + size]
            inputs = net.inputs_shared(x[index[0]]) if shared else net.inputs(x, index)
            net(inputs, points)
    finally:
        net.restore_batchnorm_momentum(previous)


@torch.no_grad()
def _loss_and_error(net: CohortNet, points: dict, x: torch.Tensor, y: torch.Tensor,
                    batch_size: int) -> tuple[list[float], list[float]]:
    """connectivity.loss_and_error per pair: (mean cross-entropy in nats, error in percent), eval mode."""
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
    """connectivity.evaluate_curve for every pair: per pair {t, train_error, train_loss, test_error, test_loss}."""
    ts = configs[0].ts()
    rows = [{k: [] for k in ("t", "train_error", "train_loss", "test_error", "test_loss")} for _ in configs]
    for t in np.asarray(ts, dtype=np.float64):
        points = _points(end_a, middle, end_b, bezier_coefficients(float(t)))
        if net.has_batchnorm:
            _recompute_batchnorm(net, points, train_x, configs[0].bn_batch_size, [c.seed for c in configs])
        train_loss, train_error = _loss_and_error(net, points, train_x, train_y, configs[0].eval_batch_size)
        test_loss, test_error = _loss_and_error(net, points, test_x, test_y, configs[0].eval_batch_size)
        for p, row in enumerate(rows):
            for k, v in (("t", t), ("train_error", train_error[p]), ("train_loss", train_loss[p]),
                         ("test_error", test_error[p]), ("test_loss", test_loss[p])):
                row[k].append(v)
    return [{k: np.asarray(v, dtype=np.float64) for k, v in row.items()} for row in rows]


def connect_cohort(net: CohortNet, end_a: dict, end_b: dict, train_x, train_y, test_x, test_y,
                   configs: list[CurveConfig]) -> list[CurveResult]:
    """connect_models for P pairs at once: one CurveResult per pair (status "diverged" as there).

    net: a CohortNet of P members (its own parameters are not read); end_a, end_b: {name: (P, *shape)}
    trainable parameters of the endpoints; train_y (P, n), test_y (P, m); x tensors shared; all on one device.
    """
    check_curve_configs(configs, int(train_x.shape[0]))
    started = time.perf_counter()
    with torch.no_grad():
        for p in net.params().values():
            p.fill_(math.nan)  # any path that bypasses the curve points shows up at once
    middle, histories, errors = train_curves(net, end_a, end_b, train_x, train_y, configs)
    curves = evaluate_curves(net, end_a, middle, end_b, train_x, train_y, test_x, test_y, configs)
    seconds = time.perf_counter() - started
    out = []
    empty = np.zeros(0, dtype=np.float64)
    for config, curve, history, error in zip(configs, curves, histories, errors):
        if error is not None:
            out.append(CurveResult(ts=empty, train_error=empty, train_loss=empty, test_error=empty, test_loss=empty,
                                   mode_connectivity=None, t_star=None, history=history, status="diverged",
                                   error=error, seconds=seconds, config=config))
            continue
        mc, t_star = curve_mode_connectivity(curve, config)
        out.append(CurveResult(ts=curve["t"], train_error=curve["train_error"], train_loss=curve["train_loss"],
                               test_error=curve["test_error"], test_loss=curve["test_loss"], mode_connectivity=mc,
                               t_star=t_star, history=history, status="ok", error=None, seconds=seconds,
                               config=config))
    return out
