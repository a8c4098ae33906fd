"""The settings of a sweep's work: a cell of the grid (CellSpec), one model of it (ModelSpec), one pair of its
seeds (PairSpec). Plain frozen dataclasses, built once by the orchestrator (orchestrator/planning/cells.py) and passed to
the engine (workloads/cohort_experiment.py; workloads/experiment.py for one model or pair).

A *cell* is one (load, temperature) point of the grid; its seeds share the data (subset and label noise are
drawn with the cell's ``data_seed``, not the model seed), the Hessian points and the CKA probes, so the
seeds differ only in initialisation and batch order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from workloads import knobs
from workloads.data import Dataset, load_dataset
from workloads.metric_specs import MetricSpec
from workloads.metrics.connectivity import CurveConfig
from workloads.models import seeded_model
from workloads.settings import CkaSettings, HessianSettings, TrainConfig, Workload


@dataclass(frozen=True)
class CellSpec:
    """Everything shared by the models and pairs of one (load, temperature) cell.

    load_name / temperature_name: knobs of workloads/knobs.py (width | train_fraction | label_noise;
    batch_size | learning_rate | weight_decay). ``workload``: the dataset, the model and the fixed values of the
    knobs that are not an axis; ``training``: the settings the temperature does not set (its seed and device
    are replaced per model); the Hessian, CKA and curve settings as the sweep config declares them.
    """

    load_name: str
    load_value: float
    temperature_name: str
    temperature_value: float
    workload: Workload = field(default_factory=Workload)
    training: TrainConfig = field(default_factory=TrainConfig)
    hessian: HessianSettings = field(default_factory=HessianSettings)
    curve: CurveConfig = field(default_factory=CurveConfig)
    cka: CkaSettings = field(default_factory=CkaSettings)
    # Metrics beyond the built-ins that the run computes (workloads/extra_metrics.py: the package's own and the
    # config's metrics.extra), each with its compute function.
    added_metrics: tuple[MetricSpec, ...] = ()

    def keys(self) -> dict:
        return {
            "load_name": self.load_name,
            "load_value": float(self.load_value),
            "temperature_name": self.temperature_name,
            "temperature_value": float(self.temperature_value),
        }

    # The workload's fields, as the cohort engine and the metrics read them.
    dataset = property(lambda self: self.workload.dataset)
    data_root = property(lambda self: self.workload.data_root)
    model = property(lambda self: self.workload.model)
    model_args = property(lambda self: self.workload.model_args)
    data_seed = property(lambda self: self.workload.data_seed)

    def knob_values(self) -> dict:
        """{knob: value}: the two axes' values and the workload's fixed values of the other load knobs."""
        return knobs.cell_values(self.load_name, self.load_value, self.temperature_name, self.temperature_value,
                                 self.workload)

    def knob_value(self, name: str):
        """The value of one knob in this cell, as the setting it sets takes it (None where a fixed transform
        is not set)."""
        value = self.knob_values().get(name)
        return None if value is None else knobs.KNOBS[name].convert(value)

    # Fixed or axis value of the data knobs (None = not applied), as the cohort engine reads them.
    train_fraction = property(lambda self: self.knob_value("train_fraction"))
    label_noise = property(lambda self: self.knob_value("label_noise"))

    def model_width(self) -> int:
        return int(knobs.applied(self.knob_values())["model.width"])

    def train_config(self, seed: int, device: str) -> TrainConfig:
        """The training settings of one model: the cell's, with the temperature (a training knob) applied."""
        changes = {name: value for (kind, name), value in _targets(self.knob_values()) if kind == "training"}
        return dataclasses.replace(self.training, **changes, seed=int(seed), device=device)

    def data(self) -> Dataset:
        """The cell's dataset (CPU) with the data knobs applied in their declaration order (a training subset is
        drawn first, then its labels corrupted), each with the cell's ``data_seed``."""
        ds = load_dataset(self.dataset, self.data_root, seed=self.data_seed, args=self.workload.dataset_args)
        for knob_name, value in self.knob_values().items():
            spec = knobs.KNOBS[knob_name]
            if value is not None and spec.target[0] == "data":
                ds = spec.transform_function()(ds, float(value), self.data_seed)
        return ds

    def build_model(self, seed: int, data: Dataset) -> nn.Module:
        """The untrained model of ``seed`` (CPU), initialised under that seed."""
        return seeded_model(
            self.model, seed, width=self.model_width(), num_classes=data.num_classes,
            input_shape=data.input_shape, **self.model_args,
        )


def _targets(values: dict) -> list[tuple[tuple[str, str], float]]:
    """((kind, name), value) of what the knob values set, e.g. (("training", "batch_size"), 32)."""
    return [(tuple(sets.split(".", 1)), value) for sets, value in knobs.applied(values).items()]


@dataclass(frozen=True)
class ModelSpec:
    cell: CellSpec
    seed: int
    device: str = "cpu"


@dataclass(frozen=True)
class PairSpec:
    cell: CellSpec
    seed_a: int
    seed_b: int
    device: str = "cpu"
