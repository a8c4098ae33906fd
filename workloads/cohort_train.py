"""The training engine: M >= 1 models of one architecture and step count trained as one (workloads/cohort_net.py);
workloads.train.train is its cohort of one. (Over ~400 lines: the training loop, its optimizer, its schedule,
its checkpoint hooks and its evaluation are one method.)

What the method fixes (method.md, section 2), per member: SGD with momentum, weight decay on every parameter,
minibatches drawn without replacement (a fresh permutation per epoch), the last partial batch dropped, a
constant learning rate or x0.1 at 75% of the epochs, and a batch size that is never changed to fit memory
because the batch size *is* the temperature being measured. Each member gets exactly what it would get alone:
- its batch order: a CPU ``torch.Generator`` seeded with its TrainConfig.seed draws one ``randperm(n)`` per
  epoch (the same order on every device), floor(n / B) steps;
- its initialisation (the state it was stacked from), its labels (label noise: same x, its own y);
- its learning rate (schedule and scaling), weight decay and momentum: ``CohortSGD`` is torch.optim.SGD's
  update per member: d = g + wd·p; buf = momentum·buf + d (buf = d on the first step); p -= lr·buf;
- its own BatchNorm batch and running statistics.
The loss is the sum of the members' mean cross-entropies, whose gradient for member m is exactly that of
its own loss. So a member's weights equal its run alone up to float rounding (bit for bit for the grouped
mlp on a CPU; a grouped convolution's weight gradient rounds by its group count: tests/workloads/test_cohort.py).

The global torch/numpy/python RNGs: nothing in a grouped or vmap training step draws from them (every draw is
from a member's own generator); the plain backend's (one member) forward may (dropout), so its member's seed
seeds them and checkpoints store them. A member whose loss goes non-finite is frozen (parameters, momentum,
BatchNorm statistics) and reported as diverged while the others continue. Non-finite losses are looked for
every DIVERGENCE_CHECK_STEPS steps: no host synchronisation per step; data stay on the device.

Execution settings (never part of the math beyond float rounding): backend (auto | fused | grouped | vmap |
plain), compile (off | default | reduce-overhead (CUDA graphs) | max-autotune: torch.compile of the forward +
loss; of the whole step for the fused backend),
precision (fp32 | bf16 autocast of the forward pass in training; evaluation is always fp32).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from workloads import objective
from workloads.cohort_checkpoint import checkpoint_state, restore_checkpoint
from workloads.cohort_fused import FlatSGD, FusedStep
from workloads.cohort_net import BACKENDS, CohortNet
# COMPILE_MODES and PRECISIONS are declared once, with the sweep's execution settings
from workloads.settings import COMPILE_MODES, PRECISIONS, TrainConfig, eval_epochs

EVAL_BATCH_SIZE = 1000  # examples per forward pass in evaluation (memory only)
# An epoch's batches are gathered once per epoch (a step then only slices a view) when the M permuted copies
# of the training inputs take at most this many bytes; otherwise each step gathers its own batch.
EPOCH_GATHER_BYTES = 256 * 2**20
STEP_AT_FRACTION = 0.75  # "step" schedule: lr x STEP_FACTOR from epoch int(0.75 * epochs) on (authors' code)
STEP_FACTOR = 0.1
# Non-finite losses are looked for every this many steps (and at each epoch end): one device sync per
# 32 steps instead of one per step, while the first bad step is still reported exactly.
DIVERGENCE_CHECK_STEPS = 32


class TrainingOOMError(RuntimeError):
    """The device ran out of memory; the batch size is never shrunk, so the trial fails instead."""


@dataclass(frozen=True)
class Execution:
    """How a cohort runs. backend: "auto" (cohort_net.resolve_backend) or one of cohort_net.BACKENDS; compile:
    torch.compile mode of the training forward pass or "off"; precision: "fp32" or "bf16" (autocast, training
    only)."""

    backend: str = "auto"
    compile: str = "off"
    precision: str = "fp32"

    def __post_init__(self):
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"execution backend must be auto or one of {BACKENDS}, got {self.backend!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"execution compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"execution precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class CohortTrainResult:
    """Per member (lists of length M): history, one dict per completed epoch: epoch (0-based), lr, train_loss
    (mean over the epoch's batches, train mode), train_acc (fraction, same batches), seconds (wall time of the
    epoch's steps), and test_loss / test_acc (full test set, eval mode) after the epochs of ``eval_every``
    (None at the others); status "ok" | "diverged"; error (why it diverged: epoch, step, loss, lr, batch size)
    or None; epochs_completed. net: the trained cohort, on the training device."""

    net: CohortNet
    histories: list[list[dict]]
    statuses: list[str]
    errors: list[str | None]
    epochs_completed: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------
# Seeds, learning rate, checkpoint timing


def set_seed(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate used throughout epoch ``epoch`` (0-based)."""
    lr = config.lr
    if config.lr_scaling == "linear":
        lr = lr * config.batch_size / config.base_batch_size
    if config.schedule == "step" and epoch >= int(STEP_AT_FRACTION * config.epochs):
        lr = lr * STEP_FACTOR
    return lr


def checkpoint_due(epochs_done: int, every: int, minutes: float, seconds_since: float) -> bool:
    """Whether a training writes its checkpoint after ``epochs_done`` epochs: every ``every``-th epoch
    (``checkpoint_every``; 0 = off), or once ``minutes`` (``checkpoint_minutes``; 0 = off) have passed since
    the last checkpoint or the start (``seconds_since``)."""
    return bool(every and epochs_done % every == 0) or bool(minutes and seconds_since >= minutes * 60)


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


def make_train_step(net: CohortNet, params: list[torch.Tensor], configs: list[TrainConfig], execution: Execution,
                    device: torch.device) -> tuple[CohortSGD | FlatSGD, Callable]:
    """(optimiser, step) for the epoch loop: step(inputs, labels, active) -> (losses (M,), correct (M,)) does one
    SGD step of every member (active: None, or (M,) bool with the frozen members False).

    The fused backend in fp32: workloads/cohort_fused.py's hand-written step (compiled whole if
    execution.compile says so). Otherwise the loss by ``make_loss_step``, its gradient by autograd, and
    CohortSGD (also for a fused net under bf16 autocast, whose backward the fused step does not write out)."""
    if net.backend == "fused" and execution.precision == "fp32":
        flat = FlatSGD.for_training(params, configs, device)
        return flat, FusedStep(net, flat, execution.compile)
    sgd = CohortSGD.for_training(params, configs, device)
    loss_step = make_loss_step(net, execution, device)

    def step(inputs, labels, active):
        losses, correct = loss_step(inputs, labels)
        sgd.step(torch.autograd.grad(losses.sum(), params), active)
        return losses.detach(), correct

    return sgd, step


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
        raise ValueError(f"TrainConfig.batch_size={b} exceeds the training-set size n={n} (it is never shrunk: "
                         "the batch size is the experiment)")


def check_member_targets(y: torch.Tensor, m: int, n: int, name: str) -> None:
    """ValueError unless ``y`` is (M, n, ...): each member's targets, one row (a label, or a sequence's tokens)
    per example. Never guessed from the shape: (n, T) token targets and (M, n) labels look alike."""
    if y.dim() < 2 or tuple(y.shape[:2]) != (m, n):
        raise ValueError(f"{name} must be (M, n, ...) = ({m}, {n}, ...): each member's targets (targets all "
                         f"members share: y.expand({m}, *y.shape)), got {tuple(y.shape)}")


def train_cohort(net: CohortNet, train_x: torch.Tensor, train_y: torch.Tensor, configs: list[TrainConfig], *,
                 execution: Execution = Execution(), checkpoint_fn: Callable[[dict], None] | None = None,
                 resume_state: dict | None = None, members: list[str] | None = None,
                 test_set: tuple[torch.Tensor, torch.Tensor] | None = None,
                 epoch_fn: Callable[[list[dict]], None] | None = None) -> CohortTrainResult:
    """Train the M members of ``net`` in place; train_x (n, *input_shape) shared, train_y (M, n, ...) each
    member's targets (a label per example, or a sequence's tokens: workloads/objective.py).

    test_set: (test_x, test_y (M, n_test, ...)); with it the test loss and accuracy of every active
    member are added to its history after the epochs ``eval_epochs(epochs, eval_every)`` (eval mode: the
    weights and BatchNorm statistics of training are not changed). epoch_fn(entries)
    is called after every epoch with the history entries of the members still active (for live progress),
    each with its ``member`` index added (not in the history).

    configs: one TrainConfig per member (same epochs, batch_size, device; any lr, momentum, weight decay,
    schedule, seed). checkpoint_fn(state) is called when ``checkpoint_due`` says (every
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
    check_member_targets(train_y, net.members, n, "train_y")
    if test_set is not None:
        check_member_targets(test_set[1], net.members, int(test_set[0].shape[0]), "test_set's targets")
    device = torch.device(configs[0].device)
    try:
        return _train(net, train_x, train_y, configs, execution, device, checkpoint_fn, resume_state, members,
                      test_set, epoch_fn)
    except torch.cuda.OutOfMemoryError as err:
        params = sum(p[0].numel() for p in net.params().values())
        what, remedy = ((f"a {params:,}-parameter model", "run this trial on a device with more memory or drop it "
                         "from the grid") if net.members == 1 else
                        (f"a cohort of {net.members} models of {params:,} parameters", "use fewer members per "
                         "cohort or a device with more memory"))
        raise TrainingOOMError(
            f"out of memory on {device} training {what} at batch_size={configs[0].batch_size} (n={n}); the batch "
            f"size is the experiment and is never shrunk: {remedy}") from err


def _train(net, train_x, train_y, configs, execution, device, checkpoint_fn, resume_state,
           members, test_set=None, epoch_fn=None) -> CohortTrainResult:
    m, n = net.members, int(train_x.shape[0])
    batch, epochs = configs[0].batch_size, configs[0].epochs
    every, minutes = configs[0].checkpoint_every, configs[0].checkpoint_minutes
    steps = n // batch
    net.to(device)
    x = train_x.to(device)
    y = train_y.to(device)
    params = [p for p in net.params().values() if p.requires_grad]
    sgd, train_step = make_train_step(net, params, configs, execution, device)
    orders = [torch.Generator(device="cpu").manual_seed(c.seed) for c in configs]
    run = _Run(histories=[[] for _ in range(m)], errors=[None] * m)
    if net.backend == "plain":  # its forward may draw from the global generators (dropout): seeded as the member
        set_seed(configs[0].seed)
    start = 0
    if resume_state is not None:
        start = restore_checkpoint(resume_state, net, sgd, orders, run, configs, members)
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
            step_losses, step_correct = train_step(inputs, labels, None if all_active else active)
            losses[step] = step_losses
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
        # In float64, where an epoch's float32 losses (24-bit mantissas a few binades apart) sum exactly in any
        # order: a member's mean does not depend on how many members share the (steps, M) tensor, whose float32
        # mean over dim 0 rounds by its layout.
        mean_loss = losses.double().mean(0).tolist()
        accuracy = (correct.double() / (steps * batch * per_example)).tolist()
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
    if isinstance(sgd, FlatSGD):
        sgd.release()
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
    """Per member (mean cross-entropy, accuracy) on x (n, *input_shape), y (M, n, ...) each member's targets, as
    workloads.train.evaluate: eval mode (running statistics), fp32, batches of ``batch_size``."""
    n, m = int(x.shape[0]), net.members
    if n == 0:
        raise ValueError("evaluate_cohort() needs at least one example")
    device = next(iter(net.params().values())).device
    check_member_targets(y, m, n, "y")
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


__all__ = ["Execution", "CohortSGD", "CohortTrainResult", "TrainingOOMError", "train_cohort", "evaluate_cohort",
           "member_losses", "make_train_step", "check_cohort_configs", "check_member_targets", "set_seed",
           "learning_rate", "checkpoint_due", "DIVERGENCE_CHECK_STEPS", "COMPILE_MODES", "PRECISIONS"]
