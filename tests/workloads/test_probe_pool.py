"""Where CKA probes come from (metrics.cka_probe_pool) and the unmixed ``points`` maker: checked against a direct
computation on the same inputs, before Ray for the sizes, and recorded per pairs row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.planning.cells import cell_spec
from orchestrator.config import ConfigError, apply_overrides, parse_config, read_raw
from workloads.experiment import PairSpec, measure_pair
from workloads.metrics.cka import softmax_outputs
from workloads.metrics.probes import make_probes, probe_pool, sample_points
from workloads.models import seeded_model


def _cka_by_gram(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA by its Gram-matrix form <HKH, HLH> / (|HKH| |HLH|), independent of workloads' feature form."""
    m = x.shape[0]
    h = np.eye(m) - np.ones((m, m)) / m
    k, ell = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * ell).sum() / (np.linalg.norm(k) * np.linalg.norm(ell)))


def test_points_are_distinct_inputs_of_the_pool_and_seeded():
    x = torch.arange(50, dtype=torch.float32).reshape(25, 2)
    p = sample_points(x, 10, seed=4)
    assert p.shape == (10, 2)
    rows = {tuple(r.tolist()) for r in p}
    assert len(rows) == 10 and rows <= {tuple(r.tolist()) for r in x}  # distinct, unmixed
    assert torch.equal(p, sample_points(x, 10, seed=4)) and not torch.equal(p, sample_points(x, 10, seed=5))
    assert torch.equal(make_probes("points", x, 10, 4), p)
    assert len({tuple(r.tolist()) for r in sample_points(x, 25, seed=0)}) == 25  # the whole pool, permuted
    with pytest.raises(ValueError, match="draws 26 distinct inputs but the probe pool has only 25"):
        sample_points(x, 26, seed=0)


def _raw(*sets):
    raw, _ = read_raw("cpu-data-size")
    return apply_overrides(raw, list(sets))


def test_the_test_pool_is_the_same_for_every_training_set_size():
    cfg = parse_config(_raw("metrics.cka_probe_pool=test", "metrics.cka_probe_maker=points"))
    small, full = cell_spec(cfg, 0.1, 0.001).data(), cell_spec(cfg, 1.0, 0.001).data()
    assert small.train_size < full.train_size
    assert torch.equal(probe_pool(small, "test"), probe_pool(full, "test"))
    assert torch.equal(probe_pool(small, "train"), small.train_x)
    with pytest.raises(ValueError, match="metrics.cka_probe_pool: unknown pool 'tset'"):
        probe_pool(small, "tset")


def test_probe_settings_are_checked_before_ray():
    with pytest.raises(ConfigError, match="metrics.cka_probe_pool: unknown value 'tset'; did you mean 'test'"):
        parse_config(_raw("metrics.cka_probe_pool=tset"))
    # 768 distinct points cannot come from the 400 training points of the smallest column, nor 2000 from 1000 tests.
    with pytest.raises(ConfigError, match="metrics.cka_probes: 768 distinct probe inputs, but the smallest training "
                                          "set of the sweep has 400"):
        parse_config(_raw("metrics.cka_probe_pool=train", "metrics.cka_probe_maker=points"))
    with pytest.raises(ConfigError, match="2000 distinct probe inputs, but the test set has 1000"):
        parse_config(_raw("metrics.cka_probe_pool=test", "metrics.cka_probe_maker=points", "metrics.cka_probes=2000"))


def test_a_pair_on_test_points_measures_cka_there_and_records_the_pool():
    cfg = parse_config(_raw("metrics.cka_probe_pool=test", "metrics.cka_probe_maker=points",
                            "metrics.cka_probes=200", "metrics.curve.epochs=0", "workload.width=16"))
    cell = cell_spec(cfg, 0.2, 0.001)
    data = cell.data()
    states = [seeded_model("mlp", s, width=16, num_classes=10, input_shape=(40,), depth=2).state_dict()
              for s in (0, 1)]
    out = measure_pair(PairSpec(cell, 0, 1), states[0], states[1])
    assert out.row["cka_probe_pool"] == "test" and out.row["cka_probe_maker"] == "points"
    probes = sample_points(data.test_x, 200, seed=cfg.metrics.cka.probe_seed)
    models = [cell.build_model(s, data) for s in (0, 1)]
    for m, st in zip(models, states):
        m.load_state_dict(st)
    want = _cka_by_gram(*(softmax_outputs(m, probes).numpy() for m in models))
    assert out.row["cka"] == pytest.approx(want, rel=1e-9)
