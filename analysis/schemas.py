"""The schemas of a run's tables: explicit pyarrow schemas with units and docs in the field metadata.

Schema evolution. Columns are only ever added within a schema version, and reading is additive (see
analysis/tables.py): a column added later reads as null in parts written before it existed. SCHEMA_VERSION
changes only for an incompatible change (a column renamed, retyped or given another meaning).
"""

from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = 1

TABLE_NAMES = ("models", "pairs", "curves")


def _f(name: str, type_: pa.DataType, unit: str = "", doc: str = "") -> pa.Field:
    meta = {}
    if unit:
        meta["unit"] = unit
    if doc:
        meta["doc"] = doc
    return pa.field(name, type_, metadata=meta or None)


COHORT_DOC = ("the cohort the row was computed in (models-<hash> / pairs-<hash> of its members' keys); null when "
              "it was computed alone (execution.cohort: off, or rows written before cohorts)")

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
        _f("train_loss", pa.float64(), "nats", "mean cross-entropy on the full training set, eval mode"),
        _f("train_acc", pa.float64(), "fraction", "accuracy on the full training set, eval mode"),
        _f("test_loss", pa.float64(), "nats"),
        _f("test_acc", pa.float64(), "fraction"),
        _f("hessian_top_eigenvalue", pa.float64(), "1/nats", "largest algebraic eigenvalue"),
        _f("hessian_trace", pa.float64(), "1/nats"),
        _f("hessian_backend", pa.string()),
        _f("hessian_samples", pa.int64(), "examples", "training points the Hessian is taken over"),
        _f("hessian_eigen_iterations", pa.int64(), "Hessian-vector products"),
        _f("hessian_trace_probes", pa.int64(), "probes"),
        _f("num_params", pa.int64(), "parameters"),
        _f("train_size", pa.int64(), "examples"),
        _f("label_noise_realised", pa.float64(), "fraction", "training labels actually changed"),
        _f("epochs_completed", pa.int64(), "epochs"),
        _f("train_loss_drop", pa.float64(), "fraction",
           "1 - mean train loss of the last tenth of the epochs / that of the tenth before (per-epoch mean batch "
           "loss, train mode): ~0 = the loss had stopped falling (plateau), clearly > 0 = still falling (under-trained)"),
        _f("train_seconds", pa.float64(), "s"),
        _f("metrics_seconds", pa.float64(), "s"),
        _f("wall_seconds", pa.float64(), "s"),
        _f("device", pa.string()),
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
        _f("mode_connectivity", pa.float64(), "percentage points", "mc = mean endpoint error - e(t*)"),
        _f("t_star", pa.float64()),
        _f("cka", pa.float64(), "", "linear CKA of softmax outputs on the cell's mixup probes"),
        _f("cka_status", pa.string(), doc="ok, or why CKA is undefined (e.g. constant output)"),
        _f("l2_distance", pa.float64(), "", "||theta_a - theta_b||_2 over trainable parameters"),
        _f("curve_epochs", pa.int64(), "epochs"),
        _f("curve_lr", pa.float64()),
        _f("curve_points", pa.int64(), doc="size of the t-grid"),
        _f("cka_probe_size", pa.int64(), "examples"),
        _f("cka_probe_seed", pa.int64()),
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

SCHEMAS = {"models": MODELS_SCHEMA, "pairs": PAIRS_SCHEMA, "curves": CURVES_SCHEMA}

# The columns that identify one row (models, pairs) or one group of rows (curves).
KEY_COLUMNS = {
    "models": ["load_name", "load_value", "temperature_name", "temperature_value", "seed"],
    "pairs": ["load_name", "load_value", "temperature_name", "temperature_value", "seed_a", "seed_b"],
    "curves": ["load_name", "load_value", "temperature_name", "temperature_value", "seed_a", "seed_b"],
}


# Columns a part must have to be read: what identifies its rows, and the layout they were written in.
def required_columns(table: str) -> list[str]:
    return ["schema_version", *KEY_COLUMNS[table]]



class TableError(RuntimeError):
    """A table of a run cannot be read or written; the message names the file and the fix."""



def table_schema(table: str) -> pa.Schema:
    try:
        return SCHEMAS[table]
    except KeyError:
        raise TableError(f"unknown table {table!r}; the tables are {list(TABLE_NAMES)}") from None


def field_units(table: str) -> dict[str, str]:
    """Column name -> unit, from the schema's field metadata (for plot labels and reports)."""
    out = {}
    for f in table_schema(table):
        if f.metadata and b"unit" in f.metadata:
            out[f.name] = f.metadata[b"unit"].decode()
    return out


def library_versions_json(versions: dict[str, str]) -> str:
    return json.dumps(versions, sort_keys=True)
