"""One declaration per knob (workloads/knobs.py): validation, what it changes in a cell, hot or cold, the advice,
the cost; and a new knob is one declaration."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from orchestrator.planning.cells import cell_quantities, cell_spec
from orchestrator.config import ConfigError, apply_overrides, parse_config
from workloads import knobs
from workloads.data import load_dataset
from workloads.knobs import KNOBS, KnobSpec


def raw(**changes) -> dict:
    base = {"name": "t", "workload": {"dataset": "digits", "model": "mlp"}, "load": {"name": "width", "values": [8]},
            "temperature": {"name": "batch_size", "values": [32]}, "seeds": [0], "training": {"epochs": 1}}
    return apply_overrides(base, [f"{k}={v}" for k, v in changes.items()])


def test_every_knob_checks_its_values_in_the_config_with_its_own_words():
    for spec, bad in ((KNOBS["width"], 0), (KNOBS["train_fraction"], 1.5), (KNOBS["label_noise"], 1.0),
                      (KNOBS["batch_size"], 2.5), (KNOBS["learning_rate"], 0), (KNOBS["weight_decay"], -1)):
        problem = spec.check(bad)
        assert problem and spec.check(spec.convert(1 if spec.integer else 0.5)) is None
        with pytest.raises(ConfigError, match=rf"^{spec.axis}.values\[1\]: {problem[:20]}"):
            parse_config(raw(**{f"{spec.axis}.name": spec.name, f"{spec.axis}.values": f"[{1 if spec.integer else 0.5}, {bad}]"}))


def test_what_a_knob_sets_reaches_the_cell():
    cfg = parse_config(raw(**{"temperature.name": "learning_rate", "temperature.values": "[0.3]",
                              "workload.label_noise": 0.2, "workload.width": 12, "load.name": "train_fraction",
                              "load.values": "[0.5]"}))
    cell = cell_spec(cfg, 0.5, 0.3)
    assert cell.train_config(0, "cpu").lr == 0.3 and cell.model_width() == 12
    data = cell.data()  # the subset first, then its labels corrupted
    assert data.info["fraction"] == 0.5 and data.info["label_noise"] == 0.2
    full = load_dataset("digits")
    counts = torch.bincount(full.train_y, minlength=10).tolist()
    assert data.train_size == sum(math.floor(0.5 * c + 0.5) for c in counts)  # class-balanced, halves up
    width, batch, n = cell_quantities(cfg, 0.5, 0.3, full.train_size)
    assert (width, batch) == (12, cfg.training.batch_size) and n == int(0.5 * 1437)


def test_hot_and_cold_advice_and_the_figures_ask_the_knob():
    assert not knobs.hot_when_large("batch_size") and knobs.hot_when_large("weight_decay")
    for name in knobs.names("temperature"):
        assert knobs.hot_when_large(name) == KNOBS[name].hot_when_large
        assert knobs.cooler(name) and knobs.hotter(name)
    assert knobs.hot_when_large("some_new_knob")  # unknown: assumed hot when large, as before


def test_a_new_knob_is_one_declaration(monkeypatch, one_torch_thread):
    """Momentum as a temperature: one KnobSpec; config validation, the cell's training and the figures follow."""
    def momentum_check(value):
        return None if 0 <= value < 1 else f"a momentum must lie in [0, 1), got {value}"

    momentum = KnobSpec("momentum", "temperature", "SGD momentum", momentum_check, "training.momentum",
                        hot_when_large=True, cooler="less momentum", hotter="more momentum")
    monkeypatch.setitem(KNOBS, "momentum", momentum)
    cfg = parse_config(raw(**{"temperature.name": "momentum", "temperature.values": "[0.5, 0.99]"}))
    cell = cell_spec(cfg, 8, 0.99)
    assert cell.train_config(1, "cpu").momentum == 0.99 and cell.train_config(1, "cpu").lr == cfg.training.lr
    with pytest.raises(ConfigError, match=r"temperature.values\[0\]: a momentum must lie in \[0, 1\), got 1.5"):
        parse_config(raw(**{"temperature.name": "momentum", "temperature.values": "[1.5]"}))
    assert knobs.cooler("momentum") == "less momentum" and knobs.hot_when_large("momentum")
    # And the model it trains is trained with that momentum.
    from workloads.experiment import ModelSpec, train_and_measure

    cell = dataclasses.replace(cell, hessian=dataclasses.replace(cell.hessian, samples=50, eigen_max_iter=5,
                                                                 trace_max_probes=3))
    out = train_and_measure(ModelSpec(cell, 0))
    assert out.status == "ok" and out.row["temperature_name"] == "momentum"


def test_unknown_axis_names_offer_the_knobs_of_that_axis():
    with pytest.raises(ConfigError, match=r"load.name: unknown value 'batch_size'\. Choose one of: width, "
                                          r"train_fraction, label_noise"):
        parse_config(raw(**{"load.name": "batch_size"}))
