"""Models: parameter counts against hand-derived formulas, shapes, seeding, option errors."""

import pytest
import torch
from torch import nn

from workloads.models import build_model, count_parameters, seeded_model
from workloads.registry import UnknownNameError

IMAGE = (3, 32, 32)
SIGNAL = (40,)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def resnet18_params(k, classes=10, in_ch=3):
    """Counted by hand: 3x3 stem + BN; per stage (a -> b channels) a first block of two 3x3 convs, two BNs
    and (if a != b) a 1x1 shortcut conv + BN, then a second block of two b->b 3x3 convs + BNs; linear head."""
    stem = 9 * in_ch * k + 2 * k

    def stage(a, b):
        first = 9 * a * b + 9 * b * b + 2 * 2 * b + ((a * b + 2 * b) if a != b else 0)
        second = 2 * 9 * b * b + 2 * 2 * b
        return first + second

    body = stage(k, k) + stage(k, 2 * k) + stage(2 * k, 4 * k) + stage(4 * k, 8 * k)
    return stem + body + 8 * k * classes + classes


def vgg11_params(k, classes=10, in_ch=3):
    """3x3 convs without bias, each followed by BN (2 params per channel); linear head on 8k features."""
    chans = [in_ch, k, 2 * k, 4 * k, 4 * k, 8 * k, 8 * k, 8 * k, 8 * k]
    convs = sum(9 * a * b + 2 * b for a, b in zip(chans, chans[1:]))
    return convs + 8 * k * classes + classes


def test_resnet18_standard_width_has_the_known_parameter_count():
    model = build_model("resnet18", width=64, num_classes=10, input_shape=IMAGE)
    assert count_parameters(model) == 11_173_962
    assert resnet18_params(64) == 11_173_962  # the formula itself agrees with the published count


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_resnet18_counts_follow_the_formula(k):
    model = build_model("resnet18", width=k, num_classes=10, input_shape=IMAGE)
    assert count_parameters(model) == resnet18_params(k)


def test_resnet18_structure():
    model = build_model("resnet18", width=4, num_classes=10, input_shape=IMAGE)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.MaxPool1d)) for m in model.modules())
    stem_conv = model.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]
    assert [s[0].conv2.out_channels for s in model.stages] == [4, 8, 16, 32]


@pytest.mark.parametrize("k", [2, 64])
def test_vgg11_counts_follow_the_formula(k):
    model = build_model("vgg11", width=k, num_classes=10, input_shape=IMAGE)
    assert count_parameters(model) == vgg11_params(k)
    if k == 64:  # the common CIFAR VGG11-BN (9,231,114) keeps redundant conv biases: 2,752 of them
        assert count_parameters(model) == 9_231_114 - (64 + 128 + 2 * 256 + 4 * 512)


@pytest.mark.parametrize("depth", [0, 1, 2, 4])
def test_mlp_counts(depth):
    w, f, c = 16, 40, 10
    expected = (f * c + c) if depth == 0 else (f * w + w) + (depth - 1) * (w * w + w) + (w * c + c)
    model = build_model("mlp", width=w, num_classes=c, input_shape=(f,), depth=depth)
    assert count_parameters(model) == expected


def test_mlp_default_depth_is_two():
    model = build_model("mlp", width=8, num_classes=10, input_shape=SIGNAL)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3


def test_cnn_channels_scale_with_width_and_batch_norm_flag():
    plain = build_model("cnn", width=4, num_classes=10, input_shape=SIGNAL)
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in convs] == [4, 8, 16]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    bn = build_model("cnn", width=4, num_classes=10, input_shape=IMAGE, batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 3
    assert all(isinstance(m, nn.Conv2d) for m in bn.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))


@pytest.mark.parametrize("name, shape, kwargs", [
    ("mlp", SIGNAL, {}), ("mlp", IMAGE, {"depth": 1}), ("mlp", (64,), {}),
    ("cnn", SIGNAL, {}), ("cnn", IMAGE, {"batch_norm": True}), ("cnn", (64,), {}), ("cnn", (2, 40), {}),
    ("resnet18", SIGNAL, {}), ("resnet18", IMAGE, {}),
    ("vgg11", SIGNAL, {}), ("vgg11", IMAGE, {}),
])
def test_forward_shapes(name, shape, kwargs):
    model = build_model(name, width=2, num_classes=7, input_shape=shape, **kwargs)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_seeded_model_is_reproducible_and_leaves_global_rng_alone():
    kw = dict(width=4, num_classes=10, input_shape=SIGNAL)
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    a = seeded_model("cnn", 0, **kw)
    assert torch.equal(torch.rand(1), expected_next)
    b, c = seeded_model("cnn", 0, **kw), seeded_model("cnn", 1, **kw)
    pa, pb, pc = (torch.nn.utils.parameters_to_vector(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_unknown_option_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"model 'mlp' got unknown option\(s\) \['dropout'\]; its options are: depth=2"):
        build_model("mlp", width=4, num_classes=10, input_shape=SIGNAL, dropout=0.1)
    with pytest.raises(TypeError, match="batch_norm=False"):
        build_model("cnn", width=4, num_classes=10, input_shape=SIGNAL, bn=True)
    with pytest.raises(TypeError, match="its options are: none"):
        build_model("resnet18", width=4, num_classes=10, input_shape=IMAGE, depth=3)


def test_bad_arguments():
    with pytest.raises(UnknownNameError, match="did you mean 'vgg11'"):
        build_model("vgg", width=4, num_classes=10, input_shape=IMAGE)
    with pytest.raises(ValueError, match="width"):
        build_model("mlp", width=0, num_classes=10, input_shape=SIGNAL)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", width=4, num_classes=1, input_shape=SIGNAL)
    with pytest.raises(ValueError, match="spatial size >= 32"):
        build_model("vgg11", width=4, num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        build_model("resnet18", width=4, num_classes=10, input_shape=(1, 2, 3, 4))
