"""A cohort: M models of one architecture held as one model whose every tensor has a leading member axis.
(Over ~400 lines: the grouped layers, the vmap and plain backends and the choice between them share the
CohortNet interface they implement.)

The cohort's state dict has exactly the keys of one member's state dict, each tensor of shape (M, *shape)
(``stack_states`` / ``member_state`` convert), so checkpoints, optimiser state and the per-member weights
handed to the rest of the project are plain indexing. Three ways to run the M forward passes:

    fused     an MLP (a chain of Linear and ReLU layers) held as grouped, trained by a hand-written step
              (workloads/cohort_fused.py: forward, backward and SGD over one flat buffer, no autograd).
    grouped   hand-batched kernels: Linear -> baddbmm over the member axis; Conv -> one convolution with
              groups = M (members' channels side by side, (B, M*C, ...)); BatchNorm -> one BatchNorm over
              M*C channels, so every member has its own batch statistics and running statistics. The other
              layers of models.py (ReLU, pools, residual additions) work unchanged on that layout.
    vmap      torch.func: functional_call of the member architecture under vmap over stacked parameters and
              buffers (running statistics are batched too, so their in-place updates stay per member).
    plain     one member (M = 1) run by its own module through functional_call, the member axis squeezed: any
              model, including one whose training forward pass draws random numbers (dropout).

All take the inputs prepared by ``inputs(x, index)`` (member m sees x[index[m]]) or ``inputs_shared(x)``
(every member sees x) and return logits (M, B, ...). ``resolve_backend`` picks one from the model's structure:
fused for a chain of Linear and ReLU layers (the mlp family: docs/benchmarks.md "Cohorts: the fused MLP step"),
else grouped where every layer has a hand-batched version (the built-ins; it was 1.2-2.2x faster per step than
vmap for them, docs/benchmarks.md "Cohorts: the engine"), else vmap where a vmapped pass runs and draws no
random numbers, else plain.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from workloads import models as model_zoo

# In the order "auto" tries them: the fastest first (fused beat grouped for the mlp, `python benchmarks/cohort.py
# --fused`; grouped beat vmap 1.2-2.2x per step for mlp, cnn and resnet18 on one CPU thread, `--backends`; not
# yet measured on a GPU), the most general last.
BACKENDS = ("fused", "grouped", "vmap", "plain")


# ---------------------------------------------------------------------------------------------------------
# Stacking states


def stack_states(states: list[dict]) -> dict[str, torch.Tensor]:
    """{name: (M, *shape)} from M state dicts with the same names, shapes and dtypes (ValueError otherwise)."""
    if not states:
        raise ValueError("a cohort needs at least one member")
    names = list(states[0])
    for i, state in enumerate(states[1:], 1):
        if list(state) != names:
            diff = sorted(set(state) ^ set(names))[:5]
            raise ValueError(f"member {i} has other state names than member 0 (not one architecture): {diff}")
    out = {}
    for name in names:
        tensors = [s[name] for s in states]
        shapes = {(tuple(t.shape), t.dtype) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(f"members differ in the shape or dtype of {name!r}: {sorted(map(str, shapes))}")
        out[name] = torch.stack([t.detach() for t in tensors])
    return out


def member_state(stacked: dict[str, torch.Tensor], m: int) -> dict[str, torch.Tensor]:
    """Member m's own state dict: a contiguous CPU copy of stacked[name][m] for every name (the fused backend's
    weights are transposed views: their copies are laid out as a member's own)."""
    return {name: t[m].detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
            for name, t in stacked.items()}


# ---------------------------------------------------------------------------------------------------------
# Hand-batched layers. "member-major" tensors are (M, B, features); "folded" ones (B, M*C, *spatial).


class BatchedLinear(nn.Module):
    """(M, B, in) -> (M, B, out): member m's own Linear. weight (M, out, in), bias (M, out) or None."""

    def __init__(self, members: int, linear: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, *linear.weight.shape, dtype=linear.weight.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(
            torch.empty(members, *linear.bias.shape, dtype=linear.bias.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class GroupedConv(nn.Module):
    """Folded (B, M*in, *s) -> (B, M*out, *s'): member m's Conv1d/2d as group m of one grouped convolution.

    weight (M, out, in/groups, *kernel), bias (M, out) or None; a (M, ...) tensor flattens to the grouped
    layout without a copy, which is why the state keeps the member axis first.
    """

    def __init__(self, members: int, conv: nn.Conv1d | nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise NotImplementedError("grouped cohorts support zero padding given as numbers only")
        self.members = members
        self.dims = 1 if isinstance(conv, nn.Conv1d) else 2
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = nn.Parameter(torch.empty(members, *conv.weight.shape, dtype=conv.weight.dtype))
        self.bias = None if conv.bias is None else nn.Parameter(
            torch.empty(members, *conv.bias.shape, dtype=conv.bias.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.reshape(-1, *self.weight.shape[2:])
        bias = None if self.bias is None else self.bias.reshape(-1)
        conv = F.conv1d if self.dims == 1 else F.conv2d
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups * self.members)


class BatchedBatchNorm(nn.Module):
    """Folded (B, M*C, *s): member m's BatchNorm over channels [m*C, (m+1)*C) of one BatchNorm of M*C channels.

    Buffers running_mean / running_var (M, C) and num_batches_tracked (M,) are per member; the update factor
    is ``momentum``, a number (the cumulative average of a recompute pass sets it to 1/k for batch k, which
    is what PyTorch's momentum=None computes, without reading the counter back from the device).
    """

    def __init__(self, members: int, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        c = bn.num_features
        self.eps, self.momentum = bn.eps, bn.momentum
        self.weight = nn.Parameter(torch.empty(members, c)) if bn.affine else None
        self.bias = nn.Parameter(torch.empty(members, c)) if bn.affine else None
        if bn.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(members, c))
            self.register_buffer("running_var", torch.ones(members, c))
            self.register_buffer("num_batches_tracked", torch.zeros(members, dtype=torch.long))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tracking = self.running_mean is not None
        if self.training and tracking:
            if self.momentum is None:
                raise ValueError("BatchedBatchNorm needs a numeric momentum (set 1/k explicitly for a cumulative average)")
            self.num_batches_tracked.add_(1)
        use_batch_stats = self.training or not tracking
        flat = (lambda t: None if t is None else t.view(-1))
        return F.batch_norm(x, flat(self.running_mean), flat(self.running_var), flat(self.weight), flat(self.bias),
                            use_batch_stats, 0.0 if self.momentum is None else self.momentum, self.eps)


class MemberFlatten(nn.Module):
    """(M, B, *s) -> (M, B, prod(s)): nn.Flatten() of every member."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


class FoldedFlatten(nn.Module):
    """Folded (B, M*C, *s) -> member-major (M, B, C*prod(s)): nn.Flatten() of every member, then the head."""

    def __init__(self, members: int):
        super().__init__()
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.members, -1).transpose(0, 1)


# Parameter-free modules that act per channel / per element, hence unchanged on the folded layout.
_LAYOUT_FREE = (nn.ReLU, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
# Containers whose forward only composes their children and adds residuals (models.py).
_CONTAINERS = (nn.Sequential, model_zoo.BasicBlock, model_zoo.ResNet)


def _is_conv_net(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in module.modules())


def _is(module: nn.Module, classes: tuple) -> bool:
    """An instance of one of ``classes`` whose forward is that class's own: a subclass that rewrites forward
    (a plug-in's Sequential that does more than chain its children) is not the layer the grouped copy assumes."""
    return any(isinstance(module, c) and type(module).forward is c.forward for c in classes)


def _batched_copy(module: nn.Module, members: int, folded: bool) -> nn.Module:
    """A copy of ``module`` with every layer replaced by its hand-batched version (see the module doc);
    NotImplementedError naming the first layer that has none."""
    if _is(module, (nn.Linear,)):
        return BatchedLinear(members, module)
    if _is(module, (nn.Conv1d, nn.Conv2d)):
        return GroupedConv(members, module)
    if _is(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not folded:
            raise NotImplementedError("grouped cohorts support BatchNorm only after convolutions")
        return BatchedBatchNorm(members, module)
    if _is(module, (nn.Flatten,)):
        if (module.start_dim, module.end_dim) != (1, -1):
            raise NotImplementedError("grouped cohorts support nn.Flatten() with the default dims only")
        return FoldedFlatten(members) if folded else MemberFlatten()
    if _is(module, (model_zoo.AddChannel,)):
        return nn.Identity()  # (B, M, L) already is the folded layout of M one-channel signals
    if _is(module, _LAYOUT_FREE):
        return copy.deepcopy(module)
    if _is(module, _CONTAINERS):
        if module._parameters or module._buffers:
            raise NotImplementedError(f"grouped cohorts: {type(module).__name__} holds tensors of its own")
        out = copy.copy(module)  # same class and forward; children replaced below
        out._modules = {name: _batched_copy(child, members, folded) for name, child in module.named_children()}
        out._parameters, out._buffers = {}, {}
        return out
    raise NotImplementedError(f"grouped cohorts do not support {type(module).__name__} layers")


# ---------------------------------------------------------------------------------------------------------
# The backends


class CohortNet:
    """M models as one. ``module`` holds the stacked tensors under the member names (its state_dict() is the
    cohort state); ``forward(inputs, params=None)`` -> logits (M, B, num_classes), with ``params`` replacing
    (some of) the stacked parameters for that call (the curve points of workloads/metrics/connectivity.py).
    """

    backend = ""

    def __init__(self, template: nn.Module, members: int):
        self.members = members
        self.input_shape: tuple | None = None
        self.module: nn.Module = nn.Module()
        self._template_requires_grad = {n: p.requires_grad for n, p in template.named_parameters()}

    # state -------------------------------------------------------------------------------------------
    def load_stacked(self, stacked: dict[str, torch.Tensor]) -> "CohortNet":
        """Copy a stacked state (as from ``stack_states``) into the cohort, on its device."""
        own = self.module.state_dict()
        if set(own) != set(stacked):
            raise ValueError(f"cohort state names differ: {sorted(set(own) ^ set(stacked))[:5]}")
        with torch.no_grad():
            for name, tensor in own.items():
                if tensor.shape != stacked[name].shape:
                    raise ValueError(f"cohort state {name!r} has shape {tuple(stacked[name].shape)}, "
                                     f"expected {tuple(tensor.shape)}")
                tensor.copy_(stacked[name])
        return self

    def stacked_state(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def params(self) -> dict[str, torch.Tensor]:
        """name -> stacked parameter (M, *shape), in the member model's parameters() order."""
        return dict(self.module.named_parameters())

    def to(self, device) -> "CohortNet":
        self.module.to(device)
        return self

    def train(self, mode: bool = True) -> "CohortNet":
        self.module.train(mode)
        return self

    def eval(self) -> "CohortNet":
        return self.train(False)

    @property
    def training(self) -> bool:
        return self.module.training

    # BatchNorm ----------------------------------------------------------------------------------------
    def _stat_layers(self) -> list[nn.Module]:
        """The layers holding running statistics (reset, read, written)."""
        raise NotImplementedError

    def _momentum_layers(self) -> list[nn.Module]:
        """The layers whose ``momentum`` the forward pass uses."""
        return self._stat_layers()

    @property
    def has_batchnorm(self) -> bool:
        return bool(self._stat_layers())

    def reset_batchnorm(self) -> None:
        """Running means 0, variances 1, counters 0 (as nn.BatchNorm's reset_running_stats), every member."""
        with torch.no_grad():
            for m in self._stat_layers():
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.num_batches_tracked.zero_()

    def set_batchnorm_momentum(self, momentum: float | None) -> list:
        """Set every BatchNorm's update factor; returns the previous ones (give them back to restore)."""
        layers = self._momentum_layers()
        previous = [m.momentum for m in layers]
        for m in layers:
            m.momentum = momentum
        return previous

    def restore_batchnorm_momentum(self, previous: list) -> None:
        for m, value in zip(self._momentum_layers(), previous):
            m.momentum = value

    # inputs and forward -------------------------------------------------------------------------------
    def inputs(self, x: torch.Tensor, index: torch.Tensor):
        """Member m's batch is x[index[m]]: x (n, *input_shape), index (M, B) int64 on x's device."""
        raise NotImplementedError

    def inputs_shared(self, x: torch.Tensor):
        """Every member's batch is x (B, *input_shape)."""
        raise NotImplementedError

    def batch_of(self, inputs, start: int, stop: int):
        """Examples [start, stop) of every member from inputs prepared by ``inputs`` (a view, no copy)."""
        raise NotImplementedError

    def forward(self, inputs, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, inputs, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.forward(inputs, params)


class GroupedNet(CohortNet):
    """The hand-batched backend (see the module doc)."""

    backend = "grouped"

    def __init__(self, template: nn.Module, members: int):
        super().__init__(template, members)
        self.folded = _is_conv_net(template)
        self.module = _batched_copy(template, members, self.folded)
        names = [n for n, _ in template.named_parameters()]
        if [n for n, _ in self.module.named_parameters()] != names:  # the member names are the contract
            raise NotImplementedError("grouped cohort lost the member parameter names")
        for name, p in self.module.named_parameters():
            p.requires_grad_(self._template_requires_grad[name])

    def _stat_layers(self) -> list[nn.Module]:
        return [m for m in self.module.modules() if isinstance(m, BatchedBatchNorm) and m.running_mean is not None]

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, *input_shape) -> (B, M*C, *spatial); one-dimensional signals (L,) are one channel each."""
        b, m = x.shape[:2]
        if x.dim() == 3:  # (B, M, L): M one-channel signals
            return x
        return x.reshape(b, m * x.shape[2], *x.shape[3:])

    def inputs(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.folded:  # gathered straight into (B, M, ...): no transpose copy
            return self._fold(_gather(x, index.t()))
        return _gather(x, index)

    def inputs_shared(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return self._fold(x.unsqueeze(1).expand(x.shape[0], self.members, *x.shape[1:]))
        return x.unsqueeze(0).expand(self.members, *x.shape)

    def batch_of(self, inputs: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return inputs[start:stop] if self.folded else inputs[:, start:stop]

    def forward(self, inputs: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if params is None:
            return self.module(inputs)
        return functional_call(self.module, params, (inputs,), strict=False)


class FusedNet(GroupedNet):
    """The grouped layers of an MLP, which workloads/cohort_fused.py trains without autograd. ``linears``: its
    BatchedLinear layers in order; between two of them a ReLU, before the first at most a flatten. Anything
    else (another layer, a Linear without bias, a frozen parameter) is a NotImplementedError."""

    backend = "fused"

    def __init__(self, template: nn.Module, members: int):
        super().__init__(template, members)
        self.linears = mlp_chain(self.module)
        if not all(p.requires_grad for p in self.module.parameters()):
            raise NotImplementedError("the fused step trains every parameter; this model freezes some")

    def forward(self, inputs: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The grouped forward on contiguous weights: while the fused step trains they are transposed views (the
        layout of the step's products), which the BLAS would multiply in another order; a copy per call keeps
        evaluation during training the grouped backend's to the bit (trained, FlatSGD.release leaves them
        contiguous: nothing to copy)."""
        strided = {n: p.contiguous() for n, p in self.module.named_parameters() if not p.is_contiguous()}
        return super().forward(inputs, {**strided, **(params or {})} if strided else params)


def mlp_chain(module: nn.Module) -> list[BatchedLinear]:
    """The Linear layers of a grouped ``Sequential(flatten?, Linear, (ReLU, Linear)*)``, or NotImplementedError
    saying what differs."""
    if type(module) is not nn.Sequential:
        raise NotImplementedError(f"the fused step trains an nn.Sequential of Linear and ReLU layers, not a "
                                  f"{type(module).__name__}")
    layers = list(module.children())
    if layers and isinstance(layers[0], MemberFlatten):
        layers = layers[1:]
    linears, relus = layers[0::2], layers[1::2]
    if (not linears or not all(isinstance(m, BatchedLinear) and m.bias is not None for m in linears)
            or not all(type(m) is nn.ReLU for m in relus) or len(relus) != len(linears) - 1):
        raise NotImplementedError("the fused step trains Linear layers (with bias) separated by ReLUs, ending "
                                  "in a Linear: " + ", ".join(type(m).__name__ for m in module.children()))
    return linears


class _FunctionalNet(CohortNet):
    """What vmap and plain share: the member architecture run by functional_call over the stacked tensors."""

    def __init__(self, template: nn.Module, members: int):
        super().__init__(template, members)
        self.template = copy.deepcopy(template).to("meta")  # its own tensors are never read
        holder = copy.deepcopy(template)
        for name, tensor in list(holder.named_parameters()) + list(holder.named_buffers()):
            owner_name, _, attr = name.rpartition(".")
            owner = holder.get_submodule(owner_name)
            # The template's values, repeated: a buffer left out of the state dict (non-persistent, e.g. a
            # mask) is never loaded and must keep them; parameters and the rest are loaded over them.
            stacked = tensor.detach().unsqueeze(0).repeat(members, *([1] * tensor.dim()))
            if isinstance(tensor, nn.Parameter):
                setattr(owner, attr, nn.Parameter(stacked, requires_grad=tensor.requires_grad))
            else:
                owner.register_buffer(attr, stacked, persistent=attr not in owner._non_persistent_buffers_set)
        self.module = holder  # never called: holds the stacked tensors under the member names

    def _stat_layers(self) -> list[nn.Module]:
        return batchnorm_layers(self.module)

    def _momentum_layers(self) -> list[nn.Module]:
        return batchnorm_layers(self.template)  # the functional calls run the template's layers

    def _tensors(self, params: dict[str, torch.Tensor] | None):
        """(stacked parameters with ``params`` replacing some, stacked buffers); the template set to the mode."""
        stacked = dict(self.module.named_parameters())
        if params is not None:
            stacked.update(params)
        self.template.train(self.module.training)
        return stacked, dict(self.module.named_buffers())


class VmapNet(_FunctionalNet):
    """The torch.func backend: vmap over functional_call of the member architecture."""

    backend = "vmap"

    def __init__(self, template: nn.Module, members: int):
        super().__init__(template, members)
        self._vmapped = {dim: vmap(self._call_one, in_dims=(0, 0, dim)) for dim in (0, None)}

    def _call_one(self, params, buffers, x):
        return functional_call(self.template, (params, buffers), (x,))

    def inputs(self, x: torch.Tensor, index: torch.Tensor):
        return (_gather(x, index), 0)

    def inputs_shared(self, x: torch.Tensor):
        return (x, None)

    def batch_of(self, inputs, start: int, stop: int):
        return (inputs[0][:, start:stop], 0)

    def forward(self, inputs, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x, dim = inputs
        stacked, buffers = self._tensors(params)
        return self._vmapped[dim](stacked, buffers, x)


class PlainNet(_FunctionalNet):
    """One member run by its own module: functional_call over the stacked (1, *shape) tensors with the member
    axis squeezed (views, so in-place updates of running statistics land in the stack). Runs any model, also
    one that draws random numbers in training (from torch's global generators, as the module alone would)."""

    backend = "plain"

    def __init__(self, template: nn.Module, members: int):
        if members != 1:
            raise ValueError(f"the plain backend runs one member at a time, not a cohort of {members}: this "
                             "model needs a cohort of one per member (see resolve_backend for why)")
        super().__init__(template, members)

    def inputs(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return _gather(x, index)  # (1, B, *input_shape)

    def inputs_shared(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0)

    def batch_of(self, inputs: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return inputs[:, start:stop]

    def forward(self, inputs: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        stacked, buffers = self._tensors(params)
        member = {name: t[0] for name, t in (stacked | buffers).items()}
        return functional_call(self.template, member, (inputs[0],)).unsqueeze(0)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] for a 2-D index (one index_select: cheaper than advanced indexing per step)."""
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers (any dimension) that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


# ---------------------------------------------------------------------------------------------------------
# Choosing and building


def resolve_backend(backend: str, template: nn.Module, members: int, example: torch.Tensor) -> str:
    """The backend that trains ``members`` copies of ``template``'s architecture: "auto" -> the first of
    BACKENDS that can; a named one is checked. ValueError saying why each candidate cannot.

    example: a few training inputs (>= 2 rows; only the first two are used) for the probes of vmap: one
    train-mode forward pass that must leave torch's global generators where they were, and a two-member
    forward and backward pass under vmap that must run. Both run on copies: ``template`` and every random
    stream are left as they were.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown cohort backend {backend!r}; choose auto or one of {BACKENDS}")
    problems = {}
    for name in BACKENDS if backend == "auto" else (backend,):
        problem = _PROBLEMS[name](template, members, example[:2])
        if problem is None:
            return name
        problems[name] = problem
    detail = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
    which = "no cohort backend can" if backend == "auto" else f"cohort backend {backend!r} cannot"
    raise ValueError(f"{which} train {members} x {type(template).__name__} ({detail})")


def _build_problem(net_class: type) -> Callable[[nn.Module, int, torch.Tensor], str | None]:
    """The check of a backend whose net refuses a model it cannot hold (GroupedNet: a layer without a
    hand-batched version; FusedNet: anything but a chain of Linear and ReLU): why, or None. Built on the meta
    device: free."""

    def problem(template: nn.Module, members: int, example: torch.Tensor) -> str | None:
        try:
            with torch.device("meta"):
                net_class(template, 1)
        except NotImplementedError as err:
            return str(err)
        return None

    return problem


def _vmap_problem(template: nn.Module, members: int, example: torch.Tensor) -> str | None:
    """Why vmap cannot train this model, or None. Randomness is read from the generators' states, not from
    layer types: that also catches F.dropout or torch.randn written in a user's forward. vmap would give
    every member the same draws where the members alone would each draw their own."""
    example = example.to(model_zoo.model_device(template, "cpu"))
    try:
        if _draws_random_numbers(template, example):
            return ("its training forward pass draws random numbers (dropout or the like), which vmap would "
                    "share between members; it trains with backend 'plain', one member at a time")
        net = VmapNet(template, 2).train()
        out = net(net.inputs_shared(example))
        trainable = [p for p in net.params().values() if p.requires_grad]
        if trainable:
            torch.autograd.grad(out.float().sum(), trainable)
    except Exception as err:  # whatever stops the probe means no vmap; plain then shows the model's own error
        first_line = (str(err).splitlines() or [""])[0][:200]
        return f"its forward and backward pass does not run under vmap ({type(err).__name__}: {first_line})"
    return None


def _draws_random_numbers(template: nn.Module, example: torch.Tensor) -> bool:
    """Whether one train-mode forward pass of a copy of ``template`` moves torch's global CPU generator or the
    example's CUDA generator (restored afterwards by fork_rng)."""
    model = copy.deepcopy(template).train()
    cuda = [example.device] if example.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        before = [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in cuda)]
        model(example)
        after = [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in cuda)]
    return not all(torch.equal(a, b) for a, b in zip(before, after))


def _plain_problem(template: nn.Module, members: int, example: torch.Tensor) -> str | None:
    if members != 1:
        return f"it runs one member at a time, not {members}: train these members in cohorts of one"
    return None


_PROBLEMS = {"fused": _build_problem(FusedNet), "grouped": _build_problem(GroupedNet), "vmap": _vmap_problem,
             "plain": _plain_problem}
_NETS = {"fused": FusedNet, "grouped": GroupedNet, "vmap": VmapNet, "plain": PlainNet}


def build_cohort_net(template: nn.Module, states: list[dict], backend: str = "grouped",
                     device: str | torch.device = "cpu") -> CohortNet:
    """The cohort of ``len(states)`` members of ``template``'s architecture, holding those states, on ``device``.

    template: one member model (its weights are not used); states: the members' state dicts (e.g. each
    seed's ``seeded_model(...).state_dict()``). backend: one of BACKENDS (see the module doc and
    ``resolve_backend``, which says which one a model can use).
    """
    cls = _NETS.get(backend)
    if cls is None:
        raise ValueError(f"unknown cohort backend {backend!r}; choose one of {BACKENDS}")
    net = cls(template, len(states))
    net.load_stacked(stack_states(states))
    return net.to(device)
