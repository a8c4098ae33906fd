"""Registry: lookup, duplicate names, and readable did-you-mean errors."""

import pytest

from workloads.data import DATASETS, load_dataset
from workloads.models import MODELS, build_model
from workloads.registry import Registry, UnknownNameError


@pytest.fixture
def colours():
    reg = Registry("colour")

    @reg.register("red")
    def red():
        return "r"

    @reg.register("green")
    def green():
        return "g"

    reg.register("greenish")(lambda: "gi")
    return reg


def test_register_and_get_return_the_function(colours):
    assert colours.get("red")() == "r"
    assert colours.names() == ["green", "greenish", "red"]
    assert "red" in colours and "blue" not in colours and 3 not in colours
    assert len(colours) == 3 and list(colours) == colours.names()


def test_duplicate_name_is_rejected(colours):
    with pytest.raises(ValueError, match="already registered"):
        colours.register("red")(lambda: None)


def test_unknown_name_error_is_lookup_and_value_error(colours):
    with pytest.raises(UnknownNameError) as info:
        colours.get("gren")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, LookupError) and isinstance(err, ValueError)
    assert err.suggestions[0] == "green"
    text = str(err)
    # readable, not KeyError's repr-quoted form
    assert not text.startswith('"') and not text.startswith("'")
    assert text.startswith("unknown colour 'gren'; did you mean 'green'")
    assert "Known colour names: green, greenish, red" in text


def test_suggestions_ignore_case(colours):
    with pytest.raises(UnknownNameError, match="did you mean 'red'"):
        colours.get("RED")


def test_no_suggestion_for_unrelated_name_still_lists_known(colours):
    with pytest.raises(UnknownNameError) as info:
        colours.get("zzzzzzzz")
    assert info.value.suggestions == []
    assert "did you mean" not in str(info.value)
    assert "green, greenish, red" in str(info.value)


def test_unhashable_name_gives_unknown_name_error(colours):
    with pytest.raises(UnknownNameError):
        colours.get(["red"])


def test_empty_name_rejected():
    with pytest.raises(ValueError):
        Registry("x").register("")


def test_project_registries_use_it():
    assert set(DATASETS.names()) == {"mnist1d", "digits", "cifar10", "cifar100", "svhn", "synthetic-cifar"}
    assert set(MODELS.names()) == {"mlp", "cnn", "resnet18", "vgg11"}
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        build_model("resnet81", width=2, num_classes=10, input_shape=(3, 32, 32))
    with pytest.raises(UnknownNameError, match="did you mean 'cifar10'"):
        load_dataset("cifar-10")
