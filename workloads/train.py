"""Plain minibatch SGD on cross-entropy, reproducible and resumable bit for bit.

What the method fixes (method.md, section 2): SGD with momentum, weight decay on every parameter,
minibatches drawn without replacement (a fresh permutation per epoch), the last partial batch dropped,
a constant learning rate or x0.1 at 75% of the epochs, and a batch size that is never changed to fit
memory because the batch size *is* the temperature being measured.

Reproducibility: the batch order comes from a CPU ``torch.Generator`` seeded with ``config.seed`` (the same
order on every device); ``train`` also seeds the global torch/numpy/python RNGs with ``set_seed``. It does
not initialise the model: build it with ``workloads.models.seeded_model(name, seed, ...)`` (re-exported
here) so the initial parameters are seeded too.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from workloads import objective
from workloads.data import Dataset
from workloads.models import seeded_model  # noqa: F401  (re-exported: build the model under a seed)
from workloads.objective import evaluate_model
from workloads.settings import LR_SCALINGS, SCHEDULES, TrainConfig, eval_epochs  # noqa: F401  (re-exported)

STEP_AT_FRACTION = 0.75  # "step" schedule: lr x STEP_FACTOR from epoch int(0.75 * epochs) on (authors' code)
STEP_FACTOR = 0.1
# Non-finite losses are looked for every this many steps (and at each epoch end): one device sync per
# 32 steps instead of one per step, while the first bad step is still reported exactly.
DIVERGENCE_CHECK_STEPS = 32
# Config fields that may differ between a checkpointed run and its resumption (they do not change the math).
RESUME_MAY_DIFFER = ("device", "checkpoint_every", "checkpoint_minutes", "eval_every")


@dataclass
class TrainResult:
    """model: the trained module (the one passed in, now on config.device).
    history: one dict per completed epoch: epoch (0-based), lr, train_loss (mean over the epoch's batches,
    train mode), train_acc (fraction, same batches), seconds (wall time of the epoch's steps), and test_loss /
    test_acc (full test set, eval mode) after the epochs of ``config.eval_every`` (None at the others).
    status: "ok" or "diverged"; error: why it diverged, else None; epochs_completed: len(history).
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None
    epochs_completed: int = 0


def checkpoint_due(epochs_done: int, every: int, minutes: float, seconds_since: float) -> bool:
    """Whether a training writes its checkpoint after ``epochs_done`` epochs: every ``every``-th epoch
    (``checkpoint_every``; 0 = off), or once ``minutes`` (``checkpoint_minutes``; 0 = off) have passed since
    the last checkpoint or the start (``seconds_since``). One rule for one model and a cohort."""
    return bool(every and epochs_done % every == 0) or bool(minutes and seconds_since >= minutes * 60)


class TrainingOOMError(RuntimeError):
    """The device ran out of memory; the batch size is never shrunk, so the trial fails instead."""


class _Diverged(Exception):
    def __init__(self, step: int, loss: float):
        super().__init__(step, loss)
        self.step, self.loss = step, loss


# --------------------------------------------------------------------------------------------------------
# Seeds and learning rate

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


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum; weight decay on all parameters (one group), as in the authors' code."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


# --------------------------------------------------------------------------------------------------------
# Training

def train(model: nn.Module, data: Dataset, config: TrainConfig, *,
          checkpoint_fn: Callable[[dict], None] | None = None, resume_state: dict | None = None,
          epoch_fn: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``data.train_*`` and return it with its per-epoch history.

    checkpoint_fn(state) is called after every ``config.checkpoint_every``-th epoch, and after the first epoch
    ending ``config.checkpoint_minutes`` after the last checkpoint (or the start; :func:`checkpoint_due`), with a self-contained
    CPU copy of the run (epoch = epochs completed, model, optimizer, history, generator and RNG states,
    config; tensors and plain values only, so ``torch.load(..., weights_only=True)`` reads it back);
    passing that dict back as ``resume_state`` (with the same config) continues exactly where it stopped,
    giving parameters identical to an uninterrupted run. A resume_state that does not fit (other settings,
    another model, not a checkpoint) raises ResumeStateError.

    A non-finite batch loss ends training with status "diverged" (no exception); running out of device
    memory raises TrainingOOMError; batch_size > training-set size raises ValueError.

    epoch_fn(entry) is called after every epoch with its history entry (a live view: the sweep reports it
    to Tune). The test set is evaluated after the epochs ``eval_epochs(config.epochs, config.eval_every)``
    names, in eval mode without gradients and without drawing random numbers, so the weights are the same
    whatever ``eval_every`` is.
    """
    n = data.train_size
    if config.batch_size > n:
        raise ValueError(
            f"TrainConfig.batch_size={config.batch_size} exceeds the training-set size n={n} of "
            f"{data.name!r}; it is never shrunk: the batch size is the experiment"
        )
    try:
        return _train(model, data, config, checkpoint_fn, resume_state, epoch_fn)
    except torch.cuda.OutOfMemoryError as err:
        raise _oom_error(model, config, n) from err


def _train(model: nn.Module, data: Dataset, config: TrainConfig, checkpoint_fn, resume_state, epoch_fn) -> TrainResult:
    """The body of train() after argument checks (see there)."""
    n = data.train_size
    device = torch.device(config.device)
    set_seed(config.seed)
    model.to(device)
    data = data.to(device)
    optimizer = make_optimizer(model, config)
    order = torch.Generator(device="cpu").manual_seed(config.seed)  # batch order, device-independent
    history: list[dict] = []
    start = 0
    if resume_state is not None:
        start, history = _restore(resume_state, model, optimizer, order, config)

    evaluated = eval_epochs(config.epochs, config.eval_every)
    model.train()
    last_checkpoint = time.monotonic()
    for epoch in range(start, config.epochs):
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        began = time.perf_counter()
        try:
            loss, acc = _run_epoch(model, optimizer, data.train_x, data.train_y, config.batch_size, order)
        except _Diverged as d:
            error = (f"diverged: non-finite batch loss {d.loss} at epoch {epoch} (0-based), step {d.step} of "
                     f"{n // config.batch_size}; lr={lr}, batch_size={config.batch_size}")
            return TrainResult(model, history, "diverged", error, len(history))
        entry = {"epoch": epoch, "lr": lr, "train_loss": loss, "train_acc": acc,
                 "seconds": time.perf_counter() - began, "test_loss": None, "test_acc": None}
        if epoch in evaluated and data.test_y.shape[0]:
            entry["test_loss"], entry["test_acc"] = evaluate(model, data.test_x, data.test_y)
        history.append(entry)
        if epoch_fn is not None:
            epoch_fn(dict(entry))
        if checkpoint_fn is not None and checkpoint_due(epoch + 1, config.checkpoint_every, config.checkpoint_minutes,
                                                        time.monotonic() - last_checkpoint):
            checkpoint_fn(_checkpoint_state(epoch + 1, model, optimizer, history, order, config))
            last_checkpoint = time.monotonic()
    return TrainResult(model, history, "ok", None, len(history))


def _run_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               batch_size: int, order: torch.Generator) -> tuple[float, float]:
    """One pass of floor(n / B) steps over a fresh permutation; returns (mean batch loss, accuracy).

    x: (n, *input_shape), y: (n,) on the model's device. Raises _Diverged at the first non-finite loss.
    """
    n = x.shape[0]
    steps = n // batch_size  # the last partial batch is dropped
    perm = torch.randperm(n, generator=order).to(x.device)  # drawn on CPU: same order on any device
    losses = torch.empty(steps, device=x.device)  # kept on device: no sync per step
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    checked = 0
    per_example = objective.predictions(y[:1])  # predictions per example (1, or a sequence's targets)
    for step in range(steps):
        idx = perm[step * batch_size:(step + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        logits = model(xb)  # (B, ..., num_classes)
        loss = objective.mean_loss(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step] = loss.detach()
        correct += objective.correct(logits.detach(), yb)
        if (step + 1) % DIVERGENCE_CHECK_STEPS == 0 or step == steps - 1:
            _check_finite(losses, checked, step + 1)
            checked = step + 1
    return float(losses.mean()), int(correct) / (steps * batch_size * per_example)


def _check_finite(losses: torch.Tensor, start: int, stop: int) -> None:
    """Raise _Diverged with the first step in [start, stop) whose loss is NaN or infinite."""
    bad = ~torch.isfinite(losses[start:stop])
    if bool(bad.any()):
        step = start + int(bad.nonzero()[0, 0])
        raise _Diverged(step, float(losses[step]))


def _oom_error(model: nn.Module, config: TrainConfig, n: int) -> TrainingOOMError:
    params = sum(p.numel() for p in model.parameters())
    return TrainingOOMError(
        f"out of memory on {config.device} training a {params:,}-parameter model with batch_size="
        f"{config.batch_size} (n={n}); the batch size is the experiment and is never shrunk: run this "
        f"trial on a device with more memory or drop it from the grid"
    )


# --------------------------------------------------------------------------------------------------------
# Checkpoints

def _to_cpu(obj):
    """Deep copy of nested dicts/lists/tuples with every tensor detached and cloned onto the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def _rng_state() -> dict:
    """The global torch / numpy / python RNG states as tensors and plain numbers only.

    A checkpoint must load with ``torch.load(..., weights_only=True)``, which refuses anything but tensors,
    containers and primitives (it never calls code named by the file): numpy's state (an ndarray inside a
    tuple) and python's (a tuple of 625 ints) are stored as int64 tensors plus numbers.
    """
    _kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # kind is always MT19937
    version, internal, gauss_next = random.getstate()
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }
    if torch.cuda.is_available():
        rng["cuda"] = [s.detach().cpu() for s in torch.cuda.get_rng_state_all()]
    return rng


def _set_rng_state(rng: dict) -> None:
    """Inverse of _rng_state."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "numpy" in rng:
        n = rng["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if "python" in rng:
        p = rng["python"]
        random.setstate((int(p["version"]), tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _checkpoint_state(epochs_done: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                      history: list[dict], order: torch.Generator, config: TrainConfig) -> dict:
    """Everything needed to continue the run; a CPU copy, safe to keep while training goes on.

    Only tensors, dicts, lists and primitives: ``torch.load(path, weights_only=True)`` reads it back.
    """
    return {
        "epoch": epochs_done,
        "model": _to_cpu(model.state_dict()),
        "optimizer": _to_cpu(optimizer.state_dict()),
        "history": copy.deepcopy(history),
        "generator": order.get_state(),
        "rng": _rng_state(),
        "config": dataclasses.asdict(config),
    }


class ResumeStateError(ValueError):
    """A resume_state (a training checkpoint) that cannot continue this training: made with other settings,
    for another model, or not a checkpoint of ``train`` at all. The caller starts from epoch 0 instead."""


def _restore(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer, order: torch.Generator,
             config: TrainConfig) -> tuple[int, list[dict]]:
    """Load a checkpoint into model/optimizer/generator/global RNGs; returns (next epoch, history).

    Raises ResumeStateError (nothing of the training is used then) when the state does not fit.
    """
    if not isinstance(state, dict):
        raise ResumeStateError(f"resume_state is a {type(state).__name__}, not a training checkpoint")
    saved = state.get("config", {})
    if not isinstance(saved, dict):
        raise ResumeStateError("resume_state has no training config")
    differ = sorted(k for k, v in dataclasses.asdict(config).items()
                    if k not in RESUME_MAY_DIFFER and k in saved and saved[k] != v)
    if differ:
        detail = ", ".join(f"{k}: checkpoint {saved[k]!r} vs now {getattr(config, k)!r}" for k in differ)
        raise ResumeStateError(f"resume_state was made with a different TrainConfig ({detail})")
    try:
        epoch, history = int(state["epoch"]), copy.deepcopy(list(state["history"]))
        if not 0 <= epoch <= config.epochs:
            raise ValueError(f"epoch {epoch} outside [0, {config.epochs}]")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])  # moves momentum buffers to the parameters' device
        order.set_state(state["generator"])
        _set_rng_state(state.get("rng", {}))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise ResumeStateError(f"resume_state does not fit this training ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:200]})") from None
    return epoch, history


# --------------------------------------------------------------------------------------------------------
# Evaluation

def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy fraction) of ``model`` on x (n, *input_shape), y (n, ...) (see
    workloads.objective.evaluate_model: eval mode, no gradients, the model's mode restored)."""
    result = evaluate_model(model, x, y, batch_size=batch_size)
    return result.loss, result.accuracy


__all__ = ["TrainConfig", "TrainResult", "TrainingOOMError", "ResumeStateError", "train", "evaluate", "set_seed",
           "learning_rate", "make_optimizer", "seeded_model", "DIVERGENCE_CHECK_STEPS"]
