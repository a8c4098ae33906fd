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
import json
import math
import os

import torch

from workloads import plugins
from workloads import datasets as _builtin_datasets  # noqa: F401  (registers the built-in loaders in DATASETS)
from workloads.dataset import (  # noqa: F401  (re-exported: where the tool and plug-ins import them from)
    DATASETS,
    DEFAULT_DATASET,
    Dataset,
    DatasetCorruptedError,
    DatasetNotFoundError,
)

# --------------------------------------------------------------------------------------------------------
# Entry point


def load_dataset(name: str = DEFAULT_DATASET, root: str | os.PathLike | None = None, *, seed: int = 0,
                 args: dict | None = None) -> Dataset:
    """Load dataset ``name`` as CPU tensors: a built-in of the module table, a ``module:function`` reference or
    an entry point of ``landscape.datasets`` (workloads/plugins.py).

    root: folder holding the image datasets' files (ignored by mnist1d and digits, which need no files); a
    user's function is called as fn(root=root, seed=seed, **args) (built-ins take no ``args``).
    Arrays are cached per process (a user's function is called once per (name, root, seed, args)), so calling
    this once per trial costs one tensor copy, and each call returns fresh tensors the caller may modify freely.
    """
    args = dict(args or {})
    fn = plugins.user_callable("dataset", name, DATASETS)
    if fn is None:
        if args:
            raise plugins.PluginError(f"the built-in dataset {name!r} takes no options (got {sorted(args)}); "
                                      f"dataset_args are for a plug-in dataset function")
        return DATASETS.get(name)(root)
    plugins.check_call("dataset", name, fn, ("root", "seed"), args)
    key = (name, None if root is None else str(root), int(seed), json.dumps(args, sort_keys=True, default=str))
    if key not in _USER_DATA:
        _USER_DATA.clear()  # one user dataset per process at a time (a worker runs one sweep)
        _USER_DATA[key] = user_dataset(name, plugins.call_user("dataset", name, fn, root=root, seed=int(seed), **args),
                                       {"source": name, "seed": int(seed), "args": args})
    ds = _USER_DATA[key]
    return dataclasses.replace(ds, train_x=ds.train_x.clone(), train_y=ds.train_y.clone(), test_x=ds.test_x.clone(),
                               test_y=ds.test_y.clone(), info=dict(ds.info))


_USER_DATA: dict[tuple, Dataset] = {}  # load_dataset's cache of a user's dataset (CPU tensors)


def user_dataset(name: str, out, info: dict) -> Dataset:
    """A Dataset from what a user's dataset function returned: a Dataset, or (train_x, train_y, test_x, test_y)
    tensors or arrays. Float inputs become float32, integer inputs int64 tokens; targets int64 of shape (n,) or
    (n, T); the number of classes is the largest target + 1. PluginError naming what is wrong."""
    if isinstance(out, Dataset):
        return dataclasses.replace(out, info={**out.info, **info})
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise plugins.PluginError(f"dataset {name!r} returned a {type(out).__name__}; it must return a "
                                  f"workloads.data.Dataset or (train_x, train_y, test_x, test_y)")
    try:
        train_x, train_y, test_x, test_y = [torch.as_tensor(a).cpu() for a in out]
    except (TypeError, ValueError, RuntimeError) as exc:
        raise plugins.PluginError(f"dataset {name!r}: its four arrays are not tensors ({exc})") from None
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x.is_complex() or x.dtype == torch.bool:
            raise plugins.PluginError(f"dataset {name!r}: {split}_x is {x.dtype}; inputs are float features or "
                                      f"integer tokens")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.ndim not in (1, 2):
            raise plugins.PluginError(f"dataset {name!r}: {split}_y must be integer class indices of shape (n,) or "
                                      f"(n, T) (got {y.dtype} of shape {tuple(y.shape)})")
    num_classes = max(int(train_y.max()) if train_y.numel() else 0, int(test_y.max()) if test_y.numel() else 0) + 1
    as_input = (lambda x: x.float().contiguous()) if train_x.is_floating_point() else (lambda x: x.long().contiguous())
    try:
        return Dataset(name, as_input(train_x), train_y.long().contiguous(), as_input(test_x),
                       test_y.long().contiguous(), max(num_classes, 2), info)
    except (TypeError, ValueError) as exc:
        raise plugins.PluginError(f"dataset {name!r}: {exc}") from None



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

    Class balance is preserved exactly (up to rounding); sequence targets (n, T) have no class per example, so
    round(fraction * n) examples are drawn uniformly. The test split is untouched. Kept points stay in their
    original order. info gains fraction, fraction_seed, train_size.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    gen = _generator(seed)
    labels = ds.train_y.cpu()
    kept = []
    # Sequence targets (n, T) have no class per example: round(fraction * n) examples drawn uniformly.
    groups = range(ds.num_classes) if labels.ndim == 1 else [None]
    for c in groups:
        members = torch.nonzero(labels == c).flatten() if c is not None else torch.arange(len(labels))  # (count_c,)
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
    if ds.train_y.ndim != 1:
        raise ValueError(f"{ds.name}: label noise replaces one label per example; its targets are sequences "
                         f"{tuple(ds.train_y.shape[1:])}: sweep width, train_fraction or a temperature instead")
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

