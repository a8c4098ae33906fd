"""A model's training as it happens and afterwards: its epochs reported to Tune (the live view) and its
``history`` table part (the record). Every job that trains models calls these two, whatever trained them:
a model job its one model's history, a cohort job each member's.

    epoch_reporter(key, labels)    -> a function of one epoch's entries (one per model trained together) that
                                      reports their mean and each model's own numbers (under its label,
                                      orchestrator/worker/trial_outputs.py) to Tune: Ray's dashboard and the logger
                                      callbacks (orchestrator/driver/loggers.py) see every epoch of every model
    write_history(tables, ...)     the history part of one model, written before its models row
    write_curve_history(tables, ...)   the curve_history part of one pair, written before its pairs row

The last report of a job stays its final one (status, key, ...): the searcher and the recorder read a trial's
last result, so the per-epoch reports carry no ``status``.
"""

from __future__ import annotations

import math

from analysis.tables import RunTables
from orchestrator.rundir import fault_hook, storage

# The Tune result keys of an epoch report, from the history entries' columns. Prefixed with epoch_ so that
# they never mean the same as the final report's train_loss / test_acc (the full-set measurements).
EPOCH_RESULT_KEYS = {"train_loss": "epoch_train_loss", "train_acc": "epoch_train_acc", "test_loss": "epoch_test_loss",
                     "test_acc": "epoch_test_acc", "lr": "epoch_lr", "seconds": "epoch_seconds"}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def epoch_result(key: str, entries: list[dict], labels: list[str] | None = None) -> dict:
    """The Tune result of one epoch of the models trained together in one job (a model job: one entry; a cohort
    job: one per member still training): ``epoch`` (1-based: epochs done) and the mean over the entries of
    every column of EPOCH_RESULT_KEYS that is a finite number in each of them (test_* only after an
    evaluation); ``models`` = how many entries the means are over.

    With ``labels`` (each model's tag path, by its index in the job: an entry's ``member``, else 0), also each
    model's own finite numbers as ``<label>/epoch_train_loss`` etc.: one curve per model, where the mean
    alone hid a cohort's members."""
    result = {"kind": "model", "key": key, "epoch": int(entries[0]["epoch"]) + 1, "models": len(entries)}
    for column, name in EPOCH_RESULT_KEYS.items():
        values = [e.get(column) for e in entries]
        if values and all(_finite(v) for v in values):
            result[name] = float(sum(values) / len(values))
    for entry in entries if labels else ():
        label = labels[int(entry.get("member", 0))]
        result.update({f"{label}/{name}": float(entry[column]) for column, name in EPOCH_RESULT_KEYS.items()
                       if _finite(entry.get(column))})
    return result


def epoch_reporter(key: str, labels: list[str] | None = None):
    """A function (entries: list[dict]) -> None that reports ``epoch_result(key, entries, labels)`` to Tune."""
    from ray import tune

    def report(entries: list[dict]) -> None:
        tune.report(epoch_result(key, entries, labels))

    return report


def write_history(tables: RunTables, key: str, prov: dict, keys: dict, seed: int, history: list[dict]) -> None:
    """Write (or replace) the ``history`` part of model ``key``: prov (orchestrator.rundir.provenance) and the model's
    cell keys (CellSpec.keys()) and seed on every row, one row per entry of ``history`` (TrainResult.history or
    a cohort member's). A model without a completed epoch has no part (an older one is removed)."""
    from workloads.rows import history_rows

    rows = [{**prov, **row} for row in history_rows(keys, seed, history)]
    with storage.writing(tables.part_uri("history", key)):
        fault_hook.write_point(key)
        if rows:
            tables.write_part("history", key, rows)
        else:
            tables.delete_part("history", key)


def write_curve_history(tables: RunTables, key: str, prov: dict, rows: list[dict]) -> None:
    """Write (or replace) the ``curve_history`` part of pair ``key`` (PairOutcome.history_rows, prov added); a pair
    without a completed curve epoch has none (an older one is removed)."""
    with storage.writing(tables.part_uri("curve_history", key)):
        fault_hook.write_point(key)
        if rows:
            tables.write_part("curve_history", key, [{**prov, **row} for row in rows])
        else:
            tables.delete_part("curve_history", key)
