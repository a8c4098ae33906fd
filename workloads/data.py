"""Datasets held in memory as tensors, and the two "load" transforms of the method (subsample, label noise).

Every dataset is small enough to live on the training device as a whole, so training indexes tensors
directly instead of going through a DataLoader (no workers, no per-sample Python, bit-reproducible).

Datasets (``load_dataset(name, root)``):

=========  ===============  ================  ===========  =======================================
name       train / test     input_shape       classes      source
=========  ===============  ================  ===========  =======================================
mnist1d    4000 / 1000      (40,)             10           generated offline by ``mnist1d`` (seed 42)
digits     1437 / 360       (64,)             10           sklearn's bundled 8x8 digits, flattened
cifar10    50000 / 10000    (3, 32, 32)       10           torchvision, from ``root``
cifar100   50000 / 10000    (3, 32, 32)       100          torchvision, from ``root``
svhn       73257 / 26032    (3, 32, 32)       10           torchvision, from ``root``
synthetic- 50000 / 10000    (3, 32, 32)       10           NOT real data: seeded noise around 10 class
cifar                                                      templates, for benchmarks (benchmarks/gpu.py)
=========  ===============  ================  ===========  =======================================

Nothing is ever downloaded. The image datasets are read through torchvision's own loaders, which verify
the md5 of every file against the canonical release: a missing file raises DatasetNotFoundError saying
what to put where; a present but different file raises DatasetCorruptedError.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import torch

from workloads.registry import Registry

DEFAULT_DATASET = "mnist1d"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where they must be (we never download)."""


class DatasetCorruptedError(ValueError):
    """The files are present but are not the canonical release (torchvision's md5 check failed)."""


@dataclass
class Dataset:
    """A classification dataset held in memory; all four tensors on one device.

    train_x: (n, *input_shape) float32      train_y: (n,) int64 in [0, num_classes)
    test_x:  (m, *input_shape) float32      test_y:  (m,) int64
    info: provenance (generator seed, split seed, fraction and its seed, label noise and its seed, sizes).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_split("train", self.train_x, self.train_y, self.num_classes)
        _check_split("test", self.test_x, self.test_y, self.num_classes)
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(
                f"{self.name}: train inputs have shape {tuple(self.train_x.shape[1:])} but test inputs "
                f"{tuple(self.test_x.shape[1:])}"
            )

    @property
    def input_shape(self) -> tuple:
        """Shape of one input, e.g. (40,) or (3, 32, 32)."""
        return tuple(self.train_x.shape[1:])

    @property
    def train_size(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device) -> "Dataset":
        """A copy with all tensors on ``device`` (the same object's tensors if already there)."""
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
            info=dict(self.info),
        )


def _check_split(split: str, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Fail early on dtype/length/label-range mistakes instead of deep inside training."""
    if x.dtype != torch.float32:
        raise TypeError(f"{split}_x must be float32, got {x.dtype}")
    if y.dtype != torch.int64:
        raise TypeError(f"{split}_y must be int64, got {y.dtype}")
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{split}_x has {x.shape[0]} rows but {split}_y has shape {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"{split}_x is on {x.device} but {split}_y on {y.device}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{split}_y has labels outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")


# --------------------------------------------------------------------------------------------------------
# Registry and entry point

DATASETS = Registry("dataset")


def load_dataset(name: str = DEFAULT_DATASET, root: str | os.PathLike | None = None) -> Dataset:
    """Load dataset ``name`` (see the module table) as CPU tensors.

    root: folder holding the image datasets' files (ignored by mnist1d and digits, which need no files).
    Raw arrays are cached per process, so calling this once per trial costs one tensor copy, and each call
    returns fresh tensors that the caller may modify freely.
    """
    loader = DATASETS.get(name)
    return loader(root)



# --------------------------------------------------------------------------------------------------------
# Load transforms (return new Datasets; the input is never modified)

def round_half_up(x: float) -> int:
    """Rounding with halves going up (Python's round() sends 2.5 to 2)."""
    return int(math.floor(x + 0.5))


def _generator(seed: int) -> torch.Generator:
    """A CPU generator: the same seed gives the same draws on every device."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def subsample_train(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Keep round(fraction * count_c) training points of every class c, drawn at random with ``seed``.

    Class balance is preserved exactly (up to rounding); the test split is untouched. Kept points stay in
    their original order. info gains fraction, fraction_seed, train_size.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    gen = _generator(seed)
    labels = ds.train_y.cpu()
    kept = []
    for c in range(ds.num_classes):
        members = torch.nonzero(labels == c).flatten()  # (count_c,)
        take = round_half_up(fraction * len(members))
        kept.append(members[torch.randperm(len(members), generator=gen)[:take]])
    index = torch.sort(torch.cat(kept)).values
    if len(index) == 0:
        raise ValueError(f"fraction {fraction} of {ds.train_size} training points keeps nothing")
    index = index.to(ds.device)
    info = {**ds.info, "fraction": float(fraction), "fraction_seed": int(seed), "train_size": int(len(index))}
    return dataclasses.replace(ds, train_x=ds.train_x[index], train_y=ds.train_y[index], info=info)


def corrupt_labels(ds: Dataset, alpha: float, seed: int) -> Dataset:
    """Replace the labels of round(alpha * n) randomly chosen training points by a *different* class.

    The new class is uniform over the other num_classes - 1 classes (label + U{1..C-1} mod C), so the
    fraction of wrong labels is exactly the chosen one, unlike drawing any class (about (1 - 1/C) * alpha).
    info gains label_noise (alpha), label_noise_seed, label_noise_count and label_noise_realised (the
    fraction of training labels that differ from the originals, measured after the fact).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"label-noise fraction alpha must be in [0, 1], got {alpha}")
    if ds.num_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    n = ds.train_size
    count = round_half_up(alpha * n)
    gen = _generator(seed)
    chosen = torch.randperm(n, generator=gen)[:count]  # (count,)
    shift = torch.randint(1, ds.num_classes, (count,), generator=gen)  # (count,) in [1, C-1]
    old = ds.train_y.cpu()
    new = old.clone()
    new[chosen] = (old[chosen] + shift) % ds.num_classes
    realised = float((new != old).double().mean()) if n else 0.0
    info = {**ds.info, "label_noise": float(alpha), "label_noise_seed": int(seed),
            "label_noise_count": int(count), "label_noise_realised": realised}
    return dataclasses.replace(ds, train_y=new.to(ds.device), info=info)


# The built-in loaders register themselves in DATASETS (imported last: they use the names above).
from workloads import datasets as _builtin_datasets  # noqa: E402,F401
