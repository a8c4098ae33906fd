"""The plan: what the tables of a run directory say is done, what is left to do and what is broken (see
orchestrator/driver/sweep.py). The tables are the record of what is done: a model is done when its row is ok (and its
weights file exists) or diverged; a pair is done when its row is ok or diverged (and, when ok, its curve part
exists). A row counts only from the part named by its own key (a copy or a part under another key's name is
moved aside, never counted). Looking changes nothing: :func:`assess` only reads, and records in its frozen
:class:`Plan` (``repairs``) the changes the run directory needs; :func:`repair` makes exactly those. `landscape
status` only assesses; `run`, `resume` and each round of a sweep assess, repair, and run the plan they describe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from analysis.schemas import TABLE_NAMES
from analysis.tables import RunTables, TableScan, join
from orchestrator.rundir import storage
from orchestrator.config import SweepConfig
from orchestrator.planning.cost import order_models
from orchestrator.planning.jobs import DONE_MODEL, DONE_PAIR, mkey, pkey
from orchestrator.planning.run_facts import RunFacts


class PlanError(RuntimeError):
    """The run directory holds results that cannot be continued with this config."""


@dataclass(frozen=True)
class TableStatus:
    """One table (models or pairs) as the plan reads it, and as `landscape status` prints it: every key the grid
    expects, and what its own part's row says (rows of parts not holding their own key are not in ``status``)."""

    expected: tuple = ()  # every key of the grid, in grid order
    status: dict = field(default_factory=dict)  # key -> its row's status (ok | diverged | failed)
    errors: dict = field(default_factory=dict)  # key -> its row's error, for failed rows

    def count(self, status: str) -> int:
        return sum(1 for key in self.expected if self.status.get(key) == status)

    @property
    def failed(self) -> list:
        return [key for key in self.expected if self.status.get(key) == "failed"]

    @property
    def missing(self) -> list:
        return [key for key in self.expected if self.status.get(key) not in ("ok", "diverged", "failed")]


@dataclass(frozen=True)
class Repair:
    """One thing the assessment found broken, and the change :func:`repair` makes for it."""

    found: str  # e.g. "model K: weights file truncated"; "" for a pair row made stale by a retrained model
    action: str  # "move aside" (to RUN_DIR/quarantine: not ours, or evidence) | "delete" | "" (no change)
    uri: str = ""  # the file it is about (the one the action moves or deletes)
    redo: str = "recomputed"  # what the run then does with the key (the note's end)


@dataclass(frozen=True)
class Plan:
    """What the tables say is done and what is left (the jobs of a run), and everything `status` reports. Built
    once by :func:`assess`; a repaired plan, a sweep's round or an adaptive wave is a ``dataclasses.replace``."""

    models_done: dict = field(default_factory=dict)  # model key -> status (ok | diverged)
    models_todo: tuple = ()  # ((load, temperature, seed), ...)
    # Finished models (ok, weights present) lacking an added metric of the run: measured from their saved
    # weights by a model job that does not train (orchestrator/worker/trainable.py measure_added_metrics).
    models_to_measure: tuple = ()  # ((load, temperature, seed), ...)
    pairs_done: dict = field(default_factory=dict)  # pair key -> status
    pairs_todo: tuple = ()  # ((load, temperature, seed_a, seed_b), ...)
    repairs: tuple = ()  # (Repair, ...) still to make, in the order repair() makes them
    repaired: tuple = ()  # notes on the repairs made (repair(), a rewritten run.json): describe() prints them
    broken_weights: dict = field(default_factory=dict)  # model key -> "missing" | "truncated" | damaged
    broken_curves: tuple = ()  # ok pairs whose curve part is missing or unreadable
    unreadable: dict = field(default_factory=dict)  # table -> ((part key, why), ...) (moved aside by a repair)
    misplaced: dict = field(default_factory=dict)  # table -> {part key: why} parts not holding their own key
    scans: dict = field(default_factory=dict)  # table -> TableScan of the parts the plan counts (not those above)
    duplicates: dict = field(default_factory=dict)  # table -> misplaced parts whose rows are also under their own key
    tables: dict = field(default_factory=dict)  # "models" | "pairs" -> TableStatus
    other_hashes: dict = field(default_factory=dict)  # table -> config hashes of rows made with other settings
    config_hash: str = ""
    facts: RunFacts | None = None  # what the costs and the added metrics were taken from (orchestrator/planning/run_facts.py)

    @property
    def complete(self) -> bool:
        return not self.models_todo and not self.pairs_todo and not self.models_to_measure

    def describe(self, *, resuming: bool = False) -> list[str]:
        """What a run prints about the plan it runs: the repairs made, then, when anything was done before
        (always on resume), what is done and what is left to do."""
        lines = [f"  repair: {note}" for note in self.repaired]
        if resuming or self.models_done or self.pairs_done:
            lines.append(f"  already done: {len(self.models_done)} models, {len(self.pairs_done)} pairs; to do: "
                         f"{len(self.models_todo)} models, {len(self.pairs_todo)} pairs"
                         + (f", {len(self.models_to_measure)} finished models to measure (added metrics, from "
                            f"their saved weights; no training)" if self.models_to_measure else ""))
        return lines


def scan_tables(run_dir: str) -> dict[str, TableScan]:
    """Every table of ``run_dir`` read once (each part once): what a command shares between the plan, its
    summary and the analysis."""
    tables = RunTables(run_dir)
    return {table: tables.scan(table) for table in TABLE_NAMES}


def assess(cfg: SweepConfig, run_dir: str, *, facts: RunFacts, scans: dict | None = None,
           verify_weights: bool = True) -> Plan:
    """Compare the config's grid with the tables of ``run_dir`` (read once, or the given ``scans``); reads only.

    Broken things are scheduled again, and what repairs them recorded in ``Plan.repairs``: an unreadable part,
    a part not holding its own key (a copy ``K (copy).parquet``, a part under another key's name: never counted),
    an ok model whose weights file is missing, truncated or (``verify_weights``) not the bytes its row's sha256
    names, an ok pair whose curve part is missing, a pair row made stale by a retrained model. Rows of another
    config hash are recorded in ``other_hashes`` (:func:`repair` refuses them). ``facts`` (the costs that order
    the jobs, the run's added metrics): `run` and `resume` measure them (run_facts.measure: they run the
    config's code anyway), `status` reads them back as data (run_facts.for_reading: it runs none of it)."""
    tables = RunTables(run_dir)
    scans = dict(scans) if scans is not None else scan_tables(run_dir)
    unreadable, misplaced, duplicates, repairs = {}, {}, {}, []
    for table in TABLE_NAMES:
        scan = scans[table]
        unreadable[table], misplaced[table] = tuple(scan.unreadable), scan.misnamed()
        duplicates[table] = scan.duplicates()
        found = [(key, f"unreadable {table} part {key} ({why.split(':')[0]})") for key, why in scan.unreadable]
        found += [(key, f"{table} part {key}.parquet does not hold {key} ({why})")
                  for key, why in misplaced[table].items()]
        repairs += [Repair(note, "move aside", tables.part_uri(table, key)) for key, note in found]
        # What the plan (and whatever shares its read) counts: the parts that hold their own keys.
        scans[table] = scan.without(set(misplaced[table]) | {k for k, _ in scan.unreadable})
    frames = {table: scan.frame for table, scan in scans.items()}
    current = cfg.config_hash()
    other_hashes = {table: sorted(set(frames[table]["config_hash"].dropna()) - {current})
                    for table in ("models", "pairs")}
    model_files = storage.list_names(join(run_dir, "models"), ".pt")
    curve_parts = set(scans["curves"].row_parts)  # readable curve parts that hold their own key
    by_table = {}
    for table, keys in (("models", [mkey(cfg, *k) for k in cfg.model_keys()]),
                        ("pairs", [pkey(cfg, *k) for k in cfg.pair_keys()])):
        parts, df = scans[table].row_parts, frames[table]
        by_table[table] = TableStatus(tuple(keys), dict(zip(parts, df["status"])),
                                      {k: e for k, st, e in zip(parts, df["status"], df["error"]) if st == "failed"})
    status = by_table["models"].status
    unmeasured = _lacking_added_metrics(facts.added_metrics, scans["models"])
    # ok models whose weights file is there but not the one written: truncated, or (verify_weights) its bytes
    # are not those its row's sha256 names (a flipped bit still loads). Retrained, with the pairs using them.
    hashes = dict(zip(scans["models"].row_parts, frames["models"].get("weights_sha256", pd.Series(dtype=object))))
    damaged = storage.weights_problems(run_dir, {k: hashes.get(k) for k, st in status.items()
                                                 if st == "ok" and k in model_files}, verify_hashes=verify_weights)
    broken_weights, models_done, models_todo, models_to_measure = {}, {}, [], []
    for lv, tv, s in cfg.model_keys():
        key = mkey(cfg, lv, tv, s)
        st = status.get(key)
        if st == "ok" and (key not in model_files or key in damaged):
            broken_weights[key] = why = damaged.get(key, "missing")
            # Truncated: deleted; whole but not what was written: kept aside (evidence); missing: only retrained.
            action = {"missing": "", "truncated": "delete"}.get(why, "move aside")
            repairs.append(Repair(f"model {key}: weights file {why}", action, storage.model_uri(run_dir, key),
                                  "retrained"))
            st = None
        if st in DONE_MODEL:
            models_done[key] = st
            if st == "ok" and key in unmeasured:
                models_to_measure.append((lv, tv, s))
        else:
            models_todo.append((lv, tv, s))

    pstatus = by_table["pairs"].status
    retrained = {mkey(cfg, lv, tv, s) for lv, tv, s in models_todo}
    broken_curves, pairs_done, pairs_todo = [], {}, []
    for lv, tv, a, b in cfg.pair_keys():
        key = pkey(cfg, lv, tv, a, b)
        st = pstatus.get(key)
        # A pair measured on a model that is now retrained is stale: measure it again with the new model. The
        # pair job skips a key whose row says done: the stale row (ours, by its key) must go.
        stale = st in DONE_PAIR and (mkey(cfg, lv, tv, a) in retrained or mkey(cfg, lv, tv, b) in retrained)
        no_curve = st == "ok" and key not in curve_parts
        if no_curve or stale:
            broken_curves += [key] if no_curve else []
            repairs.append(Repair(f"pair {key}: curve part missing or unreadable" if no_curve else "", "delete",
                                  tables.part_uri("pairs", key)))
            st = None
        if st in DONE_PAIR:
            pairs_done[key] = st
        else:
            pairs_todo.append((lv, tv, a, b))
    return Plan(models_done=models_done, models_todo=tuple(order_models(cfg, models_todo, facts)),
                models_to_measure=tuple(models_to_measure), pairs_done=pairs_done, pairs_todo=tuple(pairs_todo),
                repairs=tuple(repairs), broken_weights=broken_weights, broken_curves=tuple(broken_curves),
                unreadable=unreadable, misplaced=misplaced, scans=scans, duplicates=duplicates, tables=by_table,
                other_hashes=other_hashes, config_hash=current, facts=facts)


def repair(run_dir: str, plan: Plan) -> Plan:
    """Make the changes the assessment recorded in ``plan.repairs`` and return the plan as repaired (their notes
    in ``repaired``); call it holding the run directory's lock. Rows of another config hash raise PlanError
    before anything changes (mixing them would silently compare apples and pears); then the temporary files of
    cut writes are removed, and each repair moves its file to RUN_DIR/quarantine (nothing a user put there is
    deleted: unreadable or misplaced parts, damaged weights) or deletes it (truncated weights, stale pair rows)."""
    for table, hashes in plan.other_hashes.items():
        if hashes:
            raise PlanError(f"{run_dir} holds {table} rows computed with other settings (config hash {hashes[0]}, "
                            f"this config: {plan.config_hash}): training or metric settings differ from the run's. "
                            f"Keep the run's settings (only grid values, seeds and resources may change on resume) "
                            f"or use a new run directory")
    swept = storage.sweep_temporary_files(run_dir)
    notes = [f"removed {len(swept)} temporary file(s) of writes cut short, e.g. {swept[0]}"] if swept else []
    for r in plan.repairs:
        moved = storage.move_aside(run_dir, r.uri) if r.action == "move aside" else None
        if r.action == "delete":  # one that fails raises: a stale pair row left behind would count as done
            storage.delete(r.uri, best_effort=False)
        if r.found:
            notes.append(f"{r.found}{f': moved to {moved}' if moved else ''}, {r.redo}")
    return dataclasses.replace(plan, repairs=(), repaired=plan.repaired + tuple(notes))


def _lacking_added_metrics(added: tuple, scan: TableScan) -> set[str]:
    """Keys of the ok models rows (from their own parts) that lack a value of an added metric of the run
    (``added``: the names of the package's own, workloads/extra_metrics/, and of the config's metrics.extra)."""
    if not added:
        return set()
    frame = scan.frame
    lacking = pd.Series(False, index=frame.index)
    for name in added:
        lacking |= frame[name].isna() if name in frame.columns else True
    return {part for part, ok, lacks in zip(scan.row_parts, frame["status"] == "ok", lacking) if ok and lacks}
