"""The plan: what the tables of a run directory say is done, and what is left to do (see orchestrator/sweep.py).

The tables are the record of what is done: a model is done when its row is ok (and its weights file exists)
or diverged; a pair is done when its row is ok or diverged (and, when ok, its curve part exists). A row counts
only from the part named by its own key (a copy or a part under another key's name is moved aside, never
counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.schemas import TABLE_NAMES
from analysis.tables import RunTables, TableScan, join
from orchestrator import storage
from orchestrator.config import SweepConfig
from orchestrator.cost import order_models
from orchestrator.jobs import DONE_MODEL, DONE_PAIR, mkey, pkey
from orchestrator.run_facts import RunFacts, for_reading, measure


class PlanError(RuntimeError):
    """The run directory holds results that cannot be continued with this config."""


@dataclass
class Stage:
    """One kind of result as the tables hold it: every key the grid expects, and what its own part's row says.

    What `landscape status` prints per stage (``counts``, ``failed``, ``missing``); rows whose part does not hold
    its own key are not in ``status``.
    """

    expected: list = field(default_factory=list)  # every key of the grid, in grid order
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


@dataclass
class Plan:
    """What the tables say is done and what is left (the jobs of a run), and everything `status` reports."""

    models_done: dict = field(default_factory=dict)  # model key -> status (ok | diverged)
    models_todo: list = field(default_factory=list)  # [(load, temperature, seed)]
    # Finished models (ok, weights present) lacking an added metric of the run: measured from their saved
    # weights by a model job that does not train (orchestrator/worker.py measure_added_metrics).
    models_to_measure: list = field(default_factory=list)  # [(load, temperature, seed)]
    pairs_done: dict = field(default_factory=dict)  # pair key -> status
    pairs_todo: list = field(default_factory=list)  # [(load, temperature, seed_a, seed_b)]
    repaired: list = field(default_factory=list)  # human-readable notes on what was found broken
    broken_weights: dict = field(default_factory=dict)  # model key -> "missing" | "truncated" (status shows them)
    broken_curves: list = field(default_factory=list)  # ok pairs whose curve part is missing or unreadable
    unreadable: dict = field(default_factory=dict)  # table -> [(part key, why)] (moved aside by a repair)
    misplaced: dict = field(default_factory=dict)  # table -> {part key: why} parts not holding their own key
    scans: dict = field(default_factory=dict)  # table -> TableScan the plan was made from, without those parts
    duplicates: dict = field(default_factory=dict)  # table -> misplaced parts whose rows are also under their own key
    stages: dict = field(default_factory=dict)  # "models" | "pairs" -> Stage
    other_hashes: dict = field(default_factory=dict)  # table -> config hashes of rows made with other settings
    config_hash: str = ""
    facts: RunFacts | None = None  # what the costs and the added metrics were taken from (orchestrator/run_facts.py)

    @property
    def complete(self) -> bool:
        return not self.models_todo and not self.pairs_todo and not self.models_to_measure


def scan_tables(run_dir: str) -> dict[str, TableScan]:
    """Every table of ``run_dir`` read once (each part once): what a command shares between the plan, its
    summary and the analysis."""
    tables = RunTables(run_dir)
    return {table: tables.scan(table) for table in TABLE_NAMES}


def make_plan(cfg: SweepConfig, run_dir: str, *, repair: bool = True, scans: dict | None = None,
              verify_weights: bool = True, facts: RunFacts | None = None) -> Plan:
    """Compare the config's grid with the tables of ``run_dir`` (read once, or the given ``scans``).

    Broken things are detected and scheduled again: an unreadable part, a part that does not hold its own
    key (a copy ``K (copy).parquet``, a part stored under another key's name: never counted, never a reason
    to skip a key), an ok model whose weights file is missing or truncated, an ok pair whose curve part is
    missing. ``repair`` moves such parts to RUN_DIR/quarantine (nothing a user put there is deleted) and
    removes the temporary files of writes cut short. Rows computed with different settings (another config
    hash) raise PlanError before anything is changed when ``repair`` (mixing them would silently compare
    apples and pears); without it (`landscape status`) they are recorded in ``other_hashes``.

    ``facts`` (the costs that order the jobs, the names of the run's added metrics): by default measured from
    the config's code when ``repair`` (`run`, `resume`: they run that code anyway), else (`status`) read back
    as data from RUN_DIR/facts.json or assumed: a plan that does not repair imports and calls nothing the
    config names.
    """
    tables = RunTables(run_dir)
    plan = Plan()
    plan.facts = facts or (measure(cfg) if repair else for_reading(run_dir, cfg))
    scans = dict(scans) if scans is not None else scan_tables(run_dir)
    moves = []  # (table, key, note) of parts to move aside, done once the plan is known to be valid
    for table in TABLE_NAMES:
        scan = scans[table]
        plan.unreadable[table] = list(scan.unreadable)
        plan.misplaced[table] = scan.misnamed()
        plan.duplicates[table] = scan.duplicates()
        for key, why in scan.unreadable:
            moves.append((table, key, f"unreadable {table} part {key} ({why.split(':')[0]})"))
        for key, why in plan.misplaced[table].items():
            moves.append((table, key, f"{table} part {key}.parquet does not hold {key} ({why})"))
        # What the plan (and whatever shares its read) counts: the parts that hold their own keys.
        scans[table] = scan.without(set(plan.misplaced[table]) | ({k for k, _ in scan.unreadable} if repair else set()))
    plan.scans = scans
    frames = {table: scan.frame for table, scan in scans.items()}
    current = plan.config_hash = cfg.config_hash()
    for table in ("models", "pairs"):
        hashes = set(frames[table]["config_hash"].dropna()) - {current}
        plan.other_hashes[table] = sorted(hashes)
        if hashes and repair:
            raise PlanError(
                f"{run_dir} holds {table} rows computed with other settings (config hash {sorted(hashes)[0]}, "
                f"this config: {current}): training or metric settings differ from the run's. Keep the run's "
                f"settings (only grid values, seeds and resources may change on resume) or use a new run directory"
            )
    if repair:
        swept = storage.sweep_temporary_files(run_dir)
        if swept:
            plan.repaired.append(f"removed {len(swept)} temporary file(s) of writes cut short, e.g. {swept[0]}")
    for table, key, note in moves:
        if repair:
            moved = storage.move_aside(run_dir, tables.part_uri(table, key))
            plan.repaired.append(f"{note}: moved to {moved}, recomputed")
        else:
            plan.repaired.append(f"{note}: resume moves it aside and recomputes it")
    model_files = storage.list_names(join(run_dir, "models"), ".pt")
    curve_parts = set(scans["curves"].row_parts)  # readable curve parts that hold their own key

    for table, keys in (("models", [mkey(cfg, *k) for k in cfg.model_keys()]),
                        ("pairs", [pkey(cfg, *k) for k in cfg.pair_keys()])):
        df = frames[table]
        plan.stages[table] = Stage(
            expected=keys, status=dict(zip(scans[table].row_parts, df["status"])),
            errors={k: e for k, st, e in zip(scans[table].row_parts, df["status"], df["error"]) if st == "failed"})
    status = plan.stages["models"].status
    unmeasured = _lacking_added_metrics(plan.facts.added_metrics, scans["models"])
    # ok models whose weights file is there but not the one written: truncated, or (verify_weights) its bytes
    # are not those its row's sha256 names (a flipped bit still loads). Retrained, with the pairs using them.
    hashes = dict(zip(scans["models"].row_parts, frames["models"].get("weights_sha256", pd.Series(dtype=object))))
    damaged = storage.weights_problems(run_dir, {k: hashes.get(k) for k, st in status.items()
                                                 if st == "ok" and k in model_files}, verify_hashes=verify_weights)
    for lv, tv, s in cfg.model_keys():
        key = mkey(cfg, lv, tv, s)
        st = status.get(key)
        if st == "ok" and key not in model_files:
            plan.repaired.append(f"model {key}: weights file missing, retrained")
            plan.broken_weights[key] = "missing"
            st = None
        elif st == "ok" and key in damaged:
            plan.broken_weights[key] = damaged[key]
            if not repair:
                plan.repaired.append(f"model {key}: weights file {damaged[key]}, retrained by resume")
            elif damaged[key] == "truncated":
                storage.delete(storage.model_uri(run_dir, key))
                plan.repaired.append(f"model {key}: weights file truncated, retrained")
            else:  # whole, but not what was written: kept aside (nothing is deleted that might be evidence)
                moved = storage.move_aside(run_dir, storage.model_uri(run_dir, key))
                plan.repaired.append(f"model {key}: weights file {damaged[key]}: moved to {moved}, retrained")
            st = None
        if st in DONE_MODEL:
            plan.models_done[key] = st
            if st == "ok" and key in unmeasured:
                plan.models_to_measure.append((lv, tv, s))
        else:
            plan.models_todo.append((lv, tv, s))

    pstatus = plan.stages["pairs"].status
    retrained = {mkey(cfg, lv, tv, s) for lv, tv, s in plan.models_todo}
    for lv, tv, a, b in cfg.pair_keys():
        key = pkey(cfg, lv, tv, a, b)
        st = pstatus.get(key)
        redo = False
        if st == "ok" and key not in curve_parts:
            plan.repaired.append(f"pair {key}: curve part missing or unreadable, recomputed")
            plan.broken_curves.append(key)
            redo = True
        # A pair measured on a model that is now retrained is stale: measure it again with the new model.
        elif st in DONE_PAIR and (mkey(cfg, lv, tv, a) in retrained or mkey(cfg, lv, tv, b) in retrained):
            redo = True
        if redo:
            st = None
            if repair:  # the pair job skips a key whose row says done: the stale row (ours, by its key) must go
                tables.delete_part("pairs", key)
        if st in DONE_PAIR:
            plan.pairs_done[key] = st
        else:
            plan.pairs_todo.append((lv, tv, a, b))
    plan.models_todo = order_models(cfg, plan.models_todo, plan.facts)
    return plan


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
