"""The load and temperature knobs, one declaration each: what a value may be, what it changes in a cell, which
end is hot, what to advise, and what it does to the cost.

    KNOBS["width"].check(0)      -> "a width must be an integer in [1, 1000000], got 0"
    applied(cell knobs)          -> {"model.width": 64, "training.batch_size": 32, "data.label_noise": 0.1}

What a knob sets (``sets``) is one of:
    model.width            the model's width (the number of parameters grows with it)
    data.<name>            a transform of the cell's training data: workloads.data's ``transform`` function,
                           called as fn(dataset, value, data_seed) (imported lazily: this module is torch-free)
    training.<field>       a field of workloads.settings.TrainConfig (the training of every model of the cell)

Everything that asks about knobs asks here: config validation (values, names), the cell of a job
(workloads/specs.py CellSpec), the cost model and the GPU estimate (orchestrator/planning/cost.py, estimate.py),
the figures (plot_data: which end of the temperature axis is drawn on top) and the guidance (how to cool down).
A new knob is one entry in KNOBS (and its transform in workloads/data.py when it changes the data).

Plain Python (no torch): the analysis reads it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable

from workloads.settings import (
    batch_size_check,
    label_noise_check,
    learning_rate_check,
    train_fraction_check,
    weight_decay_check,
    width_check,
)


@dataclass(frozen=True)
class KnobSpec:
    """One knob (see the module docstring). ``hot_when_large``: for temperature knobs, whether large values
    mean more SGD noise (drawn on top); ``cooler`` / ``hotter``: the change that lowers / raises the
    temperature, in words; ``cost``: what the knob does to a job's cost, in words (the cost model reads the
    cell's quantities: width, training-set size, batch size)."""

    name: str
    axis: str  # load | temperature
    doc: str
    check: Callable  # value -> None or "a width must be ..."
    sets: str  # model.width | data.<name> | training.<TrainConfig field>
    integer: bool = False
    transform: str | None = None  # data knobs: "module:function" of fn(dataset, value, seed) -> dataset
    hot_when_large: bool | None = None
    cooler: str = ""
    hotter: str = ""
    cost: str = ""
    scales_train_size: bool = False  # the training set keeps floor(value * n) examples
    optional_fixed: bool = False  # the workload's fixed value is optional (null = not applied)

    @property
    def target(self) -> tuple[str, str]:
        """("model" | "data" | "training", name) of what the knob sets."""
        kind, _, name = self.sets.partition(".")
        return kind, name

    def convert(self, value: float):
        """The value as the setting it sets takes it (an int for integer knobs)."""
        return int(value) if self.integer else float(value)

    def transform_function(self) -> Callable:
        """The data transform fn(dataset, value, seed) (imports it: it is torch code)."""
        module, _, name = self.transform.partition(":")
        return getattr(importlib.import_module(module), name)


KNOBS: dict[str, KnobSpec] = {k.name: k for k in (
    # Load knobs, in the order their data transforms apply (a subset is drawn first, then its labels corrupted).
    KnobSpec("width", "load", "model width (channels or hidden units)", width_check, "model.width", integer=True,
             cost="parameters grow with it (about quadratically for dense and conv layers)"),
    KnobSpec("train_fraction", "load", "fraction of the training set kept (class-balanced, seeded by data_seed)",
             train_fraction_check, "data.train_fraction", transform="workloads.data:subsample_train",
             cost="steps per epoch and evaluation grow with the training-set size", scales_train_size=True,
             optional_fixed=True),
    KnobSpec("label_noise", "load", "fraction of training labels replaced by another class (seeded by data_seed)",
             label_noise_check, "data.label_noise", transform="workloads.data:corrupt_labels",
             cost="none", optional_fixed=True),
    # Temperature knobs.
    KnobSpec("batch_size", "temperature", "examples per SGD step", batch_size_check, "training.batch_size",
             integer=True, hot_when_large=False, cooler="a larger batch size", hotter="smaller batch sizes",
             cost="steps per epoch = training-set size / batch size"),
    KnobSpec("learning_rate", "temperature", "SGD learning rate", learning_rate_check, "training.lr",
             hot_when_large=True, cooler="a smaller learning rate", hotter="larger learning rates", cost="none"),
    KnobSpec("weight_decay", "temperature", "L2 coefficient", weight_decay_check, "training.weight_decay",
             hot_when_large=True, cooler="a smaller weight decay", hotter="larger weight decays", cost="none"),
)}


def names(axis: str) -> tuple[str, ...]:
    """The knob names of one axis, in declaration order."""
    return tuple(k.name for k in KNOBS.values() if k.axis == axis)


def hot_when_large(temperature_name: str) -> bool:
    """Whether large values of a temperature knob mean more SGD noise (an unknown knob is assumed so)."""
    spec = KNOBS.get(temperature_name)
    return True if spec is None or spec.hot_when_large is None else spec.hot_when_large


def cooler(temperature_name: str) -> str:
    """The change that lowers the temperature, in words."""
    spec = KNOBS.get(temperature_name)
    return spec.cooler if spec and spec.cooler else "a lower temperature"


def hotter(temperature_name: str) -> str:
    """The change that raises the temperature, in words (plural: "smaller batch sizes")."""
    spec = KNOBS.get(temperature_name)
    return spec.hotter if spec and spec.hotter else f"larger {temperature_name}"


def fixed_knobs(workload) -> list[str]:
    """The load knobs whose fixed value (when they are not the axis) the workload holds: its field of that name."""
    return [k.name for k in KNOBS.values() if k.axis == "load" and hasattr(workload, k.name)]


def cell_values(load_name: str, load_value: float, temperature_name: str | None, temperature_value: float | None,
                workload) -> dict[str, float]:
    """{knob: value} of one cell: the two axes' values, and the workload's fixed values of the other load knobs
    (e.g. width 64 on a label-noise axis; None where a fixed transform is not set)."""
    values = {name: getattr(workload, name) for name in fixed_knobs(workload)}
    values[load_name] = load_value
    if temperature_name is not None:
        values[temperature_name] = temperature_value
    return values


def train_size(applied_values: dict[str, float], full_size: int) -> int:
    """Training examples left of ``full_size`` in a cell whose knobs set ``applied_values`` (see ``applied``);
    a lower bound within the number of classes for class-balanced fractions."""
    n = full_size
    for k in KNOBS.values():
        if k.scales_train_size and k.sets in applied_values:
            n = int(math.floor(float(applied_values[k.sets]) * n))
    return n


def applied(values: dict[str, float]) -> dict[str, float]:
    """What knob values set in a cell: {knob name: value} -> {sets: converted value}, in KNOBS order (the order
    the data transforms apply); knobs whose value is None are not applied. ValueError for an unknown knob."""
    unknown = sorted(set(values) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; known: {list(KNOBS)}")
    return {k.sets: k.convert(values[k.name]) for k in KNOBS.values() if values.get(k.name) is not None}
