"""One declaration per metric (workloads/metric_specs.py): the views the tables, aggregation, panels and report
iterate over are those the package had as parallel lists before (written out here as the reference), and an
added metric's spec survives its trip through a Parquet part's field metadata."""

import math
import os
import sys

import pandas as pd
import pytest

from analysis.aggregate import LOG_OF_MEAN, MODEL_METRICS, OPTIONAL_MODEL_METRICS, PAIR_METRICS, aggregate_cells, cell_columns
from analysis.plot_data import PANELS, PAPER_COLOR_RANGES
from analysis.report import TABLE_COLUMNS, table_columns
from analysis.schemas import field_units, metric_field, spec_of_field
from analysis.tables import RunTables, model_key
from workloads.metric_specs import BUILTINS, MetricSet, MetricSpec, Panel, ReportColumn, merged

ADDED = MetricSpec("weight_thing", "model", "units", "a test metric", aggregate="log_of_mean", required=False,
                   panel=Panel("ln thing", "magma", paper_range=(0.0, 2.0), fmt=".1f"),
                   report=ReportColumn("log thing", ".2f"), compute="somewhere:fn")


def test_views_are_the_lists_the_package_had():
    assert MODEL_METRICS == ["test_acc", "test_loss", "train_loss", "train_acc", "hessian_top_eigenvalue",
                             "hessian_trace", "train_loss_drop"]
    assert OPTIONAL_MODEL_METRICS == ["train_loss_drop"]
    assert PAIR_METRICS == ["mode_connectivity", "cka", "l2_distance"]
    assert LOG_OF_MEAN == {"hessian_top_eigenvalue": "log_hessian_top_eigenvalue",
                           "hessian_trace": "log_hessian_trace"}
    assert [p.metric for p in PANELS] == ["test_acc", "train_loss", "log_hessian_top_eigenvalue", "log_hessian_trace",
                                          "mode_connectivity", "cka", "l2_distance"]
    assert PAPER_COLOR_RANGES == {"test_acc": (0.56, 0.91), "train_loss": (0.0, 3.0),
                                  "log_hessian_top_eigenvalue": (0.0, 6.0), "log_hessian_trace": (3.0, 8.0),
                                  "mode_connectivity": (-30.0, 30.0), "cka": (0.3, 0.8), "l2_distance": (0.0, 100.0)}
    assert [p.metric for p in PANELS if p.diverging] == ["mode_connectivity"]
    assert [p.metric for p in PANELS if p.log_scale] == ["train_loss"]
    assert TABLE_COLUMNS == [("phase", "phase", "s"), ("test_acc", "test acc", ".4f"),
                             ("train_loss", "train loss", ".3g"), ("log_hessian_top_eigenvalue", "log λmax", ".2f"),
                             ("log_hessian_trace", "log trace", ".2f"), ("mode_connectivity", "mc (pp)", ".2f"),
                             ("cka", "CKA", ".3f"), ("l2_distance", "L2", ".3g")]
    units = {**field_units("models"), **field_units("pairs")}
    assert {m: units.get(m, "") for m in ("train_loss", "test_acc", "hessian_trace", "mode_connectivity")} == {
        "train_loss": "nats", "test_acc": "fraction", "hessian_trace": "nats/weight²", "mode_connectivity": "percentage points"}


def test_an_added_metric_comes_after_the_builtins_everywhere():
    metrics = MetricSet((ADDED,))
    cols = cell_columns(metrics)
    assert cols.index("weight_thing") > cols.index("train_loss_drop_n")
    assert cols.index("log_weight_thing") == cols.index("log_hessian_trace") + 1
    assert [c for c in cols if c not in cell_columns()] == ["weight_thing", "weight_thing_std", "weight_thing_n",
                                                            "log_weight_thing"]
    assert [p.shown for p in metrics.panels()][4] == "log_weight_thing"  # after the model panels, before mc
    assert ("log_weight_thing", "log thing", ".2f") in table_columns(metrics)


def test_an_added_metric_aggregates_as_declared_and_is_optional():
    cell = {"load_name": "width", "load_value": 8.0, "temperature_name": "batch_size", "temperature_value": 32.0}
    base = {"test_acc": 0.5, "test_loss": 1.0, "train_loss": 0.5, "train_acc": 0.6, "hessian_top_eigenvalue": 2.0,
            "hessian_trace": 9.0, "train_loss_drop": 0.0, "status": "ok"}
    models = pd.DataFrame([{**cell, **base, "seed": 0, "weight_thing": 2.0}, {**cell, **base, "seed": 1, "weight_thing": 6.0}])
    pairs = pd.DataFrame([{**cell, "seed_a": 0, "seed_b": 1, "status": "ok", "mode_connectivity": 0.0, "cka": 0.5,
                           "l2_distance": 3.0}])
    cells = aggregate_cells(models, pairs, metrics=MetricSet((ADDED,)))
    row = cells.iloc[0]
    assert row["weight_thing"] == 4.0 and row["weight_thing_n"] == 2
    assert row["weight_thing_std"] == pytest.approx(math.sqrt(8.0))
    assert row["log_weight_thing"] == pytest.approx(math.log(4.0))
    assert bool(row["complete"])
    # A run made before the metric existed: the column is absent, the cell is still complete.
    old = aggregate_cells(models.drop(columns="weight_thing"), pairs, metrics=MetricSet((ADDED,)))
    assert math.isnan(old.iloc[0]["weight_thing"]) and bool(old.iloc[0]["complete"])


def test_spec_round_trips_through_json_and_a_part(tmp_path):
    assert MetricSpec.from_json(ADDED.to_json()) == ADDED
    assert spec_of_field(metric_field(ADDED)) == ADDED
    tables = RunTables(str(tmp_path))
    row = {"load_name": "width", "load_value": 8.0, "temperature_name": "batch_size", "temperature_value": 32.0,
           "seed": 0, "status": "ok", "weight_thing": 1.5}
    tables.write_part("models", model_key("width", 8, "batch_size", 32, 0), [row], added=(ADDED,))
    old = dict(row, seed=1)
    old.pop("weight_thing")
    tables.write_part("models", model_key("width", 8, "batch_size", 32, 1), [old])  # a part without the column
    scan = tables.scan("models")
    assert scan.metrics.added == (ADDED,)
    assert scan.frame.columns[-1] == "weight_thing"
    assert scan.frame.sort_values("seed")["weight_thing"].tolist()[0] == 1.5
    assert pd.isna(scan.frame.sort_values("seed")["weight_thing"].tolist()[1])


def test_bad_declarations_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="built-in"):
        MetricSet((MetricSpec("test_acc", "model"),))
    with pytest.raises(ValueError, match="declared twice"):
        MetricSet((ADDED, ADDED))
    with pytest.raises(ValueError, match="per must be"):
        MetricSpec("x", "cell")
    with pytest.raises(ValueError, match="not a metric spec"):
        MetricSpec.from_json("[1, 2]")
    assert merged((ADDED,), (ADDED,)).added == (ADDED,)
    assert BUILTINS.added == ()


PLUGIN = '''
from workloads.metric_specs import MetricSpec, Panel
SPEC = MetricSpec("num_weights", "model", "parameters", "trainable parameters", panel=Panel("weights"),
                  required=False, compute="mymetrics:count")
NOT_A_SPEC = 3
PAIRWISE = MetricSpec("pairwise", "pair", compute="mymetrics:count")
def count(model, data):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
'''


def test_a_plugin_metric_named_in_the_config(tmp_path, monkeypatch):
    from torch import nn

    from orchestrator.config import ConfigError, load_config
    from workloads.metric_discovery import measure_added, package_metrics, run_metrics
    from workloads.plugins import PluginError

    (tmp_path / "mymetrics.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mymetrics", raising=False)  # another test's module of that name, if any
    metrics = run_metrics(["mymetrics:SPEC"])
    assert [s.name for s in metrics.added] == [s.name for s in package_metrics()] + ["num_weights"]
    assert measure_added(nn.Linear(3, 2), None, [metrics.added[-1]]) == {"num_weights": 8.0}
    with pytest.raises(PluginError, match="did you mean 'mymetrics:SPEC'"):
        run_metrics(["mymetrics:SPCE"])
    with pytest.raises(PluginError, match="not a workloads.metric_specs.MetricSpec"):
        run_metrics(["mymetrics:NOT_A_SPEC"])
    with pytest.raises(PluginError, match="per-pair metrics cannot be added yet"):
        run_metrics(["mymetrics:PAIRWISE"])
    with pytest.raises(PluginError, match="neither 'module:NAME' nor an installed entry point"):
        run_metrics(["no-such-metric"])
    # In a config: checked before anything runs, one error naming the key; not part of the config hash.
    base = load_config("smoke", check_data=False)
    with_plugin = load_config("smoke", ["metrics.extra=[mymetrics:SPEC]"], check_data=False)
    assert with_plugin.config_hash() == base.config_hash()
    with pytest.raises(ConfigError, match=r"^metrics.extra: .*did you mean 'mymetrics:SPEC'"):
        load_config("smoke", ["metrics.extra=[mymetrics:SPCE]"], check_data=False)


def test_an_added_panel_is_drawn_after_the_builtins(tmp_path):
    from analysis.phases import label_phases
    from analysis.plots import panel_set, save_panels

    cell = {"load_name": "width", "temperature_name": "batch_size"}
    models, pairs = [], []
    for lv in (8.0, 16.0):
        for tv in (32.0, 64.0):
            for seed in (0, 1):
                models.append({**cell, "load_value": lv, "temperature_value": tv, "seed": seed, "status": "ok",
                               "test_acc": 0.5, "test_loss": 1.0, "train_loss": 0.5 / lv, "train_acc": 0.6,
                               "hessian_top_eigenvalue": 2.0, "hessian_trace": 9.0, "weight_thing": lv + seed})
            pairs.append({**cell, "load_value": lv, "temperature_value": tv, "seed_a": 0, "seed_b": 1,
                          "status": "ok", "mode_connectivity": 0.0, "cka": 0.5, "l2_distance": 3.0})
    metrics = MetricSet((ADDED,))
    cells = label_phases(aggregate_cells(pd.DataFrame(models), pd.DataFrame(pairs), metrics=metrics))
    heatmaps = panel_set(cells, metrics=metrics)
    assert [h.metric for h in heatmaps] == [p.metric for p in PANELS[:4]] + ["log_weight_thing"] + [
        p.metric for p in PANELS[4:]]
    added = heatmaps[4]
    assert added.title == "ln thing" and added.cmap == "magma"
    # ln(8.5) and ln(16.5) lie outside its declared paper range 0-2: the data's range, and it says why
    assert added.range_source == "data (0% of cells inside the paper's 0-2)"
    assert (added.vmin, added.vmax) == pytest.approx((math.log(8.5), math.log(16.5)))
    assert added.spread.members == "models" and added.spread.count.max() == 2
    files = save_panels(cells, str(tmp_path / "panels"), heatmaps=heatmaps)  # 3 rows of 4: 8 panels, the map
    assert all(os.path.getsize(path) > 0 for path in files.values())
