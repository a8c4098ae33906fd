"""One model trained by plain minibatch SGD on cross-entropy, reproducible and resumable bit for bit: the
training engine (workloads/cohort_train.py, where the method's SGD, schedule and batch order are written down)
run as a cohort of one.

Reproducibility: the batch order comes from a CPU ``torch.Generator`` seeded with ``config.seed`` (the same
order on every device); ``train`` also seeds the global torch/numpy/python RNGs with ``set_seed`` (a model with
dropout draws from them). It does not initialise the model: build it with
``workloads.models.seeded_model(name, seed, ...)`` (re-exported here) so the initial parameters are seeded too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from workloads.cohort_checkpoint import ResumeStateError  # noqa: F401  (re-exported: the refusal of a resume_state)
from workloads.cohort_net import build_cohort_net, member_state, resolve_backend
from workloads.cohort_train import (  # noqa: F401  (re-exported: the engine's rules, which train() follows)
    TrainingOOMError,
    checkpoint_due,
    learning_rate,
    set_seed,
    train_cohort,
)
from workloads.data import Dataset
from workloads.models import seeded_model  # noqa: F401  (re-exported: build the model under a seed)
from workloads.objective import evaluate_model
from workloads.settings import TrainConfig


@dataclass
class TrainResult:
    """model: the trained module (the one passed in, now on config.device).
    history: one dict per completed epoch (workloads.cohort_train.CohortTrainResult says which keys).
    status: "ok" or "diverged"; error: why it diverged, else None; epochs_completed: len(history).
    backend: the cohort backend that ran it (workloads.cohort_net.resolve_backend).
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None
    epochs_completed: int = 0
    backend: str = ""


def train(model: nn.Module, data: Dataset, config: TrainConfig, *,
          checkpoint_fn: Callable[[dict], None] | None = None, resume_state: dict | None = None,
          epoch_fn: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data.train_*`` and return it, holding the trained weights, with its per-epoch history.

    checkpoint_fn(state) is called after every ``config.checkpoint_every``-th epoch, and after the first epoch
    ending ``config.checkpoint_minutes`` after the last checkpoint (or the start; ``checkpoint_due``), with a
    self-contained CPU copy of the run (workloads/cohort_checkpoint.py: a cohort of one, global RNG states
    included; tensors and plain values only, so ``torch.load(..., weights_only=True)`` reads it back);
    passing that dict back as ``resume_state`` (with the same config) continues exactly where it stopped,
    giving parameters identical to an uninterrupted run. A resume_state that does not fit (other settings,
    another model, not a checkpoint) raises ResumeStateError.

    A non-finite batch loss ends training with status "diverged" (no exception); running out of device
    memory raises TrainingOOMError; batch_size > training-set size raises ValueError.

    epoch_fn(entry) is called after every epoch with its history entry (a copy: the sweep reports it to
    Tune). The test set is evaluated after the epochs ``eval_epochs(config.epochs, config.eval_every)``
    names, in eval mode without gradients and without drawing random numbers, so the weights are the same
    whatever ``eval_every`` is.
    """
    device = torch.device(config.device)
    set_seed(config.seed)
    backend = resolve_backend("auto", model, 1, data.train_x[:2])
    net = build_cohort_net(model, [model.state_dict()], backend, device)
    # Targets get the member axis of a cohort of one: (1, n, ...).
    test_set = (data.test_x, data.test_y.unsqueeze(0)) if data.test_y.shape[0] else None

    def report(entries: list[dict]) -> None:  # the one member's entry, without the cohort's member index
        epoch_fn({k: v for k, v in entries[0].items() if k != "member"})

    result = train_cohort(net, data.train_x, data.train_y.unsqueeze(0), [config], checkpoint_fn=checkpoint_fn,
                          resume_state=resume_state, test_set=test_set, epoch_fn=None if epoch_fn is None else report)
    model.to(device).load_state_dict(member_state(net.stacked_state(), 0))
    return TrainResult(model, result.histories[0], result.statuses[0], result.errors[0],
                       result.epochs_completed[0], backend)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy fraction) of ``model`` on x (n, *input_shape), y (n, ...) (see
    workloads.objective.evaluate_model: eval mode, no gradients, the model's mode restored)."""
    result = evaluate_model(model, x, y, batch_size=batch_size)
    return result.loss, result.accuracy


__all__ = ["TrainConfig", "TrainResult", "TrainingOOMError", "ResumeStateError", "train", "evaluate", "set_seed",
           "learning_rate", "checkpoint_due", "seeded_model"]
