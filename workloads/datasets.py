"""The built-in datasets, registered in workloads.data.DATASETS (see the table in workloads/data.py).

Nothing is ever downloaded. The image datasets are read through torchvision's own loaders, which verify the
md5 of every file against the canonical release: a missing file raises DatasetNotFoundError saying what to
put where; a present but different file raises DatasetCorruptedError.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from workloads.atomic import write_atomically
from workloads.dataset import DATASETS, Dataset, DatasetCorruptedError, DatasetNotFoundError

# Image normalisation, per channel, applied after scaling pixels to [0, 1]. These are the constants of the
# authors' released code (method.md, section 2). They are used for CIFAR-100 and SVHN too: one fixed,
# documented input scale for every image dataset (SVHN's own channel means differ by < 0.06 from these,
# so its inputs stay roughly standardised) and no statistic that depends on which files are on disk.
IMAGE_MEAN = (0.4914, 0.4822, 0.4465)
IMAGE_STD = (0.2023, 0.1994, 0.2010)

# digits: held-out test size and split seed (360 of 1797 = 20%, stratified by class).
DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh float32/int64 tensors from (possibly cached, read-only) arrays."""
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Freeze cached arrays so no caller can silently change what later calls receive."""
    for a in arrays:
        a.setflags(write=False)
    return arrays


# --------------------------------------------------------------------------------------------------------
# MNIST-1D (default): generated, no files

def _cache_dir() -> str:
    """Where generated data sets are kept between processes (LANDSCAPE_CACHE_DIR, else ~/.cache/landscape)."""
    return os.environ.get("LANDSCAPE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "landscape")


def _generate_mnist1d() -> tuple[dict, int]:
    """Run the generator (~3-4 s): ``make_dataset`` reseeds Python's and NumPy's global generators, so their
    states are restored afterwards and loading data never changes the caller's random streams."""
    from mnist1d.data import get_dataset_args, make_dataset  # lazy: the package imports requests

    args = get_dataset_args()
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return raw, int(args.seed)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(x (4000, 40), y (4000,), x_test (1000, 40), y_test (1000,), seed), generated with the package defaults.

    Generation costs seconds in every process (each Ray worker, test and CLI run), so the arrays are kept in a
    .npz file keyed by the mnist1d version; the file is only an accelerator: when it is missing, unreadable
    or unwritable, the data are generated again.
    """
    from importlib.metadata import version

    path = os.path.join(_cache_dir(), f"mnist1d-{version('mnist1d')}-defaults.npz")
    names = ("x", "y", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = tuple(cached[n] for n in names)
            seed = int(cached["seed"])
        if arrays[0].shape != (4000, 40) or arrays[2].shape != (1000, 40):
            raise ValueError("unexpected shapes")
    except (OSError, KeyError, ValueError):
        raw, seed = _generate_mnist1d()
        arrays = (
            np.asarray(raw["x"], dtype=np.float32),
            np.asarray(raw["y"], dtype=np.int64),
            np.asarray(raw["x_test"], dtype=np.float32),
            np.asarray(raw["y_test"], dtype=np.int64),
        )
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)

            def write(tmp: str) -> None:
                with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                    np.savez(f, seed=seed, **dict(zip(names, arrays)))

            write_atomically(path, write)  # concurrent workers never read half a file
        except OSError:
            pass
    return (*_read_only(*arrays), seed)


@DATASETS.register("mnist1d")
def load_mnist1d(root=None) -> Dataset:
    """MNIST-1D (Greydanus 2020): 10 classes of 40-sample 1-D signals, standardised by the generator."""
    x, y, xt, yt, seed = _mnist1d_arrays()
    train_x, train_y = _tensors(x, y)
    test_x, test_y = _tensors(xt, yt)
    info = {"source": "mnist1d.data.make_dataset(get_dataset_args())", "generator_seed": seed}
    return _finish("mnist1d", train_x, train_y, test_x, test_y, 10, info)


def _finish(name, train_x, train_y, test_x, test_y, num_classes, info) -> Dataset:
    """Build the Dataset and record the sizes every loader reports."""
    info = {**info, "train_size": int(train_y.shape[0]), "train_size_full": int(train_y.shape[0]),
            "test_size": int(test_y.shape[0])}
    return Dataset(name, train_x, train_y, test_x, test_y, num_classes, info)


# --------------------------------------------------------------------------------------------------------
# sklearn digits: bundled with scikit-learn, no files

@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified seeded split of the 1797 8x8 digits: x (1437, 64) in [0, 1], y (1437,); test (360, ...)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / 16.0  # pixel intensities are 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return _read_only(*(np.ascontiguousarray(a) for a in (x_tr, y_tr, x_te, y_te)))


@DATASETS.register("digits")
def load_digits_dataset(root=None) -> Dataset:
    """sklearn's 8x8 handwritten digits, flattened to (64,), scaled to [0, 1]."""
    x, y, xt, yt = _digits_arrays()
    train_x, train_y = _tensors(x, y)
    test_x, test_y = _tensors(xt, yt)
    info = {"source": "sklearn.datasets.load_digits", "split_seed": DIGITS_SPLIT_SEED,
            "split": "stratified train_test_split"}
    return _finish("digits", train_x, train_y, test_x, test_y, 10, info)


# --------------------------------------------------------------------------------------------------------
# synthetic-cifar: CIFAR's shapes and sizes without its files, for benchmarks only

SYNTHETIC_CIFAR_SEED = 0
SYNTHETIC_CIFAR_SIGNAL = 0.5  # template scale against unit noise: learnable, not trivially separable


@DATASETS.register("synthetic-cifar")
def load_synthetic_cifar(root=None) -> Dataset:
    """NOT real data: 50000 / 10000 images (3, 32, 32) = SIGNAL * template[class] + N(0, 1), seeded.

    It has CIFAR-10's shapes, sizes and (roughly) input scale, so a training or a Hessian on it costs what
    it costs on CIFAR-10; nothing it learns means anything. Used by benchmarks/gpu.py on machines without
    the CIFAR files. Labels are balanced (i mod 10, then shuffled).
    """
    gen = torch.Generator(device="cpu").manual_seed(SYNTHETIC_CIFAR_SEED)
    templates = torch.randn(10, 3, 32, 32, generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % 10)[torch.randperm(n, generator=gen)]
        x = torch.empty(n, 3, 32, 32)
        for start in range(0, n, 10000):  # in chunks: one temporary of the full size would double the memory
            stop = min(n, start + 10000)
            x[start:stop] = torch.randn(stop - start, 3, 32, 32, generator=gen)
            x[start:stop] += SYNTHETIC_CIFAR_SIGNAL * templates[y[start:stop]]
        return x, y.to(torch.int64)

    train_x, train_y = split(50000)
    test_x, test_y = split(10000)
    info = {"source": "synthetic (NOT real data): class templates + Gaussian noise", "generator_seed":
            SYNTHETIC_CIFAR_SEED, "signal": SYNTHETIC_CIFAR_SIGNAL}
    return _finish("synthetic-cifar", train_x, train_y, test_x, test_y, 10, info)


# --------------------------------------------------------------------------------------------------------
# Image datasets through torchvision, from a local folder

@dataclass(frozen=True)
class _ImageSpec:
    """Where a torchvision image dataset's files live under ``root`` and how to describe them."""

    name: str
    num_classes: int
    folder: str  # relative to root ("" = root itself)
    files: tuple[str, ...]
    description: str


_IMAGE_SPECS = {
    "cifar10": _ImageSpec(
        "cifar10", 10, "cifar-10-batches-py",
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
         "batches.meta"),
        f"the python version of CIFAR-10 (cifar-10-python.tar.gz from {CIFAR_URL}, extracted)",
    ),
    "cifar100": _ImageSpec(
        "cifar100", 100, "cifar-100-python", ("train", "test", "meta"),
        f"the python version of CIFAR-100 (cifar-100-python.tar.gz from {CIFAR_URL}, extracted)",
    ),
    "svhn": _ImageSpec(
        "svhn", 10, "", ("train_32x32.mat", "test_32x32.mat"),
        f"the cropped-digits (format 2) files of SVHN from {SVHN_URL}",
    ),
}


def _require_files(spec: _ImageSpec, root) -> str:
    """The resolved root; DatasetNotFoundError naming every expected path if root or any file is missing."""
    where = (os.path.join("ROOT", spec.folder) if spec.folder else "ROOT")
    expected = f"expected {where}/{{{','.join(spec.files)}}}: {spec.description}"
    if root is None:
        raise DatasetNotFoundError(
            f"dataset {spec.name!r} is read from local files and never downloaded: pass root=ROOT, "
            f"the folder holding them; {expected}"
        )
    root = os.path.abspath(os.fspath(root))
    missing = [f for f in spec.files if not os.path.isfile(os.path.join(root, spec.folder, f))]
    if missing:
        raise DatasetNotFoundError(
            f"dataset {spec.name!r}: missing {', '.join(missing)} under {os.path.join(root, spec.folder)}; "
            f"{expected} (ROOT = {root})"
        )
    return root


def missing_files(name: str, root) -> str | None:
    """Why dataset ``name``'s files are not all under ``root`` (every expected path named), or None when they
    are or when ``name`` is not a file-backed dataset. Cheap: the files are looked for, not read (the md5
    check runs when a job loads them)."""
    spec = _IMAGE_SPECS.get(name)
    if spec is None:
        return None
    try:
        _require_files(spec, root)
    except DatasetNotFoundError as exc:
        return str(exc)
    return None


def _corrupted(spec: _ImageSpec, root: str, err: Exception) -> DatasetCorruptedError:
    return DatasetCorruptedError(
        f"dataset {spec.name!r}: files under {os.path.join(root, spec.folder)} are present but fail "
        f"torchvision's md5 check ({err}); they must be the unmodified {spec.description}"
    )


def _torchvision_split(spec: _ImageSpec, root: str, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """One split as (N, 3, 32, 32) uint8 and (N,) int64, read by torchvision (md5-checked)."""
    import torchvision.datasets as tvd  # lazy: importing torchvision costs ~1 s

    if spec.name == "svhn":
        ds = tvd.SVHN(root, split="train" if train else "test", download=False)
        images = ds.data  # already (N, 3, 32, 32); torchvision maps label 10 to digit 0
        labels = ds.labels
    else:
        cls = tvd.CIFAR10 if spec.name == "cifar10" else tvd.CIFAR100
        ds = cls(root, train=train, download=False)
        images = ds.data.transpose(0, 3, 1, 2)  # torchvision keeps (N, H, W, C)
        labels = ds.targets
    return np.ascontiguousarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64).reshape(-1)


@functools.lru_cache(maxsize=2)
def _image_arrays(name: str, root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cached raw uint8 arrays (the float copies are 4x larger and made per call)."""
    spec = _IMAGE_SPECS[name]
    try:
        x, y = _torchvision_split(spec, root, train=True)
        xt, yt = _torchvision_split(spec, root, train=False)
    except RuntimeError as err:  # torchvision's only failure mode after our presence check: checksum
        raise _corrupted(spec, root, err) from err
    return _read_only(x, y, xt, yt)


def normalise_images(images: np.ndarray, mean=IMAGE_MEAN, std=IMAGE_STD) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C, H, W): (pixel / 255 - mean[c]) / std[c]."""
    x = torch.tensor(images, dtype=torch.float32).div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def _load_image_dataset(name: str, root) -> Dataset:
    spec = _IMAGE_SPECS[name]
    root = _require_files(spec, root)
    x, y, xt, yt = _image_arrays(name, root)
    info = {"source": f"torchvision.datasets ({spec.folder or 'root'})", "root": root,
            "normalisation": {"mean": list(IMAGE_MEAN), "std": list(IMAGE_STD)}}
    return _finish(name, normalise_images(x), torch.tensor(y), normalise_images(xt), torch.tensor(yt),
                   spec.num_classes, info)


def _register_image_loader(name: str) -> Callable:
    def loader(root=None) -> Dataset:
        return _load_image_dataset(name, root)

    loader.__name__ = f"load_{name}"
    loader.__doc__ = f"{name}: (3, 32, 32) float32 normalised with IMAGE_MEAN/IMAGE_STD; needs root."
    return DATASETS.register(name)(loader)


for _name in _IMAGE_SPECS:
    _register_image_loader(_name)
