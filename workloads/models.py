"""Model families whose size is set by one integer ``width`` (the "load" knob of the method).

=========  ==========================================================================================
name       architecture (width = k)
=========  ==========================================================================================
mlp        flatten -> ``depth`` x [Linear(k) + ReLU] -> Linear(num_classes)          (kwargs: depth=2)
cnn        3 x [conv + (BN) + ReLU] with k, 2k, 4k channels, strides 1, 2, 2 -> global avg pool -> Linear
           (kwargs: batch_norm=False, depth=3)
resnet18   CIFAR ResNet18: 3x3 stem conv (stride 1) + BN, no max-pool, BasicBlocks [2, 2, 2, 2] with
           k, 2k, 4k, 8k channels -> global avg pool -> Linear. k = 64, 10 classes: 11,173,962 params.
vgg11      [k, M, 2k, M, 4k, 4k, M, 8k, 8k, M, 8k, 8k, M], 3x3 convs + BN + ReLU, M = 2x2 max-pool ->
           global avg pool -> Linear(8k, num_classes). k = 64: CIFAR VGG11-BN (no redundant conv biases).
=========  ==========================================================================================

Convolutional models take (C, H, W) images (Conv2d) or 1-D signals (L,) / (C, L) (Conv1d: MNIST-1D's
(40,) is read as one channel of length 40), so the width sweep of the paper also runs on the default
1-D dataset. Initialisation is PyTorch's default; build under a seed with ``seeded_model``.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from workloads import plugins
from workloads.registry import Registry

MODELS = Registry("model")

VGG11_PLAN = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # channel multiples of width; M = max-pool
RESNET18_BLOCKS = (2, 2, 2, 2)  # BasicBlocks per stage; stage channels are width * (1, 2, 4, 8)


def build_model(name: str, *, width: int, num_classes: int, input_shape: tuple, **kwargs) -> nn.Module:
    """Build model ``name`` for inputs of shape ``input_shape`` (one example, no batch dim).

    ``name``: a built-in of the module table, a ``module:function`` reference or an entry point of
    ``landscape.models`` (workloads/plugins.py). kwargs are model-specific options (see the module table); an
    option a built-in does not take is a TypeError listing the ones it does; a user's function is called as
    fn(width=, num_classes=, input_shape=, **kwargs) and must return an nn.Module (PluginError otherwise).
    """
    user_fn = plugins.user_callable("model", name, MODELS)
    _check_common(name, width, num_classes, input_shape)
    if user_fn is not None:  # the user's own code (workloads/plugins.py): its signature, its errors as its own
        plugins.check_call("model", name, user_fn, ("width", "num_classes", "input_shape"), kwargs)
        model = plugins.call_user("model", name, user_fn, width=int(width), num_classes=int(num_classes),
                                  input_shape=tuple(input_shape), **kwargs)
        if not isinstance(model, nn.Module):
            raise plugins.PluginError(f"model {name!r} returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    builder = MODELS.get(name)
    _check_options(name, builder, kwargs)
    return builder(width=int(width), num_classes=int(num_classes), input_shape=tuple(input_shape), **kwargs)


def seeded_model(name: str, seed: int, **kwargs) -> nn.Module:
    """``build_model(name, **kwargs)`` with parameters drawn from ``torch.manual_seed(seed)``, on the CPU.

    The global torch RNG state is restored afterwards, so building a model does not shift other random
    streams; the same seed gives identical parameters whatever device the model is moved to later.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build_model(name, **kwargs)


def shape_model(name: str, **kwargs) -> nn.Module:
    """``build_model(name, **kwargs)`` on torch's meta device (shapes only: no memory, no initialisation), for
    counting parameters and checking options. A user's model that cannot be built there (its constructor reads
    a tensor's values, e.g. ``.item()``) is built on the CPU instead; an error that happens there too is the
    user's own and propagates."""
    try:
        with torch.device("meta"):
            return build_model(name, **kwargs)
    except plugins.PluginError:
        if not plugins.is_reference(name) and name in MODELS:
            raise
    with torch.random.fork_rng(devices=[]):  # the meta build failed: the real one, without shifting any stream
        return build_model(name, **kwargs)


def model_device(model: nn.Module, default: torch.device | str | None = None) -> torch.device:
    """The device of a model's first parameter (else first buffer); ``default`` (else the CPU) when it has none."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device(default if default is not None else "cpu")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_common(name: str, width, num_classes, input_shape) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"model {name!r}: width must be a positive integer, got {width!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"model {name!r}: num_classes must be an integer >= 2, got {num_classes!r}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"model {name!r}: input_shape must be a tuple of positive ints, got {input_shape!r}")


def _check_options(name: str, builder: Callable, kwargs: dict) -> None:
    """TypeError naming unknown options and listing the builder's own (with defaults)."""
    params = inspect.signature(builder).parameters
    own = {k: p.default for k, p in params.items() if k not in ("width", "num_classes", "input_shape")}
    unknown = sorted(set(kwargs) - set(own))
    if unknown:
        offered = ", ".join(f"{k}={v!r}" for k, v in own.items()) or "none"
        raise TypeError(f"model {name!r} got unknown option(s) {unknown}; its options are: {offered}")
    for key, value in kwargs.items():  # an option has the type of its default (YAML reads 1e9 as a string)
        default = own[key]
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            continue
        if not ok:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise TypeError(f"model {name!r} option {key} must be {kind} (default {default!r}), "
                            f"got {shown} ({type(value).__name__})")


# --------------------------------------------------------------------------------------------------------
# Shape helpers: 1-D signals and 2-D images share the conv architectures

def conv_dims(input_shape: tuple, name: str) -> tuple[int, int]:
    """(in_channels, spatial dims 1 or 2) for conv nets: (L,) -> (1, 1); (C, L) -> (C, 1); (C, H, W) -> (C, 2)."""
    if len(input_shape) == 1:
        return 1, 1
    if len(input_shape) in (2, 3):
        return input_shape[0], len(input_shape) - 1
    raise ValueError(f"model {name!r} takes (L,), (C, L) or (C, H, W) inputs, got input_shape {input_shape}")


def _layers(dims: int):
    """(Conv, BatchNorm, MaxPool, AdaptiveAvgPool) classes for 1-D or 2-D inputs."""
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d
    return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d


class AddChannel(nn.Module):
    """(B, L) -> (B, 1, L): lets Conv1d read a flat 1-D signal."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def _input_adapter(input_shape: tuple) -> list[nn.Module]:
    return [AddChannel()] if len(input_shape) == 1 else []


def _head(channels: int, num_classes: int, dims: int) -> list[nn.Module]:
    """Global average pool -> (B, channels) -> Linear -> (B, num_classes)."""
    _, _, _, pool = _layers(dims)
    return [pool(1), nn.Flatten(), nn.Linear(channels, num_classes)]


# --------------------------------------------------------------------------------------------------------
# MLP

@MODELS.register("mlp")
def build_mlp(*, width: int, num_classes: int, input_shape: tuple, depth: int = 2) -> nn.Module:
    """(B, *input_shape) -> flatten -> depth x [Linear(width), ReLU] -> Linear -> (B, num_classes)."""
    if depth < 0:
        raise ValueError(f"mlp depth must be >= 0, got {depth}")
    features = 1
    for d in input_shape:
        features *= d
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------------
# Small CNN

@MODELS.register("cnn")
def build_cnn(*, width: int, num_classes: int, input_shape: tuple, batch_norm: bool = False,
              depth: int = 3) -> nn.Module:
    """``depth`` conv blocks with width * 2**i channels; the first keeps resolution, later ones halve it.

    Kernels are 5 wide on 1-D signals (so three blocks see 17 of MNIST-1D's 40 samples) and 3x3 on images.
    """
    if depth < 1:
        raise ValueError(f"cnn depth must be >= 1, got {depth}")
    in_ch, dims = conv_dims(input_shape, "cnn")
    conv, bn, _, _ = _layers(dims)
    kernel = 5 if dims == 1 else 3
    layers = _input_adapter(input_shape)
    for i in range(depth):
        out_ch = width * 2**i
        layers.append(conv(in_ch, out_ch, kernel, stride=1 if i == 0 else 2, padding=kernel // 2,
                           bias=not batch_norm))  # BN's shift makes a conv bias redundant
        if batch_norm:
            layers.append(bn(out_ch))
        layers.append(nn.ReLU())
        in_ch = out_ch
    return nn.Sequential(*layers, *_head(in_ch, num_classes, dims))


# --------------------------------------------------------------------------------------------------------
# ResNet18 (CIFAR variant)

class BasicBlock(nn.Module):
    """relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x)); shortcut = 1x1 conv + BN when shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dims: int):
        super().__init__()
        conv, bn, _, _ = _layers(dims)
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = bn(out_ch)
        self.relu = nn.ReLU()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv(in_ch, out_ch, 1, stride=stride, bias=False), bn(out_ch))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem (3x3 conv + BN + ReLU, stride 1) -> 4 stages (strides 1, 2, 2, 2) -> avg pool -> Linear."""

    def __init__(self, width: int, num_classes: int, input_shape: tuple, blocks=RESNET18_BLOCKS):
        super().__init__()
        in_ch, dims = conv_dims(input_shape, "resnet18")
        conv, bn, _, _ = _layers(dims)
        self.adapter = nn.Sequential(*_input_adapter(input_shape))
        self.stem = nn.Sequential(conv(in_ch, width, 3, stride=1, padding=1, bias=False), bn(width), nn.ReLU())
        stages, ch = [], width
        for i, n_blocks in enumerate(blocks):
            out_ch = width * 2**i
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(ch, out_ch, stride, dims)]
            stage += [BasicBlock(out_ch, out_ch, 1, dims) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*stage))
            ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(*_head(ch, num_classes, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(self.adapter(x))))


@MODELS.register("resnet18")
def build_resnet18(*, width: int, num_classes: int, input_shape: tuple) -> nn.Module:
    """CIFAR ResNet18 with stage widths (k, 2k, 4k, 8k); about 2,727 k^2 parameters on images."""
    return ResNet(width, num_classes, input_shape)


# --------------------------------------------------------------------------------------------------------
# VGG11 with BatchNorm

@MODELS.register("vgg11")
def build_vgg11(*, width: int, num_classes: int, input_shape: tuple) -> nn.Module:
    """VGG11-BN: convs per VGG11_PLAN (multiples of width), five 2x max-pools, avg pool, Linear(8k).

    Five halvings need spatial size >= 32 (CIFAR's 32x32 ends at 1x1; MNIST-1D's 40 at 1).
    """
    in_ch, dims = conv_dims(input_shape, "vgg11")
    spatial = input_shape[1:] if len(input_shape) > 1 else input_shape
    if min(spatial) < 32:
        raise ValueError(f"vgg11 halves the resolution 5 times and needs spatial size >= 32, got {input_shape}")
    conv, bn, maxpool, _ = _layers(dims)
    layers = _input_adapter(input_shape)
    for item in VGG11_PLAN:
        if item == "M":
            layers.append(maxpool(2))
            continue
        out_ch = width * item
        layers += [conv(in_ch, out_ch, 3, padding=1, bias=False), bn(out_ch), nn.ReLU()]
        in_ch = out_ch
    return nn.Sequential(*layers, *_head(in_ch, num_classes, dims))
