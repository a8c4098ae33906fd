"""The schemas of a run's tables: explicit pyarrow schemas with units and docs in the field metadata.

Schema evolution. Columns are only ever added within a schema version, and reading is additive (see
analysis/tables.py): a column added later reads as null in parts written before it existed. SCHEMA_VERSION
changes only for an incompatible change (a column renamed, retyped or given another meaning).
"""

from __future__ import annotations

import dataclasses
import json
import re
from importlib import metadata

import pyarrow as pa

from workloads.metric_specs import BUILTINS, SPEC_METADATA_KEY, MetricSpec

SCHEMA_VERSION = 1

TABLE_NAMES = ("models", "pairs", "curves")  # the tables a sweep's plan is made from (what is done)


def _f(name: str, type_: pa.DataType, unit: str = "", doc: str = "") -> pa.Field:
    meta = {}
    if unit:
        meta["unit"] = unit
    if doc:
        meta["doc"] = doc
    return pa.field(name, type_, metadata=meta or None)


_METRIC_SPECS = {s.name: s for s in BUILTINS.all}


def _metric(name: str) -> pa.Field:
    """The column of a built-in metric: its unit and doc as workloads/metric_specs.py declares them."""
    spec = _METRIC_SPECS[name]
    return _f(name, pa.float64(), spec.unit, spec.doc)


def metric_field(spec: MetricSpec) -> pa.Field:
    """The column of an added metric: float64, its unit and doc, and the whole spec as JSON, so that the analysis
    draws it from the table alone (analysis/tables.py reads it back)."""
    meta = {SPEC_METADATA_KEY: spec.to_json().encode()}
    if spec.unit:
        meta[b"unit"] = spec.unit.encode()
    if spec.doc:
        meta[b"doc"] = spec.doc.encode()
    return pa.field(spec.name, pa.float64(), metadata=meta)


def spec_of_field(field: pa.Field) -> MetricSpec | None:
    """The added metric a column of a part declares in its metadata; None for any other column (or a spec
    that cannot be read: the column is then left out, as any column this version does not know)."""
    raw = (field.metadata or {}).get(SPEC_METADATA_KEY)
    if raw is None:
        return None
    try:
        spec = MetricSpec.from_json(raw)
    except ValueError:
        return None
    return spec if spec.name == field.name else None


# A number format an added metric's spec may carry: an optional thousands comma, a width and a precision of at
# most two digits, a float presentation. The spec comes from a run directory: format(x, "300000000") alone
# builds a 300 MB string, and "d" raises on a float.
SANE_NUMBER_FORMAT = re.compile(r",?\d{0,2}(\.\d{1,2})?[eEfFgG%]")
FALLBACK_FORMAT = ".3g"


def sane_spec(spec: MetricSpec) -> tuple[MetricSpec, str | None]:
    """(``spec`` with each number format that is not a sane one replaced by FALLBACK_FORMAT, a note naming
    what was replaced or None)."""
    bad, changes = [], {}
    for part in ("panel", "report"):
        shown = getattr(spec, part)
        if shown is not None and not SANE_NUMBER_FORMAT.fullmatch(str(shown.fmt)):
            bad.append(f"{part} format {str(shown.fmt)[:40]!r}")
            changes[part] = dataclasses.replace(shown, fmt=FALLBACK_FORMAT)
    if not bad:
        return spec, None
    return dataclasses.replace(spec, **changes), (
        f"added metric {spec.name}: {' and '.join(bad)} from the tables' metadata is not a number format "
        f"(e.g. '.3g'): shown with {FALLBACK_FORMAT!r} instead")


COHORT_DOC = ("the cohort the row was computed in (models-<hash> / pairs-<hash> of its members' keys; a cohort of "
              "one with execution.cohort: off); null in rows written before every job was a cohort")

_PROVENANCE = [
    _f("run_id", pa.string(), doc="identifier of the run directory's sweep"),
    _f("config_hash", pa.string(), doc="sha256 prefix of the resolved sweep config"),
    _f("package_version", pa.string(), doc="landscape version that wrote the row"),
    _f("library_versions", pa.string(), doc="JSON object of torch/ray/... versions"),
    _f("schema_version", pa.int32()),
]

_CELL = [
    _f("load_name", pa.string(), doc="width | train_fraction | label_noise"),
    _f("load_value", pa.float64()),
    _f("temperature_name", pa.string(), doc="batch_size | learning_rate | weight_decay"),
    _f("temperature_value", pa.float64()),
]

_STATUS = [
    _f("status", pa.string(), doc="ok | diverged | failed"),
    _f("error", pa.string(), doc="why the status is not ok; null when ok"),
]

MODELS_SCHEMA = pa.schema(
    _PROVENANCE
    + _CELL
    + [_f("seed", pa.int64())]
    + _STATUS
    + [
        _metric("train_loss"),
        _metric("train_acc"),
        _metric("test_loss"),
        _metric("test_acc"),
        _metric("hessian_top_eigenvalue"),
        _metric("hessian_trace"),
        _f("hessian_backend", pa.string()),
        _f("hessian_samples", pa.int64(), "examples", "training points the Hessian is taken over"),
        _f("hessian_eigen_iterations", pa.int64(), "Hessian-vector products"),
        _f("hessian_trace_probes", pa.int64(), "probes"),
        _f("num_params", pa.int64(), "parameters"),
        _f("train_size", pa.int64(), "examples"),
        _f("label_noise_realised", pa.float64(), "fraction", "training labels actually changed"),
        _f("epochs_completed", pa.int64(), "epochs"),
        _metric("train_loss_drop"),
        _f("train_seconds", pa.float64(), "s"),
        _f("metrics_seconds", pa.float64(), "s"),
        _f("wall_seconds", pa.float64(), "s"),
        _f("device", pa.string()),
        _f("dataset_sha256", pa.string(), doc="sha256 of the training and test tensors' content (dtype, shape, "
                                              "bytes; after label noise and subsetting): the data it saw"),
        _f("execution_path", pa.string(), doc="JSON: engine, backend, precision, torch, CPU instruction set, BLAS, "
                                              "threads, GPU: bit-for-bit agreement needs the same path"),
        _f("node_id", pa.string()),
        _f("model_uri", pa.string(), doc="where the trained weights are stored"),
        _f("weights_sha256", pa.string(), doc="sha256 of the weights file's bytes, checked whenever it is loaded "
                                              "(null in rows written before it existed: not checked)"),
        _f("finished_at", pa.timestamp("us", tz="UTC")),
        _f("cohort", pa.string(), doc=COHORT_DOC),
    ]
)

PAIRS_SCHEMA = pa.schema(
    _PROVENANCE
    + _CELL
    + [_f("seed_a", pa.int64()), _f("seed_b", pa.int64())]
    + _STATUS
    + [
        _metric("mode_connectivity"),
        _f("t_star", pa.float64()),
        _metric("cka"),
        _f("cka_status", pa.string(), doc="ok, or why CKA is undefined (e.g. constant output)"),
        _metric("l2_distance"),
        _f("curve_epochs", pa.int64(), "epochs"),
        _f("curve_lr", pa.float64()),
        _f("curve_points", pa.int64(), doc="size of the t-grid"),
        _f("cka_probe_size", pa.int64(), "examples"),
        _f("cka_probe_seed", pa.int64()),
        _f("cka_probe_maker", pa.string(), doc="the hook that made the CKA probes (null in older runs: mixup)"),
        _f("cka_probe_pool", pa.string(), doc="the inputs the CKA probes were made from: train or test (null in "
                                             "older runs: train)"),
        _f("mc_unit", pa.string(), doc="unit of mode_connectivity: percentage points (of train error) or nats (of "
                                      "train loss, metrics.curve.mc_on: loss); null in older runs: percentage points"),
        _f("wall_seconds", pa.float64(), "s"),
        _f("started_at", pa.timestamp("us", tz="UTC")),
        _f("finished_at", pa.timestamp("us", tz="UTC")),
        _f("device", pa.string()),
        _f("node_id", pa.string()),
        _f("cohort", pa.string(), doc=COHORT_DOC),
    ]
)

CURVES_SCHEMA = pa.schema(
    _PROVENANCE
    + _CELL
    + [
        _f("seed_a", pa.int64()),
        _f("seed_b", pa.int64()),
        _f("t", pa.float64()),
        _f("train_error", pa.float64(), "percent"),
        _f("train_loss", pa.float64(), "nats"),
        _f("test_error", pa.float64(), "percent"),
        _f("test_loss", pa.float64(), "nats"),
    ]
)

# The training history of a model: one row per completed epoch, one part per model (its models key), written
# by the job that trained it before its models row. The training of a pair's Bezier curve has its own table
# (curve_history: other keys, other columns).
HISTORY_SCHEMA = pa.schema(
    _PROVENANCE
    + _CELL
    + [
        _f("seed", pa.int64()),
        _f("epoch", pa.int64(), "epochs", "0-based epoch the row ends"),
        _f("lr", pa.float64(), "", "learning rate throughout the epoch"),
        _f("train_loss", pa.float64(), "nats", "mean cross-entropy of the epoch's SGD batches, train mode"),
        _f("train_acc", pa.float64(), "fraction", "accuracy on the epoch's SGD batches, train mode"),
        _f("test_loss", pa.float64(), "nats", "full test set after the epoch, eval mode; null between the "
                                              "evaluations training.eval_every asks for"),
        _f("test_acc", pa.float64(), "fraction", "as test_loss"),
        _f("seconds", pa.float64(), "s", "wall time of the epoch's SGD steps (the test evaluation not included)"),
    ]
)

# The training of a pair's Bezier curve (its middle point), one row per epoch, one part per pair, written by the
# pair job before its pairs row.
CURVE_HISTORY_SCHEMA = pa.schema(
    _PROVENANCE
    + _CELL
    + [
        _f("seed_a", pa.int64()),
        _f("seed_b", pa.int64()),
        _f("epoch", pa.int64(), "epochs", "0-based epoch of the curve's training the row ends"),
        _f("lr", pa.float64(), "", "learning rate throughout the epoch"),
        _f("train_loss", pa.float64(), "nats", "mean cross-entropy of the epoch's batches, each at one t ~ U(0,1)"),
        _f("train_error", pa.float64(), "percent", "error on the same batches"),
        _f("objective", pa.float64(), "nats", "train_loss plus the weight-decay term the curve is trained on"),
        _f("seconds", pa.float64(), "s", "wall time of the epoch"),
    ]
)

SCHEMAS = {"models": MODELS_SCHEMA, "pairs": PAIRS_SCHEMA, "curves": CURVES_SCHEMA, "history": HISTORY_SCHEMA,
           "curve_history": CURVE_HISTORY_SCHEMA}

# The columns that identify one row (models, pairs) or one group of rows (curves).
KEY_COLUMNS = {
    "models": ["load_name", "load_value", "temperature_name", "temperature_value", "seed"],
    "pairs": ["load_name", "load_value", "temperature_name", "temperature_value", "seed_a", "seed_b"],
    "curves": ["load_name", "load_value", "temperature_name", "temperature_value", "seed_a", "seed_b"],
    "history": ["load_name", "load_value", "temperature_name", "temperature_value", "seed"],
    "curve_history": ["load_name", "load_value", "temperature_name", "temperature_value", "seed_a", "seed_b"],
}
MODEL_KEYED = ("models", "history")  # tables whose parts are named by a model key (the others: a pair key)


# Columns a part must have to be read: what identifies its rows, and the layout they were written in.
def required_columns(table: str) -> list[str]:
    return ["schema_version", *KEY_COLUMNS[table]]



class TableError(RuntimeError):
    """A table of a run cannot be read or written; the message names the file and the fix."""



def table_schema(table: str, added: tuple[MetricSpec, ...] | list[MetricSpec] = ()) -> pa.Schema:
    """The schema of ``table``; with ``added`` metrics, their columns (those of this table: models for per-model
    metrics, pairs for per-pair ones) appended after the built-in columns, in the given order."""
    try:
        schema = SCHEMAS[table]
    except KeyError:
        raise TableError(f"unknown table {table!r}; the tables are {list(SCHEMAS)}") from None
    per = {"models": "model", "pairs": "pair"}.get(table)
    for spec in added:
        if spec.per == per and spec.name not in schema.names:
            schema = schema.append(metric_field(spec))
    return schema


def field_units(table: str) -> dict[str, str]:
    """Column name -> unit, from the schema's field metadata (for plot labels and reports)."""
    out = {}
    for f in table_schema(table):
        if f.metadata and b"unit" in f.metadata:
            out[f.name] = f.metadata[b"unit"].decode()
    return out


def library_versions_json(versions: dict[str, str]) -> str:
    return json.dumps(versions, sort_keys=True)


def landscape_version() -> str:
    """This package's installed version, "unknown" when it runs from a source tree that is not installed."""
    try:
        return metadata.version("landscape")
    except metadata.PackageNotFoundError:
        return "unknown"
