"""The objective of every classification in the package, in one place: the cross-entropy of logits against
integer targets, the number of correct predictions and the number of predictions.

Shapes. logits (B, ..., V) and targets (B, ...) int64 with the same leading shape: every target position is one
classification. A class label per example is targets (B,) with logits (B, V); a token sequence is targets (B, T)
with logits (B, T, V) (every target token is one prediction: losses and accuracies are per token). A cohort of
M models adds a leading member axis to both: logits (M, B, ..., V), targets (M, B, ...).

Training, evaluation, the Hessian's loss, the Bezier curve's loss and error, CKA's outputs and the cohort
engine all use these functions, so a model with another output layout needs no change anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workloads.models import model_device


def flatten(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) logits and (N,) targets, N = targets.numel(): one row per prediction.

    ValueError naming both shapes when the logits do not have one more (class) axis than the targets.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"the model's outputs have shape {tuple(logits.shape)} but the targets {tuple(targets.shape)}: a model "
            f"must return one row of class scores per target, i.e. shape {(*targets.shape, 'classes')}"
        )
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)


def mean_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) over every prediction: a differentiable scalar (the training objective)."""
    flat_logits, flat_targets = flatten(logits, targets)
    return F.cross_entropy(flat_logits, flat_targets)


def summed_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of the cross-entropies (nats) of every prediction, computed in float64 (evaluation sums many)."""
    flat_logits, flat_targets = flatten(logits, targets)
    return F.cross_entropy(flat_logits.double(), flat_targets, reduction="sum")


def correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Number of predictions whose arg-max class is the target (an int64 scalar tensor, on the logits' device)."""
    flat_logits, flat_targets = flatten(logits, targets)
    return (flat_logits.argmax(dim=-1) == flat_targets).sum()


def predictions(targets: torch.Tensor) -> int:
    """Number of predictions ``targets`` asks for (its number of elements)."""
    return int(targets.numel())


def member_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member of a cohort: (mean cross-entropy (M,), correct predictions (M,) int64).

    logits (M, B, ..., V), targets (M, B, ...); the mean of member m is over its own B x ... predictions, so
    the gradient of the sum over members is, for each member, that of its own loss.
    """
    m = targets.shape[0]
    flat_logits, flat_targets = flatten(logits, targets)
    losses = F.cross_entropy(flat_logits, flat_targets, reduction="none").view(m, -1).mean(1)
    hits = (flat_logits.detach().argmax(-1) == flat_targets).view(m, -1).sum(1)
    return losses, hits


def member_summed_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member of a cohort: (summed cross-entropy (M,) in float64, correct predictions (M,) int64)."""
    m = targets.shape[0]
    flat_logits, flat_targets = flatten(logits, targets)
    sums = F.cross_entropy(flat_logits.double(), flat_targets, reduction="none").view(m, -1).sum(1)
    hits = (flat_logits.argmax(-1) == flat_targets).view(m, -1).sum(1)
    return sums, hits


def member_targets(targets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each member's targets at its own example indices: targets (M, n, ...), index (M, B) -> (M, B, ...)."""
    if targets.dim() == 2:
        return targets.gather(1, index)
    rows = torch.arange(targets.shape[0], device=index.device).unsqueeze(1)
    return targets[rows, index]


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class (last) axis in float64, flattened per example: (B, ..., V) -> (B, prod(...) * V).

    What CKA compares: one row per input, all of its predictions side by side."""
    return torch.softmax(logits.to(torch.float64), dim=-1).reshape(logits.shape[0], -1)


@dataclass(frozen=True)
class Evaluation:
    """loss_sum: summed cross-entropy (nats); correct: right predictions; count: predictions."""

    loss_sum: float
    correct: int
    count: int

    @property
    def loss(self) -> float:
        """Mean cross-entropy per prediction (nats)."""
        return self.loss_sum / self.count

    @property
    def accuracy(self) -> float:
        """Fraction of right predictions."""
        return self.correct / self.count


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> Evaluation:
    """Loss and accuracy of ``model`` on inputs x (n, ...) and targets y (n, ...): eval mode (BatchNorm running
    statistics), no gradients, batches of ``batch_size`` examples moved to the model's device; the model's
    train/eval mode is restored afterwards. ValueError on an empty set."""
    n = int(y.shape[0])
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model, x.device)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    right = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                xb = x[start:start + batch_size].to(device)
                yb = y[start:start + batch_size].to(device)
                logits = model(xb)
                total += summed_loss(logits, yb)
                right += correct(logits, yb)
    finally:
        model.train(was_training)
    return Evaluation(float(total), int(right), predictions(y))
