"""Datasets: built-in generators, the real on-disk image formats through torchvision, and load transforms."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from workloads import datasets as data_mod
from workloads.data import (
    Dataset,
    DatasetCorruptedError,
    DatasetNotFoundError,
    corrupt_labels,
    load_dataset,
    subsample_train,
)

# Written out here (not imported) so a change of the module's constants is caught.
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465])
CIFAR_STD = np.array([0.2023, 0.1994, 0.2010])


# ------------------------------------------------------------------------------------------------------
# mnist1d and digits

def test_mnist1d_generation_restores_global_rngs():
    data_mod._mnist1d_arrays.cache_clear()  # force a real make_dataset call (it reseeds the globals)
    random.seed(123)
    np.random.seed(123)
    ds = load_dataset("mnist1d")
    after = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    assert after == (random.random(), np.random.rand())
    assert ds.info["generator_seed"] == 42


def test_mnist1d_shapes_dtypes_and_balance():
    ds = load_dataset("mnist1d")
    assert ds.name == "mnist1d" and ds.num_classes == 10
    assert ds.train_x.shape == (4000, 40) and ds.test_x.shape == (1000, 40)
    assert ds.input_shape == (40,)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.train_y.shape == (4000,) and ds.test_y.shape == (1000,)
    counts = torch.bincount(ds.train_y, minlength=10)
    assert counts.min() > 350 and counts.max() < 450  # 500 generated per class, then shuffled and split
    # the generator standardises the whole dataset (train + test) to mean 0, std 1
    both = torch.cat([ds.train_x, ds.test_x]).double()
    assert abs(float(both.mean())) < 1e-5 and abs(float(both.std()) - 1) < 1e-3
    assert ds.info["train_size"] == 4000 and ds.info["test_size"] == 1000


def test_loads_are_independent_copies():
    a = load_dataset("mnist1d")
    a.train_x.zero_()
    a.train_y.fill_(3)
    b = load_dataset("mnist1d")
    assert b.train_x.abs().sum() > 0 and not torch.all(b.train_y == 3)


def test_digits_split_is_stratified_scaled_and_fixed():
    ds = load_dataset("digits")
    assert ds.train_x.shape == (1437, 64) and ds.test_x.shape == (360, 64)
    assert ds.train_x.dtype == torch.float32 and ds.input_shape == (64,)
    assert float(ds.train_x.min()) == 0.0 and float(ds.train_x.max()) == 1.0
    # stratified: every class's test share is within one example of 20%
    total = torch.bincount(torch.cat([ds.train_y, ds.test_y]), minlength=10).double()
    test = torch.bincount(ds.test_y, minlength=10).double()
    assert torch.all((test - 0.2 * total).abs() <= 1.0)
    again = load_dataset("digits")
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)


def test_default_dataset_is_mnist1d():
    assert load_dataset().name == "mnist1d"


# ------------------------------------------------------------------------------------------------------
# Image datasets in their real on-disk formats

def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng, n):
    """(n, 3, 32, 32) uint8 with distinct content per image and channel."""
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(root, rng, per_batch=3, test=4):
    """The python version of CIFAR-10: pickled dicts, rows of 3072 bytes (R, G, B planes, row-major)."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    train_imgs, train_labels = [], []
    for b in range(1, 6):
        imgs, labels = _images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        _pickle(os.path.join(folder, f"data_batch_{b}"),
                {"batch_label": f"training batch {b} of 5", "labels": labels,
                 "data": imgs.reshape(per_batch, 3072), "filenames": [f"img{i}.png" for i in range(per_batch)]})
        train_imgs.append(imgs)
        train_labels += labels
    test_imgs, test_labels = _images(rng, test), rng.integers(0, 10, test).tolist()
    _pickle(os.path.join(folder, "test_batch"),
            {"batch_label": "testing batch 1 of 1", "labels": test_labels,
             "data": test_imgs.reshape(test, 3072), "filenames": [f"t{i}.png" for i in range(test)]})
    _pickle(os.path.join(folder, "batches.meta"),
            {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch, "num_vis": 3072})
    return np.concatenate(train_imgs), np.array(train_labels), test_imgs, np.array(test_labels)


def write_cifar100(root, rng, train=6, test=3):
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder)
    out = []
    for split, n in (("train", train), ("test", test)):
        imgs, fine = _images(rng, n), rng.integers(0, 100, n).tolist()
        _pickle(os.path.join(folder, split),
                {"filenames": [f"{split}{i}.png" for i in range(n)], "batch_label": split, "fine_labels": fine,
                 "coarse_labels": [f // 5 for f in fine], "data": imgs.reshape(n, 3072)})
        out += [imgs, np.array(fine)]
    _pickle(os.path.join(folder, "meta"),
            {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]})
    return tuple(out)


def write_svhn(root, rng, train=5, test=4):
    """SVHN format 2: X (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for digit 0."""
    from scipy.io import savemat

    os.makedirs(root, exist_ok=True)
    out = []
    for split, n in (("train", train), ("test", test)):
        imgs = _images(rng, n)
        digits = np.concatenate([[0], rng.integers(0, 10, n - 1)])  # make sure a 0 is present
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(os.path.join(root, f"{split}_32x32.mat"), {"X": imgs.transpose(2, 3, 1, 0), "y": y})
        out += [imgs, digits]
    return tuple(out)


def _expected(images):
    """Independent normalisation: (pixel / 255 - mean[c]) / std[c] in float64."""
    return (images.astype(np.float64) / 255.0 - CIFAR_MEAN[None, :, None, None]) / CIFAR_STD[None, :, None, None]


@pytest.fixture
def skip_md5(monkeypatch):
    """Our test files are in the real format but are not the canonical release, so torchvision's md5
    comparison would reject them; replace only that comparison by a presence check."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.svhn as tv_svhn

    def present(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(tv_cifar, "check_integrity", present)
    monkeypatch.setattr(tv_svhn, "check_integrity", present)


@pytest.mark.parametrize("name, writer, num_classes", [
    ("cifar10", write_cifar10, 10), ("cifar100", write_cifar100, 100), ("svhn", write_svhn, 10)])
def test_image_dataset_read_through_torchvision(tmp_path, skip_md5, name, writer, num_classes):
    x, y, xt, yt = writer(str(tmp_path), np.random.default_rng(0))
    ds = load_dataset(name, root=tmp_path)
    assert ds.num_classes == num_classes and ds.input_shape == (3, 32, 32)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    np.testing.assert_allclose(ds.train_x.numpy(), _expected(x), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ds.test_x.numpy(), _expected(xt), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ds.train_y.numpy(), y)
    np.testing.assert_array_equal(ds.test_y.numpy(), yt)
    assert ds.info["train_size"] == len(y) and ds.info["root"] == str(tmp_path)


def test_svhn_label_10_means_digit_0(tmp_path, skip_md5):
    write_svhn(str(tmp_path), np.random.default_rng(1))
    ds = load_dataset("svhn", root=str(tmp_path))
    assert int(ds.train_y.max()) <= 9 and (ds.train_y == 0).any()


def test_image_dataset_without_root_says_what_to_pass():
    with pytest.raises(DatasetNotFoundError, match=r"root=.*cifar-10-batches-py/.*data_batch_1.*test_batch"):
        load_dataset("cifar10")


@pytest.mark.parametrize("name, expected", [
    ("cifar10", r"missing data_batch_1, .*batches.meta under .*cifar-10-batches-py.*cs.toronto.edu"),
    ("cifar100", r"missing train, test, meta under .*cifar-100-python"),
    ("svhn", r"missing train_32x32.mat, test_32x32.mat.*housenumbers"),
])
def test_missing_files_are_named(tmp_path, name, expected):
    with pytest.raises(DatasetNotFoundError, match=expected):
        load_dataset(name, root=tmp_path)


def test_one_missing_cifar_batch_is_named(tmp_path):
    write_cifar10(str(tmp_path), np.random.default_rng(0))
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetNotFoundError, match=r"missing data_batch_3 under"):
        load_dataset("cifar10", root=tmp_path)


def test_non_canonical_files_fail_the_md5_check(tmp_path):
    write_cifar10(str(tmp_path), np.random.default_rng(0))
    with pytest.raises(DatasetCorruptedError, match="md5"):
        load_dataset("cifar10", root=tmp_path)


# ------------------------------------------------------------------------------------------------------
# Dataset container

def toy(n_per_class=(10, 20, 30), features=3, seed=0):
    """Rows are [label, index, noise...] so a row identifies its original position."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((k,), c) for c, k in enumerate(n_per_class)])
    y = y[torch.randperm(len(y), generator=g)]
    x = torch.cat([y[:, None].float(), torch.arange(len(y))[:, None].float(),
                   torch.randn(len(y), features - 2, generator=g)], dim=1)
    return Dataset("toy", x, y, x[:5].clone(), y[:5].clone(), len(n_per_class), {"train_size": len(y)})


def test_dataset_validates_dtypes_and_labels():
    ds = toy()
    with pytest.raises(TypeError, match="float32"):
        Dataset("bad", ds.train_x.double(), ds.train_y, ds.test_x, ds.test_y, 3)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        Dataset("bad", ds.train_x, ds.train_y, ds.test_x, ds.test_y, 2)
    with pytest.raises(ValueError, match="rows"):
        Dataset("bad", ds.train_x[:-1], ds.train_y, ds.test_x, ds.test_y, 3)


def test_to_returns_copy_with_own_info():
    ds = toy()
    moved = ds.to("cpu")
    moved.info["x"] = 1
    assert "x" not in ds.info and torch.equal(moved.train_x, ds.train_x)


# ------------------------------------------------------------------------------------------------------
# subsample_train

def test_subsample_is_class_balanced_and_recorded():
    ds = toy((10, 20, 30))
    sub = subsample_train(ds, 0.25, seed=3)
    # round-half-up of 2.5, 5, 7.5
    assert torch.bincount(sub.train_y, minlength=3).tolist() == [3, 5, 8]
    assert sub.info["fraction"] == 0.25 and sub.info["fraction_seed"] == 3 and sub.info["train_size"] == 16
    # every kept row is an original row with its own label (column 1 holds the original index)
    orig = sub.train_x[:, 1].long()
    assert torch.equal(ds.train_x[orig], sub.train_x) and torch.equal(ds.train_y[orig], sub.train_y)
    assert len(set(orig.tolist())) == 16
    assert torch.equal(sub.test_x, ds.test_x)


def test_subsample_is_seeded_and_leaves_input_alone():
    ds = toy((40, 40, 40))
    before = ds.train_x.clone(), ds.train_y.clone(), dict(ds.info)
    a, b, c = subsample_train(ds, 0.5, 0), subsample_train(ds, 0.5, 0), subsample_train(ds, 0.5, 1)
    assert torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_x, c.train_x)
    assert torch.equal(ds.train_x, before[0]) and torch.equal(ds.train_y, before[1]) and ds.info == before[2]


def test_subsample_full_fraction_keeps_everything_and_bad_fraction_fails():
    ds = toy()
    assert subsample_train(ds, 1.0, 0).train_size == ds.train_size
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            subsample_train(ds, bad, 0)


def test_subsample_mnist1d():
    ds = load_dataset("mnist1d")
    sub = subsample_train(ds, 0.1, seed=0)
    full = torch.bincount(ds.train_y, minlength=10)
    expected = torch.floor(full.double() * 0.1 + 0.5).long()
    assert torch.equal(torch.bincount(sub.train_y, minlength=10), expected)
    assert sub.info["train_size_full"] == 4000


# ------------------------------------------------------------------------------------------------------
# corrupt_labels

@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.37, 1.0])
def test_corrupted_labels_are_all_wrong_and_exact(alpha):
    ds = toy((100, 100, 100))
    noisy = corrupt_labels(ds, alpha, seed=5)
    changed = noisy.train_y != ds.train_y
    expected = int(np.floor(alpha * 300 + 0.5))
    assert int(changed.sum()) == expected  # a chosen label never stays the same
    assert noisy.info["label_noise_realised"] == expected / 300
    assert noisy.info["label_noise"] == alpha and noisy.info["label_noise_seed"] == 5
    assert noisy.info["label_noise_count"] == expected
    assert torch.equal(noisy.train_x, ds.train_x) and torch.equal(noisy.test_y, ds.test_y)
    assert int(noisy.train_y.min()) >= 0 and int(noisy.train_y.max()) < 3


def test_corruption_is_seeded_and_leaves_input_alone():
    ds = toy((50, 50, 50))
    before = ds.train_y.clone()
    a, b, c = corrupt_labels(ds, 0.3, 1), corrupt_labels(ds, 0.3, 1), corrupt_labels(ds, 0.3, 2)
    assert torch.equal(a.train_y, b.train_y) and not torch.equal(a.train_y, c.train_y)
    assert torch.equal(ds.train_y, before) and "label_noise" not in ds.info


def test_new_labels_cover_every_other_class():
    ds = load_dataset("mnist1d")
    noisy = corrupt_labels(ds, 0.5, seed=0)
    changed = noisy.train_y != ds.train_y
    pairs = ds.train_y[changed] * 10 + noisy.train_y[changed]
    counts = torch.bincount(pairs, minlength=100).view(10, 10)
    assert torch.all(counts.diagonal() == 0)
    off = counts[~torch.eye(10, dtype=torch.bool)]
    # ~2000 changes over 90 (old, new) pairs: about 22 each if uniform; all present, none wildly off
    assert off.min() >= 5 and off.max() <= 50


def test_bad_alpha_fails():
    with pytest.raises(ValueError, match="alpha"):
        corrupt_labels(toy(), 1.2, 0)


def test_mnist1d_disk_cache_matches_generation_and_survives_a_corrupt_file(tmp_path, monkeypatch):
    import numpy as np

    from workloads import datasets as data_module

    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path))
    data_module._mnist1d_arrays.cache_clear()
    try:
        generated = data_module._mnist1d_arrays()  # generates and writes the cache file
        (cache_file,) = tmp_path.iterdir()
        data_module._mnist1d_arrays.cache_clear()
        cached = data_module._mnist1d_arrays()  # read back from disk
        for a, b in zip(generated[:4], cached[:4]):
            np.testing.assert_array_equal(a, b)
        assert generated[4] == cached[4]
        cache_file.write_bytes(b"not an npz file")
        data_module._mnist1d_arrays.cache_clear()
        regenerated = data_module._mnist1d_arrays()  # a broken cache is regenerated, not an error
        np.testing.assert_array_equal(regenerated[0], generated[0])
    finally:
        data_module._mnist1d_arrays.cache_clear()
