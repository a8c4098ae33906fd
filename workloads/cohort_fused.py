"""The fused training step of MLP cohorts (backend "fused", cohort_net.FusedNet): forward, backward and SGD
written out, no autograd and no per-parameter Python loop.

Why: a narrow MLP's cohort step was framework-bound (autograd, the loss, CohortSGD's loop over parameters:
~60% of a step at width 32), and a wide one paid 12-15% for copying bmm's transposed weight gradients
(docs/benchmarks.md "Cohorts: the fused MLP step"). Here

- every trainable parameter is a view into one (M, P) buffer (member m's P numbers in row m), its gradient
  and momentum buffer likewise, so the momentum and the parameter updates are one whole-buffer operation each
  with (M, 1) per-member factors;
- a Linear's weight is stored transposed, W^T (in, out) row-major per member, followed by its bias: one
  (in + 1, out) block [W^T; b], the layout of the products. With a column of ones appended to its input H,
  the forward is one bmm, [H, 1] @ [W^T; b], the weight and bias gradients one bmm, [H, 1]^T @ dZ (no bias
  sum), put into place with the weight decay added as it comes (no transposed copy, no pass of its own), and
  the input gradient dZ @ W. While it trains, the parameter the net, its state dict and checkpoints see is
  the (M, out, in) transposed view of the W^T rows (``FlatSGD.release`` gives it its own contiguous copy at
  the end);
- the last layer's classes are padded to a multiple of 16 with classes of logit -inf (``LOGIT_PAD``): MKL's
  products with 10 output columns ran at a fifth of the speed;
- the views and buffers a step uses are made once per batch size (``StepBuffers``): made per step their Python
  time rivalled a narrow step's arithmetic;
- the loss is what the autograd path differentiates: the sum over members of each member's mean
  cross-entropy over its batch, so member m's gradient is that of its own loss, dZ_last = (softmax - onehot) / B.

The update is torch.optim.SGD's arithmetic per element and member (as CohortSGD's): d = g + wd*p;
buf = momentum*buf + d (buf = d on the first step: buffers start at zero); p = p - lr*buf, the first two
each one fused multiply-add (addcmul), so to rounding, not bit for bit, torch's. Every operation
acts on each member's row alone (bmm per member, reductions over its own batch, elementwise ops with its own
factors), so a member's weights do not depend on the cohort's size or company: bit for bit on one host
(tests/workloads/test_cohort_fused.py). The products are those autograd takes for the grouped layers; the other
orientation of the weight gradient, dZ^T @ H, was not: at two threads a cohort of one rounded it differently
from a cohort of three when `out` was 10 (the BLAS threads a single product otherwise).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from workloads.cohort_net import FusedNet, MemberFlatten
from workloads.settings import TrainConfig


class FlatSGD:
    """CohortSGD's state over (M, P) buffers: the cohort's trainable parameters become views into ``flat``
    (their values copied in), their gradients (with the weight decay added: d = g + wd*p) live in ``grad``,
    their momentum buffers in ``velocity``.

    params: the stacked (M, *shape) parameters in the net's order (re-pointed in place, so the net, its state
    dict and checkpoints see the views). A 3-D one, a Linear's weight (M, out, in), is stored as (M, in, out)
    and seen through its transpose (``layer_blocks``). ``buffers`` (read and assigned, as CohortSGD's list) are
    the momentum buffers as views shaped like ``params``; assigning copies the values in (a checkpoint's). lr, momentum,
    weight_decay: one number per member, held as (M, 1) tensors of the parameters' dtype. The update itself is
    ``forward_backward``'s weight decay and ``sgd_update``, run by ``FusedStep``.
    """

    def __init__(self, params: list[torch.Tensor], *, lr: list[float], momentum: list[float],
                 weight_decay: list[float], device: torch.device):
        sizes = [p[0].numel() for p in params]
        dtype = params[0].dtype
        self.flat = packed(params).to(device)
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

    def release(self) -> None:
        """End of training: every parameter gets a contiguous copy of its values in the net's own layout
        ((M, out, in) for a weight), so the trained net holds ordinary tensors, not transposed views of ``flat``
        (which code calling .view() on a parameter would trip over) and its forward copies nothing per call."""
        with torch.no_grad():
            for p in self.params:
                p.data = p.data.contiguous()

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


def packed(params: list[torch.Tensor]) -> torch.Tensor:
    """A copy of the stacked (M, *shape) ``params`` as FlatSGD lays them out: (M, P), member m's numbers in row m,
    parameter after parameter, a Linear's weight as W^T."""
    m = params[0].shape[0]
    return torch.cat([_stored(p.detach()).reshape(m, -1) for p in params], dim=1)


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


def sgd_update(flat: torch.Tensor, decayed: torch.Tensor, velocity: torch.Tensor, lr: torch.Tensor,
               momentum: torch.Tensor) -> None:
    """torch.optim.SGD's step for every member at once, in place on flat and velocity (its momentum buffer)
    (M, P): decayed (M, P) holds d = g + wd*p (``forward_backward`` writes it); lr, momentum (M, 1).

    Two passes over the buffers: addcmul is one fused multiply-add per element (rounded once, vector body
    and tail alike, so a member's bits do not depend on where its row falls), which folds the momentum's
    multiply and add into one pass: buf = d + momentum*buf."""
    torch.addcmul(decayed, velocity, momentum, out=velocity)
    flat.addcmul_(lr, velocity, value=-1.0)


def layer_blocks(flat: torch.Tensor, layout: tuple[tuple[int, int], ...]) -> list[torch.Tensor]:
    """Views of flat (M, P) holding the Linear layers of ``layout`` ((out, in) per layer) as FlatSGD packs a
    FusedNet's parameters, W^T then bias, layer after layer: per layer one (M, in + 1, out) block, its rows
    :in the weight W^T and its row in the bias."""
    m, blocks, start = flat.shape[0], [], 0
    for out_features, in_features in layout:
        size = (in_features + 1) * out_features
        blocks.append(flat[:, start:start + size].view(m, in_features + 1, out_features))
        start += size
    return blocks


# The last layer's output columns (the classes) are padded to a multiple of this many: MKL's batched products
# with 10 output columns ran 3-5x slower than with 16 ((5, 64, 256) @ (5, 256, 10): 210 us, with 16 columns
# 40 us), a sixth of a step at width 64.
LOGIT_PAD = 16


def padded(n: int) -> int:
    return -(-n // LOGIT_PAD) * LOGIT_PAD


class StepBuffers(NamedTuple):
    """What one step reads and writes besides its inputs, made once per batch size (``step_buffers``).

    Every Linear runs as one product with its bias folded in: its input with a column of ones appended,
    (M, B, in + 1), times its (M, in + 1, out) block [W^T; bias], so the weight gradient's product
    [H, 1]^T @ dZ yields the bias gradient (the sum of dZ over the batch) in its last row, already laid out as
    the block in grad: no bias sum, and one elementwise pass puts a layer's whole gradient in place.

    inputs: each Linear's input buffer (M, B, in + 1), ones in its last column; inputs_t: their transposes
    (M, in + 1, B), for the weight gradients; features: their first ``in`` columns (what x and the ReLUs
    write); blocks: the products' blocks, views of flat but the last layer's, which is ``last``; params, grads:
    every layer's block in flat and in grad; weights_t: each block's W^T rows transposed, W (M, out, in), for
    the input gradient; last_source: the last layer's block in flat (M, in + 1, C); last (M, in + 1, C'): it
    padded to C' = padded(C) classes, last_head its first C columns; minus_one (M, B, 1): the one-hot target's
    -1; out_features per layer. Made per step, the views alone cost more Python time than a width-32 step's
    elementwise work."""

    inputs: list[torch.Tensor]
    inputs_t: list[torch.Tensor]
    features: list[torch.Tensor]
    blocks: list[torch.Tensor]
    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    weights_t: list[torch.Tensor]
    last_source: torch.Tensor
    last_head: torch.Tensor
    last: torch.Tensor
    minus_one: torch.Tensor
    out_features: tuple[int, ...]


def step_buffers(flat: torch.Tensor, grad: torch.Tensor, layout: tuple[tuple[int, int], ...],
                 batch: int) -> StepBuffers:
    """The ``StepBuffers`` of a cohort's flat parameters and gradients (M, P) at one batch size. The padding
    classes have zero weights and bias -inf: their logits are -inf, their probability and so their gradient
    exactly 0, so they add exact zeros to every product and sum; only the first C columns of ``last`` are
    written (from last_source) each step."""
    m, classes = flat.shape[0], layout[-1][0]
    params, grads = layer_blocks(flat, layout), layer_blocks(grad, layout)
    last = flat.new_zeros(m, params[-1].shape[1], padded(classes))
    last[:, -1, classes:] = float("-inf")
    blocks = params[:-1] + [last]
    inputs = [flat.new_ones(m, batch, in_features + 1) for _, in_features in layout]
    return StepBuffers(inputs=inputs, inputs_t=[h.transpose(1, 2) for h in inputs],
                       features=[h[..., :-1] for h in inputs], blocks=blocks, params=params, grads=grads,
                       weights_t=[block[:, :-1].transpose(1, 2) for block in blocks], last_source=params[-1],
                       last_head=last[..., :classes], last=last, minus_one=flat.new_full((m, batch, 1), -1.0),
                       out_features=tuple(out for out, _ in layout))


def cross_entropy_backward(logits: torch.Tensor, y: torch.Tensor, minus_one: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(each member's mean cross-entropy over its batch (M,), correct predictions (M,) int64, the logits'
    gradient (softmax - onehot) / B (M, B, C)) from logits (M, B, C) and labels y (M, B): the gradient in
    three passes over the log-probabilities, in place (exp, the -1 at each label, the division). Padding
    classes of logit -inf (``step_buffers``) get probability and gradient exactly 0 and are never predicted."""
    labels = y.unsqueeze(2)
    log_p = torch.log_softmax(logits, dim=2)
    losses = log_p.gather(2, labels).squeeze(2).sum(1).div_(-logits.shape[1])  # mean(1): ~20 us, these ~6
    correct = (logits.argmax(2) == y).sum(1)
    dz = log_p.exp_().scatter_add_(2, labels, minus_one).div_(logits.shape[1])
    return losses, correct, dz


def forward_backward(buffers: StepBuffers, x: torch.Tensor, y: torch.Tensor, weight_decay: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One MLP cohort's loss and gradients: buffers its parameters and gradients (``step_buffers``), x (M, B, in)
    inputs, y (M, B) int64 labels, weight_decay (M, 1). Into the gradient blocks goes d = g + wd*p, g the
    gradient of the sum over members of their mean cross-entropies (SGD's first step, done as each gradient is
    put in place: no pass of its own over the buffers). Returns (mean cross-entropy per member (M,), correct
    predictions per member (M,) int64).

    Each product is computed into a fresh tensor, then combined into its place elementwise (same orientation).
    Written with out= into the view, whose member stride is P, bmm took another path for M > 1 than for a
    cohort of one (whose view is contiguous) and rounded the last layer's gradient differently; torch.compile
    cannot trace such an out= either. The last layer runs on its padded copy (``LOGIT_PAD``)."""
    inputs, features = buffers.inputs, buffers.features
    buffers.last_head.copy_(buffers.last_source)
    features[0].copy_(x)
    for i, block in enumerate(buffers.blocks[:-1]):
        torch.clamp_min(torch.bmm(inputs[i], block), 0, out=features[i + 1])  # the ReLU, into the next input
    logits = torch.bmm(inputs[-1], buffers.blocks[-1])  # (M, B, C')
    losses, correct, dz = cross_entropy_backward(logits, y, buffers.minus_one)
    decay = weight_decay.unsqueeze(2)
    gradient = torch.bmm(buffers.inputs_t[-1], dz).narrow(2, 0, buffers.out_features[-1])  # unpadded
    for i in range(len(inputs) - 1, -1, -1):
        torch.addcmul(gradient, decay, buffers.params[i], out=buffers.grads[i])  # gradient: [dW^T; db]
        if i:
            # ReLU's backward, autograd's own kernel (0 where the ReLU's output is <= 0): one pass, not two
            dz = torch.ops.aten.threshold_backward(torch.bmm(dz, buffers.weights_t[i]), features[i], 0)
            gradient = torch.bmm(buffers.inputs_t[i - 1], dz)
    return losses, correct


def fused_step(flat: torch.Tensor, grad: torch.Tensor, velocity: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               lr: torch.Tensor, weight_decay: torch.Tensor, momentum: torch.Tensor,
               buffers: StepBuffers) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and SGD update of every member, in place on flat, grad and velocity (M, P) (buffers:
    their ``step_buffers``): what FusedStep runs eager."""
    losses, correct = forward_backward(buffers, x, y, weight_decay)
    sgd_update(flat, grad, velocity, lr, momentum)
    return losses, correct


def traced_step(flat: torch.Tensor, grad: torch.Tensor, velocity: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                lr: torch.Tensor, weight_decay: torch.Tensor, momentum: torch.Tensor,
                layout: tuple[tuple[int, int], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """fused_step with its buffers made inside: what FusedStep compiles (a module-level function of tensors and
    the layout only, so one compilation serves every cohort of the same shapes, and no input is a view of
    another)."""
    return fused_step(flat, grad, velocity, x, y, lr, weight_decay, momentum,
                      step_buffers(flat, grad, layout, x.shape[1]))


_COMPILED: dict[str, object] = {}  # torch.compile mode -> compiled traced_step


class FusedStep:
    """The training step of a FusedNet: ``step(inputs, labels, active)`` -> (losses (M,), correct (M,)), the
    parameters updated in place. inputs as ``net.inputs`` makes them (M, B, *input_shape), labels (M, B);
    active: None or (M,) bool (False: a frozen member). compile: a torch.compile mode for forward, backward
    and update together, or "off"."""

    def __init__(self, net: FusedNet, sgd: FlatSGD, compile: str = "off"):
        order = [t for layer in net.linears for t in (layer.weight, layer.bias)]
        if [id(t) for t in order] != [id(p) for p in sgd.params]:  # layer_blocks' packing
            raise ValueError("FlatSGD must hold the FusedNet's parameters, weight then bias, layer after layer")
        self.layout = tuple((layer.weight.shape[1], layer.weight.shape[2]) for layer in net.linears)
        self.flatten = isinstance(next(iter(net.module.children())), MemberFlatten)
        self.sgd = sgd
        self._buffers: dict[int, StepBuffers] = {}  # batch size -> eager step's buffers
        self.compiled = compile != "off"
        if not self.compiled:
            self._step = fused_step
        else:
            if compile not in _COMPILED:
                _COMPILED[compile] = torch.compile(traced_step, mode=compile, dynamic=False)
            self._step = _COMPILED[compile]

    def _last_argument(self, batch: int):
        """What the step takes after the update's factors: compiled, the layout (traced_step makes its buffers
        inside the graph); eager, this batch size's StepBuffers, made on first use."""
        if self.compiled:
            return self.layout
        if batch not in self._buffers:
            self._buffers[batch] = step_buffers(self.sgd.flat, self.sgd.grad, self.layout, batch)
        return self._buffers[batch]

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor, active: torch.Tensor | None = None):
        if labels.dim() != 2:
            raise ValueError(f"the fused MLP step trains on one label per example, (M, B) targets; got "
                             f"{tuple(labels.shape)}")
        x = inputs.flatten(2) if self.flatten else inputs
        sgd = self.sgd
        last_argument = self._last_argument(x.shape[1])

        def run():
            return self._step(sgd.flat, sgd.grad, sgd.velocity, x, labels, sgd.lr, sgd.weight_decay, sgd.momentum,
                              last_argument)

        return _keeping_frozen_rows(sgd, active, run)


def _keeping_frozen_rows(sgd: FlatSGD, active: torch.Tensor | None, run):
    """run()'s result, the rows of sgd's parameters and momentum of members not ``active`` ((M,) bool, or None:
    all are) put back afterwards bit for bit. Every member steps with the arithmetic of a cohort where all step,
    so an active member's weights do not depend on another's divergence or pause."""
    if active is None:
        return run()
    inactive = ~active
    saved = sgd.flat[inactive], sgd.velocity[inactive]  # advanced indexing copies them
    out = run()
    sgd.flat[inactive], sgd.velocity[inactive] = saved
    return out


class FusedCurveStep:
    """The SGD step of P Bezier curves' middle points (workloads/metrics/connectivity.py) on a FusedNet:
    ``step(inputs, labels, coefficients, active)`` -> (cross-entropy (P,), objective (P,), correct (P,)), the
    middle points updated in place.

    Pair p's curve point is γ_p = ca_p θ_a + cm_p θ_c + cb_p θ_b and its objective CE(γ_p) + ½ wd_p ||γ_p||², so
    the middle point's gradient is cm_p (∇CE(γ_p) + wd_p γ_p): ``forward_backward`` at γ (with the pairs' weight
    decays) writes the bracket, one pass scales it by cm, and ``sgd_update`` (no weight decay of its own) steps
    θ_c. γ lives in its own (P, P') buffer in FlatSGD's layout beside the packed endpoints; the middle points
    are FlatSGD's parameters, so the tensors of ``middle`` become views into its buffer (W^T for weights).

    net: the curves' FusedNet of P members (its own parameters are not read); end_a, middle, end_b:
    {name: (P, *shape)} in the net's parameter order; lr, momentum, weight_decay: one number per pair.
    inputs (P, B, *input_shape) as ``net.inputs`` makes them, labels (P, B); coefficients (P, 3) per pair
    (ca, cm, cb); active: None or (P,) bool (False: the pair takes no step this time)."""

    def __init__(self, net: FusedNet, end_a: dict[str, torch.Tensor], middle: dict[str, torch.Tensor],
                 end_b: dict[str, torch.Tensor], *, lr: list[float], momentum: list[float],
                 weight_decay: list[float]):
        names = [name for name, _ in net.module.named_parameters()]
        if not (list(end_a) == list(middle) == list(end_b) == names):
            raise ValueError(f"curve points must name the FusedNet's parameters in its order {names}; got "
                             f"{list(middle)}")
        device = next(iter(middle.values())).device
        self.sgd = FlatSGD(list(middle.values()), lr=lr, momentum=momentum, weight_decay=[0.0] * len(lr),
                           device=device)
        self.weight_decay = self.sgd._factor(weight_decay)
        self.end_a, self.end_b = packed(list(end_a.values())), packed(list(end_b.values()))
        self.point = torch.empty_like(self.sgd.flat)  # γ, in FlatSGD's layout
        self.layout = tuple((layer.weight.shape[1], layer.weight.shape[2]) for layer in net.linears)
        self.flatten = isinstance(next(iter(net.module.children())), MemberFlatten)
        self._buffers: dict[int, StepBuffers] = {}  # batch size -> the step's buffers over γ

    def set_lr(self, lrs: list[float]) -> None:
        self.sgd.set_lr(lrs)

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor, coefficients: torch.Tensor,
                 active: torch.Tensor | None = None):
        if labels.dim() != 2:
            raise ValueError(f"the fused MLP step trains on one label per example, (P, B) targets; got "
                             f"{tuple(labels.shape)}")
        x = inputs.flatten(2) if self.flatten else inputs
        sgd, point = self.sgd, self.point
        if x.shape[1] not in self._buffers:
            self._buffers[x.shape[1]] = step_buffers(point, sgd.grad, self.layout, x.shape[1])
        buffers = self._buffers[x.shape[1]]
        ca, cm, cb = (c.unsqueeze(1) for c in coefficients.unbind(1))  # (P, 1) each

        def run():
            torch.mul(self.end_a, ca, out=point)
            point.addcmul_(sgd.flat, cm).addcmul_(self.end_b, cb)
            losses, correct = forward_backward(buffers, x, labels, self.weight_decay)
            objectives = losses + 0.5 * self.weight_decay.squeeze(1) * torch.linalg.vecdot(point, point)
            sgd.grad.mul_(cm)
            sgd_update(sgd.flat, sgd.grad, sgd.velocity, sgd.lr, sgd.momentum)
            return losses, objectives, correct

        return _keeping_frozen_rows(sgd, active, run)


__all__ = ["FlatSGD", "FusedCurveStep", "FusedStep", "LOGIT_PAD", "StepBuffers", "cross_entropy_backward",
           "forward_backward", "fused_step", "layer_blocks", "packed", "padded", "sgd_update", "step_buffers",
           "traced_step"]
