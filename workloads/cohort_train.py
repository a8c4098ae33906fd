"""Cohort training: M members of one architecture and step count trained as one model (workloads/cohort_net.py).
(Over ~400 lines: the training loop, its optimizer, its checkpoint hooks and its evaluation are one method.)

Each member gets exactly what ``workloads.train.train`` would give it alone:
- its batch order: a CPU ``torch.Generator`` seeded with its TrainConfig.seed draws one ``randperm(n)`` per
  epoch, floor(n / B) steps, the last partial batch dropped (train.py ``_run_epoch``);
- its initialisation (the state it was stacked from), its labels (label noise: same x, its own y);
- its learning rate (schedule and scaling), weight decay and momentum: ``CohortSGD`` is torch.optim.SGD's
  update per member: d = g + wd·p; buf = momentum·buf + d (buf = d on the first step); p -= lr·buf;
- its own BatchNorm batch and running statistics.
The loss is the sum of the members' mean cross-entropies, whose gradient for member m is exactly that of
its own loss. So a member's weights equal the one-at-a-time run's up to float rounding (tests/test_cohort.py).

Differences from train(): the global torch/numpy/python RNGs are not seeded per member (nothing in the
training step draws from them; every draw is from a member's own generator). A member whose loss goes
non-finite is frozen (parameters, momentum, BatchNorm statistics) and reported as diverged with train()'s
message while the others continue. Non-finite losses are looked for every DIVERGENCE_CHECK_STEPS steps as in
train.py: no host synchronisation per step; data stay on the device.

Execution settings (never part of the math beyond float rounding): backend (grouped | vmap | auto),
compile (off | default | reduce-overhead (CUDA graphs) | max-autotune: torch.compile of the forward + loss),
precision (fp32 | bf16 autocast of the forward pass in training; evaluation is always fp32).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from workloads import objective
from workloads.cohort_checkpoint import checkpoint_state, restore_checkpoint
from workloads.cohort_net import CohortNet
from workloads.settings import COMPILE_MODES, PRECISIONS, eval_epochs  # declared once, with the sweep's execution settings
from workloads.train import DIVERGENCE_CHECK_STEPS, TrainConfig, TrainingOOMError, checkpoint_due, learning_rate

EVAL_BATCH_SIZE = 1000  # examples per forward pass in evaluation (memory only)
# An epoch's batches are gathered once per epoch (a step then only slices a view) when the M permuted copies
# of the training inputs take at most this many bytes; otherwise each step gathers its own batch.
EPOCH_GATHER_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Execution:
    """How a cohort runs. backend: "auto" (BACKEND_BY_FAMILY), "grouped" or "vmap"; compile: torch.compile mode
    of the training forward pass or "off"; precision: "fp32" or "bf16" (autocast, training only)."""

    backend: str = "auto"
    compile: str = "off"
    precision: str = "fp32"

    def __post_init__(self):
        if self.backend not in ("auto", "grouped", "vmap"):
            raise ValueError(f"execution backend must be auto, grouped or vmap, got {self.backend!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"execution compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"execution precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class CohortTrainResult:
    """Per member (lists of length M): history (train.py's per-epoch dicts), status "ok" | "diverged", error
    (train.py's message, or None) and epochs_completed. net: the trained cohort, on the training device."""

    net: CohortNet
    histories: list[list[dict]]
    statuses: list[str]
    errors: list[str | None]
    epochs_completed: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------
# The optimiser


class _PerMember:
    """A hyperparameter: one Python float when every member has the same value (then the update is literally
    torch.optim.SGD's), else an (M,) tensor viewed as (M, 1, ..., 1) in each parameter's dtype."""

    def __init__(self, values: list[float], device: torch.device):
        self.values = [float(v) for v in values]
        self.shared = all(v == self.values[0] for v in self.values)
        self.device = device
        self._views: dict[tuple, torch.Tensor] = {}

    def like(self, p: torch.Tensor):
        if self.shared:
            return self.values[0]
        key = (p.dim(), p.dtype)
        if key not in self._views:
            tensor = torch.tensor(self.values, dtype=p.dtype, device=self.device)
            self._views[key] = tensor.view(-1, *([1] * (p.dim() - 1)))
        return self._views[key]


class CohortSGD:
    """torch.optim.SGD (momentum, weight decay, no dampening, no Nesterov) with per-member lr, wd, momentum.

    params: the stacked (M, *shape) parameters; lr, momentum, weight_decay: one number per member.
    Momentum buffers start at zero, so the first step's momentum·0 + d is torch's buf = d exactly.
    ``step(grads, active)``: active None = every member steps; else an (M,) bool tensor, and inactive
    members keep their parameters and momentum buffers bit for bit.
    """

    def __init__(self, params: list[torch.Tensor], *, lr: list[float], momentum: list[float],
                 weight_decay: list[float], device: torch.device):
        self.params = params
        self.device = device
        self.lr = _PerMember(lr, device)
        self.momentum = _PerMember(momentum, device)
        self.weight_decay = _PerMember(weight_decay, device)
        self.buffers = [torch.zeros_like(p) for p in params]

    @classmethod
    def for_training(cls, params: list[torch.Tensor], configs: list[TrainConfig], device) -> "CohortSGD":
        return cls(params, lr=[c.lr for c in configs], momentum=[c.momentum for c in configs],
                   weight_decay=[c.weight_decay for c in configs], device=device)

    def set_lr(self, lrs: list[float]) -> None:
        self.lr = _PerMember(lrs, self.device)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], active: torch.Tensor | None = None) -> None:
        """Active members step with exactly the arithmetic of a cohort where all step (so a member's weights
        do not depend on whether another has diverged); the inactive ones' slices are put back afterwards."""
        if active is None:
            self._step_all(list(grads))
            return
        inactive = ~active
        saved = [(p[inactive].clone(), buf[inactive].clone()) for p, buf in zip(self.params, self.buffers)]
        self._step_all(list(grads))
        for (p_saved, buf_saved), p, buf in zip(saved, self.params, self.buffers):
            p[inactive] = p_saved
            buf[inactive] = buf_saved

    def _step_all(self, grads: list[torch.Tensor]) -> None:
        """Every member steps. On the CPU a plain loop of torch.optim.SGD's own single-tensor operations (bit
        for bit its arithmetic); on CUDA their multi-tensor (_foreach) form, the same arithmetic per element in
        four launches for all parameters (torch's CPU foreach falls back to a slower loop than this one).

        Gradients are made contiguous first: bmm's weight gradients come back from autograd.grad as transposed
        views, and three strided passes over them cost more than one copy (a wide model's update is
        memory-bound). torch's fused SGD kernel was ~20% faster again, but it rounds some elements differently
        from torch.optim.SGD's default path, which SGD then amplifies: the exact arithmetic was kept."""
        params, bufs = self.params, self.buffers
        grads = [g.contiguous() for g in grads]
        wd, mom, lr = self.weight_decay, self.momentum, self.lr
        if not params[0].is_cuda:
            for p, g, buf in zip(params, grads, bufs):
                w, m, r = wd.like(p), mom.like(p), lr.like(p)
                if isinstance(w, float):  # g is a fresh tensor: add into it (no allocation)
                    d = g if w == 0 else g.add_(p, alpha=w)
                else:
                    d = g.addcmul_(w, p)
                buf.mul_(m).add_(d)
                if isinstance(r, float):
                    p.add_(buf, alpha=-r)
                else:
                    p.addcmul_(r, buf, value=-1.0)
            return
        if not wd.shared:
            d = torch._foreach_addcmul(grads, [wd.like(p) for p in params], params)
        elif wd.values[0] != 0:  # torch.optim.SGD skips a zero weight decay
            d = torch._foreach_add(grads, params, alpha=wd.values[0])
        else:
            d = grads
        if mom.shared:
            torch._foreach_mul_(bufs, mom.values[0])
        else:
            torch._foreach_mul_(bufs, [mom.like(p) for p in params])
        torch._foreach_add_(bufs, d)
        if lr.shared:
            torch._foreach_add_(params, bufs, alpha=-lr.values[0])
        else:
            torch._foreach_addcmul_(params, [lr.like(p) for p in params], bufs, value=-1.0)


# --------------------------------------------------------------------------------------------------------
# One step


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (M, B, ..., K), y (M, B, ...) -> (mean cross-entropy per member (M,), correct predictions per member
    (M,)): workloads.objective.member_losses, with the loss in fp32 under autocast."""
    if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in fp32
        logits = logits.float()
    return objective.member_losses(logits, y)


def make_loss_step(net: CohortNet, execution: Execution, device: torch.device) -> Callable:
    """(inputs, y (M, B)) -> (losses (M,), correct (M,)) in train mode, compiled if execution.compile says so."""

    def loss_step(inputs, y):
        with _autocast(execution.precision, device):
            logits = net(inputs)
        return member_losses(logits, y)

    if execution.compile != "off":
        return torch.compile(loss_step, mode=execution.compile, dynamic=False)
    return loss_step


# --------------------------------------------------------------------------------------------------------
# Training


def check_cohort_configs(configs: list[TrainConfig], n: int) -> None:
    """ValueError unless the members can share a cohort: same epochs, batch size and device, B <= n."""
    if not configs:
        raise ValueError("a cohort needs at least one member")
    for key in ("epochs", "batch_size", "device", "checkpoint_every", "checkpoint_minutes", "eval_every"):
        values = sorted({str(getattr(c, key)) for c in configs})
        if len(values) > 1:
            raise ValueError(f"cohort members must share {key} (step counts and device agree); got {values}")
    b = configs[0].batch_size
    if b > n:
        raise ValueError(f"TrainConfig.batch_size={b} exceeds the training-set size n={n}; it is never shrunk: "
                         "the batch size is the experiment")


def train_cohort(net: CohortNet, train_x: torch.Tensor, train_y: torch.Tensor, configs: list[TrainConfig], *,
                 execution: Execution = Execution(), checkpoint_fn: Callable[[dict], None] | None = None,
                 resume_state: dict | None = None, members: list[str] | None = None,
                 test_set: tuple[torch.Tensor, torch.Tensor] | None = None,
                 epoch_fn: Callable[[list[dict]], None] | None = None) -> CohortTrainResult:
    """Train the M members of ``net`` in place; train_x (n, *input_shape) shared, train_y (M, n) or (n,).

    test_set: (test_x, test_y (M, n_test) or (n_test,)); with it the test loss and accuracy of every active
    member are added to its history after the epochs ``eval_epochs(epochs, eval_every)`` (eval mode: the
    weights and BatchNorm statistics of training are not changed), as workloads.train does. epoch_fn(entries)
    is called after every epoch with the history entries of the members still active (for live progress),
    each with its ``member`` index added (not in the history).

    configs: one TrainConfig per member (same epochs, batch_size, device; any lr, momentum, weight decay,
    schedule, seed). checkpoint_fn(state) is called when workloads.train.checkpoint_due says (every
    ``checkpoint_every``-th epoch, or ``checkpoint_minutes`` after the last checkpoint) with a CPU copy
    of the whole cohort (tensors, lists, dicts and numbers only: ``torch.load(weights_only=True)`` reads it);
    passed back as ``resume_state`` it continues bit for bit. members: optional names of the members (stored
    in checkpoints; a resume_state naming other members is refused). execution.backend is the caller's
    business (it built ``net``). A device out of memory raises TrainingOOMError.
    """
    n = int(train_x.shape[0])
    check_cohort_configs(configs, n)
    if len(configs) != net.members:
        raise ValueError(f"{len(configs)} configs for a cohort of {net.members} members")
    device = torch.device(configs[0].device)
    try:
        return _train(net, train_x, train_y, configs, execution, device, checkpoint_fn, resume_state, members,
                      test_set, epoch_fn)
    except torch.cuda.OutOfMemoryError as err:
        params = sum(p[0].numel() for p in net.params().values())
        raise TrainingOOMError(
            f"out of memory on {device} training a cohort of {net.members} models of {params:,} parameters at "
            f"batch_size={configs[0].batch_size} (n={n}); the batch size is never shrunk: use fewer members per "
            f"cohort or a device with more memory") from err


def _train(net, train_x, train_y, configs, execution, device, checkpoint_fn, resume_state,
           members, test_set=None, epoch_fn=None) -> CohortTrainResult:
    m, n = net.members, int(train_x.shape[0])
    batch, epochs = configs[0].batch_size, configs[0].epochs
    every, minutes = configs[0].checkpoint_every, configs[0].checkpoint_minutes
    steps = n // batch
    net.to(device)
    x = train_x.to(device)
    y = (train_y if train_y.dim() == 2 else train_y.unsqueeze(0).expand(m, n)).to(device)
    if tuple(y.shape) != (m, n):
        raise ValueError(f"train_y must be (n,) or (M, n) = ({m}, {n}), got {tuple(y.shape)}")
    params = [p for p in net.params().values() if p.requires_grad]
    sgd = CohortSGD.for_training(params, configs, device)
    orders = [torch.Generator(device="cpu").manual_seed(c.seed) for c in configs]
    run = _Run(histories=[[] for _ in range(m)], errors=[None] * m)
    start = 0
    if resume_state is not None:
        start = restore_checkpoint(resume_state, net, sgd, orders, run, configs, members)
    loss_step = make_loss_step(net, execution, device)
    active = torch.tensor([e is None for e in run.errors], device=device)
    # Frozen members -> their BatchNorm buffers when frozen, put back after every epoch (the forward pass
    # still runs them). After a resume the checkpoint's buffers are those values already.
    frozen = {i: _member_buffers(net, i) for i, e in enumerate(run.errors) if e is not None}
    evaluated = eval_epochs(epochs, configs[0].eval_every)
    whole_epoch = m * steps * batch * x[0].numel() * x.element_size() <= EPOCH_GATHER_BYTES
    net.train()
    last_checkpoint = time.monotonic()
    for epoch in range(start, epochs):
        if all(e is not None for e in run.errors):
            break
        lrs = [learning_rate(c, epoch) for c in configs]
        sgd.set_lr(lrs)
        began = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)  # drawn on CPU
        epoch_x = net.inputs(x, perms[:, :steps * batch]) if whole_epoch else None
        epoch_y = objective.member_targets(y, perms[:, :steps * batch]) if whole_epoch else None
        losses = torch.empty(steps, m, device=device)  # kept on the device: no sync per step
        correct = torch.zeros(m, dtype=torch.int64, device=device)
        all_active = all(e is None for e in run.errors)
        checked = 0
        for step in range(steps):
            if whole_epoch:
                inputs = net.batch_of(epoch_x, step * batch, (step + 1) * batch)
                labels = epoch_y[:, step * batch:(step + 1) * batch]
            else:
                index = perms[:, step * batch:(step + 1) * batch]
                inputs, labels = net.inputs(x, index), objective.member_targets(y, index)
            step_losses, step_correct = loss_step(inputs, labels)
            grads = torch.autograd.grad(step_losses.sum(), params)
            sgd.step(grads, None if all_active else active)
            losses[step] = step_losses.detach()
            correct += step_correct
            if (step + 1) % DIVERGENCE_CHECK_STEPS == 0 or step == steps - 1:
                for member, bad_step, value in _newly_diverged(losses, checked, step + 1, run.errors):
                    run.errors[member] = (
                        f"diverged: non-finite batch loss {value} at epoch {epoch} (0-based), step {bad_step} of "
                        f"{steps}; lr={lrs[member]}, batch_size={batch}")
                    frozen[member] = _member_buffers(net, member)
                    active[member] = False
                    all_active = False
                checked = step + 1
        _restore_buffers(net, frozen)
        seconds = time.perf_counter() - began
        per_example = objective.predictions(y[0, :1])  # predictions per example (1, or a sequence's targets)
        mean_loss, accuracy = losses.mean(0).tolist(), (correct.double() / (steps * batch * per_example)).tolist()
        for member in range(m):
            if run.errors[member] is None:
                run.histories[member].append({"epoch": epoch, "lr": lrs[member], "train_loss": mean_loss[member],
                                              "train_acc": accuracy[member], "seconds": seconds,
                                              "test_loss": None, "test_acc": None})
        if test_set is not None and epoch in evaluated:
            test_loss, test_acc = evaluate_cohort(net, *test_set)
            for member in range(m):
                if run.errors[member] is None:
                    run.histories[member][-1].update(test_loss=test_loss[member], test_acc=test_acc[member])
        # ``member``: which of the cohort's models an entry is (the reports name each model's curve by it)
        entries = [{**run.histories[k][-1], "member": k} for k in range(m) if run.errors[k] is None]
        if epoch_fn is not None and entries:  # none when the last members diverged in this epoch
            epoch_fn(entries)
        if checkpoint_fn is not None and checkpoint_due(epoch + 1, every, minutes, time.monotonic() - last_checkpoint):
            checkpoint_fn(checkpoint_state(epoch + 1, net, sgd, orders, run, configs, members))
            last_checkpoint = time.monotonic()
    statuses = ["ok" if e is None else "diverged" for e in run.errors]
    return CohortTrainResult(net, run.histories, statuses, list(run.errors), [len(h) for h in run.histories])


@dataclass
class _Run:
    """Per-member bookkeeping that a checkpoint carries: histories and divergence messages (None = active)."""

    histories: list[list[dict]]
    errors: list[str | None]


def _newly_diverged(losses: torch.Tensor, start: int, stop: int, errors: list) -> list[tuple[int, int, float]]:
    """[(member, first bad step, its loss)] for still-active members with a non-finite loss in [start, stop)."""
    bad = ~torch.isfinite(losses[start:stop])  # (rows, M)
    if not bool(bad.any()):  # the one host synchronisation per DIVERGENCE_CHECK_STEPS steps
        return []
    out = []
    for member in bad.any(0).nonzero().flatten().tolist():
        if errors[member] is None:
            step = start + int(bad[:, member].nonzero()[0, 0])
            out.append((member, step, float(losses[step, member])))
    return out


def _member_buffers(net: CohortNet, member: int) -> dict[str, torch.Tensor]:
    return {name: b[member].clone() for name, b in net.module.named_buffers()}


@torch.no_grad()
def _restore_buffers(net: CohortNet, frozen: dict[int, dict]) -> None:
    """Put frozen members' BatchNorm statistics back to their values when they were frozen."""
    buffers = dict(net.module.named_buffers())
    for member, saved in frozen.items():
        for name, value in saved.items():
            buffers[name][member].copy_(value)


# --------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate_cohort(net: CohortNet, x: torch.Tensor, y: torch.Tensor, *,
                    batch_size: int = EVAL_BATCH_SIZE) -> tuple[list[float], list[float]]:
    """Per member (mean cross-entropy, accuracy) on x (n, *input_shape), y (M, n) or (n,), as
    workloads.train.evaluate: eval mode (running statistics), fp32, batches of ``batch_size``."""
    n, m = int(x.shape[0]), net.members
    if n == 0:
        raise ValueError("evaluate_cohort() needs at least one example")
    device = next(iter(net.params().values())).device
    y = y if y.dim() > 1 and y.shape[0] == m and y.shape[1] == n else y.unsqueeze(0).expand(m, *y.shape)
    was_training = net.training
    net.eval()
    total = torch.zeros(m, dtype=torch.float64, device=device)
    correct = torch.zeros(m, dtype=torch.int64, device=device)
    try:
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = y[:, start:start + batch_size].to(device)
            logits = net(net.inputs_shared(xb)).float()  # (M, b, ..., K)
            sums, hits = objective.member_summed_losses(logits, yb)
            total += sums
            correct += hits
    finally:
        net.train(was_training)
    count = objective.predictions(y[0])  # one member's predictions
    return (total / count).tolist(), (correct.double() / count).tolist()


__all__ = ["Execution", "CohortSGD", "CohortTrainResult", "train_cohort", "evaluate_cohort", "member_losses",
           "check_cohort_configs", "COMPILE_MODES", "PRECISIONS"]
