"""One declaration per metric: what a table column measures, how cells aggregate it, how it is drawn and shown.

Torch-free on purpose: analysis/ (which must not import torch) iterates over these declarations for the cells'
columns, the panels and the report's table; workloads/experiment.py for the rows it fills; analysis/schemas.py
for the tables' units and docs. A metric that is computed from a trained model names its function as a
``module:function`` reference (``compute``), imported only where it is computed (workloads/extra_metrics.py).

    MetricSpec(name, per="model" | "pair", unit, doc, aggregate="mean" | "log_of_mean", required, panel, report,
               compute)

``aggregate``: how the models (pairs) of a cell become one value. "mean": ``<name>`` (mean over the members
that are ok), ``<name>_std`` (sample std, ddof=1) and ``<name>_n``; "log_of_mean": the same three plus
``log_<name>`` = ln(mean) (null unless the mean is > 0), as the paper plots the Hessian. ``required``: a cell
whose ok members lack the value is incomplete (False for diagnostics a run may lack: runs made before the
metric existed, the authors' released results). ``panel`` / ``report``: the heatmap and the report's column of
the shown value (``shown``: ``log_<name>`` for log_of_mean, else ``<name>``); None = not drawn / not listed.

The built-ins below are in the order of the cells table's columns (models, then pairs), which is also the order
of the panels and of the report's columns; a metric added later (workloads/extra_metrics/) comes after them.
Its spec also travels with its column in the Parquet field metadata (``to_json`` / ``from_json``), so the
analysis draws it from the tables alone and never imports the code that computed it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PER = ("model", "pair")
AGGREGATES = ("mean", "log_of_mean")
# Field-metadata key of an added metric's column: the spec as JSON (analysis/schemas.py, analysis/tables.py).
SPEC_METADATA_KEY = b"landscape_metric"
# Second derivatives of the loss (nats) with respect to the (dimensionless) weights: nats per unit weight squared.
HESSIAN_UNIT = "nats/weight²"


@dataclass(frozen=True)
class Panel:
    """A heatmap of a cell value: title, matplotlib colour map, centred at 0 (diverging), log colour scale,
    the paper's fixed colour range (method.md section 7; None = the data's range) and the print format."""

    title: str
    cmap: str = "viridis"
    diverging: bool = False
    log_scale: bool = False
    paper_range: tuple[float, float] | None = None
    fmt: str = ".2g"


@dataclass(frozen=True)
class ReportColumn:
    """A column of report.html's table of cells: its header and the number format."""

    header: str
    fmt: str = ".3g"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    per: str  # "model" | "pair"
    unit: str = ""
    doc: str = ""
    aggregate: str = "mean"
    required: bool = True
    panel: Panel | None = None
    report: ReportColumn | None = None
    # "module:function" called as fn(model, data) -> float | None with the trained model (eval mode, on its
    # device) and the cell's Dataset on the same device; None for the metrics the experiment measures itself.
    compute: str | None = None
    expected_for_all: bool = True  # pairs: expected for every pair (mode connectivity is for connected ones only)

    def __post_init__(self):
        problems = []
        if not self.name.isidentifier():
            problems.append(f"name {self.name!r} must be an identifier (it is a column name)")
        if self.per not in PER:
            problems.append(f"per must be one of {PER}, got {self.per!r}")
        if self.aggregate not in AGGREGATES:
            problems.append(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if isinstance(self.panel, dict) or isinstance(self.report, dict):
            problems.append("panel and report must be Panel and ReportColumn (from_json builds them from dicts)")
        if problems:
            raise ValueError(f"metric spec {self.name!r}: " + "; ".join(problems))

    @property
    def log_name(self) -> str | None:
        return f"log_{self.name}" if self.aggregate == "log_of_mean" else None

    @property
    def shown(self) -> str:
        """The cells-table column its panel and report column show."""
        return self.log_name or self.name

    def cell_columns(self) -> list[str]:
        """Its columns in the cells table (without the log column, which follows the model metrics)."""
        return [self.name, f"{self.name}_std", f"{self.name}_n"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "MetricSpec":
        """The spec stored with a column; ValueError naming the problem when it is not one."""
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            panel = raw.pop("panel", None)
            report = raw.pop("report", None)
            if panel is not None:
                panel = Panel(**{**panel, "paper_range": tuple(panel["paper_range"]) if panel.get("paper_range")
                                 else None})
            return cls(**raw, panel=panel, report=ReportColumn(**report) if report is not None else None)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"not a metric spec ({type(exc).__name__}: {exc})") from None


# Panels: darker = sharper for the Hessian (the paper's reading); mode connectivity blue for barriers, white at
# 0, red for curves beating their endpoints. Train loss has a log colour scale: the sharp/flat rule is a ratio
# (10x the floor), which a linear scale from 0 to 3 hides below 0.3. Every log is the natural log, and the
# titles say so. Paper ranges: the authors' (method.md section 7).
BUILTIN_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("test_acc", "model", "fraction",
               panel=Panel("test accuracy", "viridis", paper_range=(0.56, 0.91), fmt=".2f"),
               report=ReportColumn("test acc", ".4f")),
    MetricSpec("test_loss", "model", "nats"),
    MetricSpec("train_loss", "model", "nats", "mean cross-entropy on the full training set, eval mode",
               panel=Panel("train loss (nats; log colour scale)", "Blues", log_scale=True, paper_range=(0.0, 3.0),
                           fmt=".2g"),
               report=ReportColumn("train loss", ".3g")),
    MetricSpec("train_acc", "model", "fraction", "accuracy on the full training set, eval mode"),
    MetricSpec("hessian_top_eigenvalue", "model", HESSIAN_UNIT, "largest algebraic eigenvalue", aggregate="log_of_mean",
               panel=Panel("ln λ_max (natural log of the seed mean)", "Blues", paper_range=(0.0, 6.0), fmt=".1f"),
               report=ReportColumn("log λmax", ".2f")),
    MetricSpec("hessian_trace", "model", HESSIAN_UNIT, aggregate="log_of_mean",
               panel=Panel("ln trace (natural log of the seed mean)", "Blues", paper_range=(3.0, 8.0), fmt=".1f"),
               report=ReportColumn("log trace", ".2f")),
    MetricSpec("train_loss_drop", "model", "fraction",
               "1 - mean train loss of the last tenth of the epochs / that of the tenth before (per-epoch mean batch "
               "loss, train mode): ~0 = the loss had stopped falling (plateau), clearly > 0 = still falling "
               "(under-trained)", required=False),
    MetricSpec("mode_connectivity", "pair", "percentage points",
               "mc = mean endpoint error - e(t*) (or of the train loss, in nats: see mc_unit)",
               panel=Panel("mode connectivity (pp)", "RdBu_r", diverging=True, paper_range=(-30.0, 30.0), fmt=".1f"),
               report=ReportColumn("mc (pp)", ".2f"), expected_for_all=False),
    MetricSpec("cka", "pair", "", "linear CKA of softmax outputs on the cell's mixup probes",
               panel=Panel("CKA similarity", "viridis", paper_range=(0.3, 0.8), fmt=".2f"),
               report=ReportColumn("CKA", ".3f")),
    MetricSpec("l2_distance", "pair", "", "||theta_a - theta_b||_2 over trainable parameters",
               panel=Panel("L2 distance", "viridis", paper_range=(0.0, 100.0), fmt=".3g"),
               report=ReportColumn("L2", ".3g")),
)

BUILTIN_NAMES = frozenset(s.name for s in BUILTIN_METRICS)


@dataclass(frozen=True)
class MetricSet:
    """The metrics one analysis or one run iterates over: the built-ins, then the added ones (in their order)."""

    added: tuple[MetricSpec, ...] = field(default_factory=tuple)

    def __post_init__(self):
        names = [s.name for s in self.added]
        clash = sorted(BUILTIN_NAMES & set(names))
        twice = sorted({n for n in names if names.count(n) > 1})
        if clash or twice:
            raise ValueError(f"added metric(s) {clash or twice} {'are built-in' if clash else 'declared twice'}: "
                             f"give the metric another name")

    @property
    def all(self) -> tuple[MetricSpec, ...]:
        return BUILTIN_METRICS + self.added

    def per(self, per: str) -> list[MetricSpec]:
        return [s for s in self.all if s.per == per]

    def names(self, per: str) -> list[str]:
        return [s.name for s in self.per(per)]

    def panels(self) -> list[MetricSpec]:
        """The metrics with a panel, models' first, in declaration order (the figures' and report's order)."""
        return [s for s in self.per("model") + self.per("pair") if s.panel is not None]

    def by_shown(self) -> dict[str, MetricSpec]:
        """Cells-table column shown -> its spec (``log_hessian_trace`` -> hessian_trace's spec)."""
        return {s.shown: s for s in self.all}


BUILTINS = MetricSet()


def merged(*sets: "MetricSet | tuple[MetricSpec, ...] | list[MetricSpec]") -> MetricSet:
    """One MetricSet of several lists of added specs (e.g. the models' and the pairs' tables), first one kept per
    name."""
    seen: dict[str, MetricSpec] = {}
    for group in sets:
        for spec in group.added if isinstance(group, MetricSet) else group:
            seen.setdefault(spec.name, spec)
    return MetricSet(tuple(seen.values()))
