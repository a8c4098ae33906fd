"""Integer token inputs and sequence targets: the Dataset, the CKA probe makers (workloads/metrics/probes.py), the
config's checks of them, and mode connectivity in nats judged in nats (analysis.phases.rules_for_mc_unit)."""

from __future__ import annotations

import os
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from workloads.data import Dataset, corrupt_labels, subsample_train
from workloads.metrics.cka import mixup_plan
from workloads.metrics.probes import crossover_probes, make_probes
from workloads.plugins import PluginError
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLE = os.path.join(ROOT, "examples", "translation")


def tokens(n=40, length=6, vocab=10, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    return Dataset("tok", x, x.flip(1).clone(), x[:8].clone(), x[:8].flip(1).clone(), vocab)


def test_a_dataset_holds_integer_tokens_and_sequence_targets():
    ds = tokens()
    assert ds.tokens and ds.input_shape == (6,) and ds.train_size == 40
    with pytest.raises(ValueError, match="train and test differ"):
        Dataset("bad", ds.train_x, ds.train_y, ds.test_x.float(), ds.test_y, 10)
    with pytest.raises(TypeError, match="float32 .features. or int64 .tokens."):
        Dataset("bad", ds.train_x.int(), ds.train_y, ds.test_x.int(), ds.test_y, 10)
    # A fraction of sequences is a uniform draw (no class per example); label noise needs one label per example.
    half = subsample_train(ds, 0.5, seed=1)
    assert half.train_size == 20 and len({tuple(r) for r in half.train_x.tolist()}) <= 20
    assert all(any(torch.equal(r, s) for s in ds.train_x) for r in half.train_x)
    with pytest.raises(ValueError, match="label noise replaces one label per example"):
        corrupt_labels(ds, 0.1, seed=0)


def test_crossover_takes_every_position_from_one_of_two_training_sequences():
    x = tokens(n=50, length=12).train_x
    probes = crossover_probes(x, 400, seed=3)
    assert probes.shape == (400, 12) and probes.dtype == torch.int64
    assert torch.equal(probes, crossover_probes(x, 400, seed=3))
    assert not torch.equal(probes, crossover_probes(x, 400, seed=4))
    a, b, lam = mixup_plan(50, 400, 3)  # the same draws of the two sequences and the mixing weight as mixup
    from_a = (probes == x[a]).numpy()
    assert ((probes == x[a]) | (probes == x[b])).all()
    # Positions come from x[a] with probability lam (~ Beta(16, 16), about one half): the share follows lam.
    differ = (x[a] != x[b]).numpy()
    share = (from_a & differ).sum() / differ.sum()
    assert abs(share - lam.mean()) < 0.03, (share, lam.mean())
    low, high = lam < np.median(lam), lam >= np.median(lam)
    assert (from_a & differ)[high].sum() / differ[high].sum() > (from_a & differ)[low].sum() / differ[low].sum()


def test_make_probes_refuses_mixup_of_tokens_and_checks_a_users_maker(tmp_path, monkeypatch):
    x = tokens().train_x
    with pytest.raises(ValueError, match="mixup averages inputs, which integer tokens cannot be"):
        make_probes("mixup", x, 4, 0)
    assert make_probes("mixup", torch.randn(10, 3), 4, 0).shape == (4, 3)
    (tmp_path / "myprobes.py").write_text(textwrap.dedent("""
        def first(train_x, *, num, seed):
            return train_x[:num].clone()

        def wrong(train_x, *, num, seed):
            return train_x[:num].float()
    """))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("myprobes", None)
    try:
        assert torch.equal(make_probes("myprobes:first", x, 5, 0), x[:5])
        with pytest.raises(PluginError, match=r"returned Tensor \(5, 6\) torch.float32; it must return a tensor of "
                                              r"shape \(5, 6\) and dtype torch.int64"):
            make_probes("myprobes:wrong", x, 5, 0)
    finally:
        sys.modules.pop("myprobes", None)
        sys.path[:] = [p for p in sys.path if p != str(tmp_path)]


@pytest.fixture
def translation_on_path():
    sys.path.insert(0, EXAMPLE)
    yield
    sys.path.remove(EXAMPLE)
    sys.modules.pop("seqnets", None)


def translation_raw(**metrics) -> dict:
    return {
        "name": "tok",
        "workload": {"model": "seqnets:transformer", "dataset": "seqnets:reorder_translation",
                     "dataset_args": {"train_size": 200, "test_size": 50}},
        "load": {"name": "width", "values": [8]}, "temperature": {"name": "batch_size", "values": [32]},
        "seeds": [0, 1], "training": {"epochs": 1},
        "metrics": {"cka_probes": 64, "curve": {"epochs": 1, "batch_size": 32, "points": 3, "mc_on": "loss"},
                    **metrics},
    }


def test_the_config_checks_the_probe_maker_against_the_inputs(translation_on_path):
    from orchestrator.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="metrics.cka_probe_maker: mixup averages inputs"):
        parse_config(translation_raw())
    with pytest.raises(ConfigError, match="metrics.cka_probe_maker: unknown CKA probe maker 'crosover'; did you "
                                          "mean 'crossover'?"):
        parse_config(translation_raw(cka_probe_maker="crosover"))
    cfg = parse_config(translation_raw(cka_probe_maker="crossover"))
    from orchestrator.planning.cells import cell_spec
    from workloads.rows import measured_on

    assert measured_on(cell_spec(cfg, 8, 32)) == {"mc_unit": "nats", "cka_probe_maker": "crossover", "cka_probe_pool": "train"}


def test_mode_connectivity_in_nats_is_judged_against_the_threshold_in_nats():
    from analysis.phases import PhaseRules, label_phases, mc_unit, rules_for_mc_unit

    assert mc_unit(pd.DataFrame({"mode_connectivity": [1.0]})) == "percentage points"  # parts before mc_unit
    assert mc_unit(pd.DataFrame({"mc_unit": [None, "nats"]})) == "nats"
    with pytest.raises(ValueError, match="several units"):
        mc_unit(pd.DataFrame({"mc_unit": ["nats", "percentage points"]}))
    # A barrier of 0.05 nats: poorly connected in nats (threshold 0.01), well connected if read as 0.05 pp.
    cells = pd.DataFrame({"load_value": [8.0], "temperature_value": [32.0], "train_loss": [1e-4],
                          "mode_connectivity": [-0.05], "cka": [0.9]})
    rules = PhaseRules()
    assert label_phases(cells, rules).connectivity_class[0] == "well"
    in_nats = rules_for_mc_unit(rules, "nats")
    assert in_nats.mc_threshold == rules.mc_loss_threshold == 0.01
    assert label_phases(cells, in_nats).connectivity_class[0] == "poor"
    assert rules_for_mc_unit(rules, "percentage points") is rules
    assert PhaseRules.from_mapping({"mc_loss_threshold": "0.1"}).mc_loss_threshold == 0.1
