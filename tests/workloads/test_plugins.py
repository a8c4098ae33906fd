"""workloads/plugins.py: references to users' code, entry points, calling conventions, clear errors."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap

import pytest

from workloads.plugins import PluginError, check_call, is_reference, load_reference, module_origin, split_reference
from tests.helpers import user_module_folder
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder outside the repository holding a user's module, as the working directory."""
    mynets = textwrap.dedent("""
        def build(*, width, num_classes, input_shape, depth=2):
            return ("model", width, num_classes, input_shape, depth)

        class factory:
            @staticmethod
            def make(**kw):
                return kw

        CONSTANT = 3
    """)
    files = {"mynets.py": mynets, "broken.py": "raise RuntimeError('the user module is broken')\n",
             "needs.py": "import no_such_dependency_xyz\n"}
    with user_module_folder(tmp_path, monkeypatch, files) as folder:
        yield folder


def test_reference_syntax():
    assert is_reference("mynets:build") and not is_reference("mlp")
    assert split_reference("pkg.sub:factory.make") == ("pkg.sub", "factory.make")
    for bad in ("mynets:", ":build", "my nets:build", "mynets:bu-ild"):
        with pytest.raises(PluginError, match="module:function"):
            split_reference(bad)


def test_a_module_in_the_working_directory_is_found(user_dir):
    fn = load_reference("mynets:build", "model")
    assert fn(width=4, num_classes=3, input_shape=(2,)) == ("model", 4, 3, (2,), 2)
    assert load_reference("mynets:factory.make")(a=1) == {"a": 1}
    assert module_origin("mynets") == str(user_dir / "mynets.py")


def test_typos_name_the_closest_attribute_and_module(user_dir):
    with pytest.raises(PluginError, match=r"did you mean 'mynets:build'\?") as info:
        load_reference("mynets:buld", "model")
    assert "Callables there: build, factory" in str(info.value)
    with pytest.raises(PluginError, match=r"no module named 'mynet'.*did you mean 'mynets'\?"):
        load_reference("mynet:build", "model")
    with pytest.raises(PluginError, match="is a int, not a function"):
        load_reference("mynets:CONSTANT", "model")


def test_errors_inside_the_users_module_are_their_own(user_dir):
    with pytest.raises(PluginError, match="importing broken raised RuntimeError: the user module is broken"):
        load_reference("broken:f", "dataset")
    with pytest.raises(PluginError, match="importing needs failed: No module named 'no_such_dependency_xyz'"):
        load_reference("needs:f", "dataset")


def test_check_call_names_missing_and_unknown_arguments(user_dir):
    fn = load_reference("mynets:build")
    check_call("model", "mynets:build", fn, ("width", "num_classes", "input_shape"), {"depth": 3})
    with pytest.raises(PluginError, match=r"takes no option\(s\) \['dept'\]; its options: depth"):
        check_call("model", "mynets:build", fn, ("width", "num_classes", "input_shape"), {"dept": 3})

    def no_width(*, num_classes, input_shape):
        return None

    with pytest.raises(PluginError, match=r"must accept the keyword argument\(s\) \['width'\]"):
        check_call("model", "x:no_width", no_width, ("width", "num_classes", "input_shape"), {})


def test_plugin_errors_survive_pickling():
    err = PluginError("model 'a:b': something")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is PluginError and str(back) == str(err)


def test_the_translation_example_is_a_learnable_token_task():
    sys.path.insert(0, os.path.join(ROOT, "examples", "translation"))
    try:
        import torch

        import seqnets

        x, y, tx, ty = seqnets.reorder_translation(seed=3, train_size=64, test_size=16, length=6, vocab=10)
        assert x.shape == y.shape == (64, 6) and tx.shape == (16, 6)
        assert x.dtype == y.dtype == torch.int64 and int(y.max()) < 10
        again = seqnets.reorder_translation(seed=3, train_size=64, test_size=16, length=6, vocab=10)
        assert all(torch.equal(a, b) for a, b in zip((x, y, tx, ty), again))
        # The rule of the docstring, checked on one sentence by hand.
        gen = torch.Generator().manual_seed(3)
        dictionaries = [torch.randperm(10, generator=gen) for _ in range(2)]
        src = x[0].tolist()
        for i in range(6):
            j = 5 - i
            prev = src[j - 1] if j > 0 else 0
            assert int(y[0, i]) == int(dictionaries[prev % 2][src[j]])
        model = seqnets.transformer(width=8, num_classes=10, input_shape=(6,))
        assert model(x[:4]).shape == (4, 6, 10)
    finally:
        sys.path.remove(os.path.join(ROOT, "examples", "translation"))
        sys.modules.pop("seqnets", None)
