"""A dataset in memory (``Dataset``), the errors of a dataset's files, and the registry of dataset loaders.

workloads/datasets.py registers the built-in loaders here; workloads/data.py loads by name and holds the two
"load" transforms of the method. Kept apart from both so that neither imports the other.
"""

from __future__ import annotations

import dataclasses
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

    train_x: (n, *input_shape) float32, or int64 tokens      train_y: (n,) or (n, T) int64 in [0, num_classes)
    test_x:  (m, *input_shape) same dtype as train_x         test_y:  (m,) or (m, T) int64
    Targets (n, T): every target token is one classification (workloads/objective.py).
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
        if self.train_x.dtype != self.test_x.dtype or self.train_y.shape[1:] != self.test_y.shape[1:]:
            raise ValueError(f"{self.name}: train and test differ: inputs {self.train_x.dtype} / {self.test_x.dtype}, "
                             f"targets per example {tuple(self.train_y.shape[1:])} / {tuple(self.test_y.shape[1:])}")
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
    def tokens(self) -> bool:
        """Whether the inputs are integer tokens (no mixup, no float arithmetic on them)."""
        return not self.train_x.is_floating_point()

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
    if x.dtype not in (torch.float32, torch.int64):
        raise TypeError(f"{split}_x must be float32 (features) or int64 (tokens), got {x.dtype}")
    if y.dtype != torch.int64:
        raise TypeError(f"{split}_y must be int64, got {y.dtype}")
    if y.ndim not in (1, 2) or x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{split}_x has {x.shape[0] if x.ndim else 0} rows (shape {tuple(x.shape)}) but {split}_y "
                         f"has shape {tuple(y.shape)}: one row per example in both; targets are (n,) or (n, T)")
    if x.device != y.device:
        raise ValueError(f"{split}_x is on {x.device} but {split}_y on {y.device}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{split}_y has labels outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")


DATASETS = Registry("dataset")
