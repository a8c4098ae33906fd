"""From a sweep config to what a job of one grid cell needs: the workloads' CellSpec (the config's sections are
the workloads' own settings, handed over as they are) and the cell's quantities the cost model counts."""

from __future__ import annotations

import dataclasses

from orchestrator.config import SweepConfig, cell_knob_values, expand_data_root
from workloads import knobs
from workloads.metric_discovery import run_metrics


def cell_spec(cfg: SweepConfig, load_value: float, temperature_value: float):
    """The workloads.specs.CellSpec of one grid cell."""
    from workloads.specs import CellSpec

    # "~/data" is the home of the node that runs the job.
    workload = dataclasses.replace(cfg.workload, data_root=expand_data_root(cfg.workload.data_root))
    return CellSpec(load_name=cfg.load.name, load_value=float(load_value), temperature_name=cfg.temperature.name,
                    temperature_value=float(temperature_value), workload=workload, training=cfg.training,
                    hessian=cfg.metrics.hessian, curve=cfg.metrics.curve, cka=cfg.metrics.cka,
                    added_metrics=run_metrics(cfg.metrics.extra).added)


def cell_quantities(cfg: SweepConfig, load_value: float, temperature_value: float, full: int) -> tuple[int, int, int]:
    """(model width, batch size, training-set size) of a cell, from its knobs (what the cost model counts), of a
    workload whose full training set has ``full`` examples."""
    applied = knobs.applied(cell_knob_values(cfg, load_value, temperature_value))
    batch = int(applied.get("training.batch_size", cfg.training.batch_size))
    return int(applied["model.width"]), batch, knobs.train_size(applied, full)
