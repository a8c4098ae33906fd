"""The fused training step of MLP cohorts (backend "fused", cohort_net.FusedNet): forward, backward and SGD
written out, no autograd and no per-parameter Python loop.

Why: a narrow MLP's cohort step was framework-bound (autograd, the loss, CohortSGD's loop over parameters:
~60% of a step at width 32), and a wide one paid 12-15% for copying bmm's transposed weight gradients
(docs/benchmarks.md "Cohorts: the fused MLP step"). Here

- every trainable parameter is a view into one (M, P) buffer (member m's P numbers in row m), its gradient
  and momentum buffer likewise, so SGD is four whole-buffer operations with (M, 1) per-member factors;
- a Linear's weight is stored transposed, W^T (in, out) row-major per member, the layout of the products:
  the forward is H @ W^T, the input gradient dZ @ W, and the weight gradient one bmm, d(W^T) = H^T @ dZ,
  copied into its place as it comes (no transposed copy). The parameter the net, its state dict and checkpoints
  see is the (M, out, in) transposed view of that block;
- the loss is what the autograd path differentiates: the sum over members of each member's mean
  cross-entropy over its batch, so member m's gradient is that of its own loss, dZ_last = (softmax - onehot) / B.

The update is torch.optim.SGD's arithmetic per element and member (as CohortSGD's): d = g + wd*p;
buf = momentum*buf + d (buf = d on the first step: buffers start at zero); p = p - lr*buf. Every operation
acts on each member's row alone (bmm per member, reductions over its own batch, elementwise ops with its own
factors), so a member's weights do not depend on the cohort's size or company: bit for bit on one host
(tests/workloads/test_cohort_fused.py). The products are those autograd takes for the grouped layers; the other
orientation of the weight gradient, dZ^T @ H, was not: at two threads a cohort of one rounded it differently
from a cohort of three when `out` was 10 (the BLAS threads a single product otherwise).
"""

from __future__ import annotations

import torch

from workloads.cohort_net import FusedNet, MemberFlatten
from workloads.settings import TrainConfig


class FlatSGD:
    """CohortSGD's state over (M, P) buffers: the cohort's trainable parameters become views into ``flat``
    (their values copied in), their gradients live in ``grad``, their momentum buffers in ``velocity``.

    params: the stacked (M, *shape) parameters in the net's order (re-pointed in place, so the net, its state
    dict and checkpoints see the views). A 3-D one, a Linear's weight (M, out, in), is stored as (M, in, out)
    and seen through its transpose (``layer_views``). ``buffers`` (read and assigned, as CohortSGD's list) are the momentum
    buffers as views shaped like ``params``; assigning copies the values in (a checkpoint's). lr, momentum,
    weight_decay: one number per member, held as (M, 1) tensors of the parameters' dtype. The update itself is
    ``sgd_update``, run by ``FusedStep`` after the backward.
    """

    def __init__(self, params: list[torch.Tensor], *, lr: list[float], momentum: list[float],
                 weight_decay: list[float], device: torch.device):
        m = params[0].shape[0]
        sizes = [p[0].numel() for p in params]
        dtype = params[0].dtype
        self.flat = torch.cat([_stored(p.detach()).reshape(m, -1) for p in params], dim=1).to(device)
        self.grad = torch.zeros_like(self.flat)
        self.velocity = torch.zeros_like(self.flat)
        self.params = params
        self._buffers = _views(self.velocity, params, sizes)
        with torch.no_grad():
            for p, view in zip(params, _views(self.flat, params, sizes)):
                p.data = view
        self.device, self.dtype = device, dtype
        self.lr = self._factor(lr)
        self.momentum = self._factor(momentum)
        self.weight_decay = self._factor(weight_decay)

    @classmethod
    def for_training(cls, params: list[torch.Tensor], configs: list[TrainConfig], device) -> "FlatSGD":
        return cls(params, lr=[c.lr for c in configs], momentum=[c.momentum for c in configs],
                   weight_decay=[c.weight_decay for c in configs], device=device)

    def _factor(self, values: list[float]) -> torch.Tensor:
        return torch.tensor([float(v) for v in values], dtype=self.dtype, device=self.device).view(-1, 1)

    def set_lr(self, lrs: list[float]) -> None:
        self.lr = self._factor(lrs)

    @property
    def buffers(self) -> list[torch.Tensor]:
        return self._buffers

    @buffers.setter
    def buffers(self, values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for view, value in zip(self._buffers, values):
                view.copy_(value)


def _stored(p: torch.Tensor) -> torch.Tensor:
    """A parameter in its stored orientation: a Linear's weight (M, out, in) as (M, in, out), others as they are."""
    return p.transpose(1, 2) if p.dim() == 3 else p


def _views(flat: torch.Tensor, params: list[torch.Tensor], sizes: list[int]) -> list[torch.Tensor]:
    """Views of flat (M, P) shaped as ``params``, consecutive in their order (weights through ``_stored``)."""
    out, start = [], 0
    for p, size in zip(params, sizes):
        out.append(_stored(flat[:, start:start + size].view(_stored(p).shape)))
        start += size
    return out


def sgd_update(flat: torch.Tensor, grad: torch.Tensor, velocity: torch.Tensor, lr: torch.Tensor,
               weight_decay: torch.Tensor, momentum: torch.Tensor) -> None:
    """torch.optim.SGD's step for every member at once, in place: flat, grad, velocity (its momentum buffer)
    (M, P); lr, weight_decay, momentum (M, 1). grad is overwritten by d = g + wd*p."""
    d = grad.addcmul_(weight_decay, flat)
    velocity.mul_(momentum).add_(d)
    flat.addcmul_(lr, velocity, value=-1.0)


def layer_views(flat: torch.Tensor, layout: tuple[tuple[int, int], ...]
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(transposed weights [(M, in, out)], biases [(M, out)]): views of flat (M, P) holding the Linear layers of
    ``layout`` ((out, in) per layer) as FlatSGD packs a FusedNet's parameters: W^T then bias, layer after layer."""
    m = flat.shape[0]
    weights, biases, start = [], [], 0
    for out_features, in_features in layout:
        weights.append(flat[:, start:start + out_features * in_features].view(m, in_features, out_features))
        start += out_features * in_features
        biases.append(flat[:, start:start + out_features])
        start += out_features
    return weights, biases


def forward_backward(flat: torch.Tensor, grad: torch.Tensor, layout: tuple[tuple[int, int], ...], x: torch.Tensor,
                     y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One MLP cohort's loss and gradients: flat (M, P) its parameters (``layer_views``), x (M, B, in) inputs,
    y (M, B) int64 labels. The gradient of the sum over members of their mean cross-entropies is written into
    grad (M, P), laid out as flat. Returns (mean cross-entropy per member (M,), correct predictions per member
    (M,) int64).

    Each gradient is computed into a fresh tensor and copied into its place (a plain copy: same orientation).
    Written with out= into the view, whose member stride is P, bmm took another path for M > 1 than for a
    cohort of one (whose view is contiguous) and rounded the last layer's gradient differently; torch.compile
    cannot trace such an out= either."""
    weights, biases = layer_views(flat, layout)  # W^T (M, in, out)
    weight_grads, bias_grads = layer_views(grad, layout)
    hidden = [x]  # the input of every Linear
    z = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = torch.baddbmm(b.unsqueeze(1), hidden[-1], w)
        if i < len(weights) - 1:
            hidden.append(z.relu())
    labels = y.unsqueeze(2)
    log_p = torch.log_softmax(z, dim=2)
    losses = -log_p.gather(2, labels).squeeze(2).mean(1)
    correct = (z.argmax(2) == y).sum(1)
    dz = log_p.exp()  # softmax; minus the one-hot target, over the batch size: d(mean loss) / d logits
    dz = dz.scatter_add(2, labels, torch.full(labels.shape, -1.0, dtype=dz.dtype, device=dz.device))
    dz = dz / x.shape[1]
    for i in range(len(weights) - 1, -1, -1):
        weight_grads[i].copy_(torch.bmm(hidden[i].transpose(1, 2), dz))
        bias_grads[i].copy_(dz.sum(1))
        if i:
            # ReLU's backward, autograd's own kernel (0 where the ReLU's output is <= 0): one pass, not two
            dz = torch.ops.aten.threshold_backward(torch.bmm(dz, weights[i].transpose(1, 2)), hidden[i], 0)
    return losses, correct


def fused_step(flat: torch.Tensor, grad: torch.Tensor, velocity: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               lr: torch.Tensor, weight_decay: torch.Tensor, momentum: torch.Tensor,
               layout: tuple[tuple[int, int], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and SGD update of every member, in place on flat, grad and velocity (M, P): what
    FusedStep runs, eager or compiled (a module-level function of tensors and the layout only, so one
    compilation serves every cohort of the same shapes)."""
    losses, correct = forward_backward(flat, grad, layout, x, y)
    sgd_update(flat, grad, velocity, lr, weight_decay, momentum)
    return losses, correct


_COMPILED: dict[str, object] = {}  # torch.compile mode -> compiled fused_step


class FusedStep:
    """The training step of a FusedNet: ``step(inputs, labels, active)`` -> (losses (M,), correct (M,)), the
    parameters updated in place. inputs as ``net.inputs`` makes them (M, B, *input_shape), labels (M, B);
    active: None or (M,) bool (False: a frozen member). compile: a torch.compile mode for forward, backward
    and update together, or "off"."""

    def __init__(self, net: FusedNet, sgd: FlatSGD, compile: str = "off"):
        order = [t for layer in net.linears for t in (layer.weight, layer.bias)]
        if [id(t) for t in order] != [id(p) for p in sgd.params]:  # layer_views' packing
            raise ValueError("FlatSGD must hold the FusedNet's parameters, weight then bias, layer after layer")
        self.layout = tuple((layer.weight.shape[1], layer.weight.shape[2]) for layer in net.linears)
        self.flatten = isinstance(next(iter(net.module.children())), MemberFlatten)
        self.sgd = sgd
        if compile == "off":
            self._step = fused_step
        else:
            if compile not in _COMPILED:
                _COMPILED[compile] = torch.compile(fused_step, mode=compile, dynamic=False)
            self._step = _COMPILED[compile]

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor, active: torch.Tensor | None = None):
        if labels.dim() != 2:
            raise ValueError(f"the fused MLP step trains on one label per example, (M, B) targets; got "
                             f"{tuple(labels.shape)}")
        x = inputs.flatten(2) if self.flatten else inputs
        sgd = self.sgd

        def run():
            return self._step(sgd.flat, sgd.grad, sgd.velocity, x, labels, sgd.lr, sgd.weight_decay, sgd.momentum,
                              self.layout)

        if active is None:
            return run()
        # Frozen members: every member steps with the arithmetic of a cohort where all step (so an active
        # member's weights do not depend on another's divergence), then the frozen rows of parameters and
        # momentum are put back bit for bit (advanced indexing copies them).
        inactive = ~active
        saved = sgd.flat[inactive], sgd.velocity[inactive]
        out = run()
        sgd.flat[inactive], sgd.velocity[inactive] = saved
        return out


__all__ = ["FlatSGD", "FusedStep", "forward_backward", "fused_step", "layer_views", "sgd_update"]
