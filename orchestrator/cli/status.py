"""`landscape status RUN_DIR`: per table, what the tables say is done, diverged, failed and missing (the plan as
orchestrator/planning/plan.py assesses it: status never repairs)."""

from __future__ import annotations

import os

from analysis.tables import RunTables, join
from orchestrator.rundir import runlock, storage
from orchestrator.config import ConfigError
from orchestrator.planning.run_facts import FACTS_FILE, for_reading
from orchestrator.config.run_config import load_run_config

MAX_LISTED = 8  # failed / missing keys listed per table


def tables_only_status(run_dir: str, scans: dict) -> tuple[str, dict]:
    """For run dirs without a sweep config (e.g. an imported reference): rows per table and status (text, data)."""
    lines = [f"run {run_dir} (no config.yaml: tables only, nothing to compare with a grid)"]
    data = {"run_dir": run_dir, "config": None, "tables": {}}
    for table in ("models", "pairs"):
        df = scans[table].frame
        by = {str(k): int(v) for k, v in df["status"].value_counts().items()} if len(df) else {}
        lines.append(f"{table}: {len(df)} rows" + "".join(f" · {n} {st}" for st, n in sorted(by.items())))
        data["tables"][table] = {"rows": len(df), "by_status": by}
    curves = len(set(scans["curves"].row_parts))
    lines.append(f"curves: {curves} pair curve(s) stored")
    data["curves_stored"] = curves
    return "\n".join(lines), data


def run_status(run_dir: str, *, verify_weights: bool = True) -> str:
    return run_status_report(run_dir, verify_weights=verify_weights)[0]


def run_status_report(run_dir: str, *, verify_weights: bool = True) -> tuple[str, str | None, dict]:
    """(the text of `landscape status`, a one-line problem that makes it exit non-zero or None, the same facts
    as a JSON-able mapping for `status --json`).

    The problem: failed jobs, and ok models whose weights are not usable (missing, truncated, or not the bytes
    their row's sha256 names; ``verify_weights`` False skips reading and hashing every weights file)."""
    run_dir = storage.normalise_run_dir(run_dir)
    try:
        return _run_status(run_dir, verify_weights)
    except OSError as exc:  # e.g. tables/models is a file, or a folder we may not read
        raise ConfigError(f"cannot read the run directory {run_dir}: {exc.strerror or exc} "
                          f"({getattr(exc, 'filename', None) or 'a table folder'}); a run directory holds "
                          f"tables/<table>/ folders of Parquet parts: restore or remove what is in the way") from None


TABLE_HEADINGS = {"models": "stage 1 models", "pairs": "stage 2 pairs "}


def _run_status(run_dir: str, verify_weights: bool = True) -> tuple[str, str | None, dict]:
    from orchestrator.planning.plan import assess, scan_tables

    # A link or a device under the name counts too: load_run_config refuses it by name (analysis/run_files.py).
    has_config = storage.exists(storage.config_uri(run_dir)) or os.path.lexists(storage.config_uri(run_dir))
    tables = RunTables(run_dir)
    if not has_config and not (tables.part_keys("models") or tables.part_keys("pairs")):
        load_run_config(run_dir)  # the clear error: not a run directory
    scans = scan_tables(run_dir)  # every part read once; the plan below shares the read
    if not has_config:
        text, data = tables_only_status(run_dir, scans)
        return text, None, data
    cfg = load_run_config(run_dir)
    info = storage.read_run_info(run_dir) or {}
    plan = assess(cfg, run_dir, scans=scans, verify_weights=verify_weights, facts=for_reading(run_dir, cfg))
    search_lines, search = [], {"search": "grid"}
    if cfg.adaptive_search:  # expected: the keys the policy chose, derived from the tables (never the wave files)
        from orchestrator.driver import adaptive_sweep

        derived = adaptive_sweep.replay(cfg, plan)
        plan = adaptive_sweep.restrict(cfg, plan, derived)
        recorded = sorted(storage.list_names(join(run_dir, adaptive_sweep.WAVES_DIR), ".json"))
        search_lines = adaptive_sweep.status_lines(cfg, derived, recorded)
        search = adaptive_sweep.status_json(cfg, derived, recorded)
    lines = format_plan(plan, run_dir, cfg.name, info.get("run_id", "?"), runlock.lock_holder(run_dir))
    text = "\n".join(lines[:3] + search_lines + lines[3:])
    problems = []
    failed = {table: len(keys.failed) for table, keys in plan.tables.items() if keys.failed}
    if failed:
        problems.append(" and ".join(f"{n} {table[:-1]} job(s)" for table, n in failed.items())
                        + f" failed; `landscape resume {run_dir}` retries them")
    if plan.broken_weights:
        problems.append(f"{len(plan.broken_weights)} finished model(s) without usable weights (e.g. model "
                        f"{next(iter(plan.broken_weights))}: {next(iter(plan.broken_weights.values()))}); "
                        f"`landscape resume {run_dir}` retrains them and the pairs that use them")
    problem = "; ".join(problems) or None
    data = status_data(plan, run_dir, cfg.name, info.get("run_id"), runlock.lock_holder(run_dir), problem)
    return text, problem, {**data, "search": search}


def status_data(plan, run_dir: str, name: str, run_id: str | None, holder: str | None, problem: str | None) -> dict:
    """`landscape status --json`: the facts of format_plan's lines, keys in full."""
    per_table = {table: {"expected": len(keys.expected), "ok": keys.count("ok"), "diverged": keys.count("diverged"),
                         "failed": [{"key": k, "error": keys.errors.get(k)} for k in keys.failed],
                         "missing": list(keys.missing)} for table, keys in plan.tables.items()}
    return {"run_dir": run_dir, "config": name, "config_hash": plan.config_hash, "run_id": run_id,
            "sweep_running": holder, "stages": per_table, "broken_weights": dict(plan.broken_weights),
            "models_to_measure": len(plan.models_to_measure),
            "other_hashes": {t: v for t, v in plan.other_hashes.items() if v},
            "curves_stored": len(set(plan.scans["curves"].row_parts)), "broken_curves": list(plan.broken_curves),
            "problem": problem}


def format_plan(plan, run_dir: str, name: str, run_id: str, holder: str | None) -> list[str]:
    """The lines of `landscape status`: what the plan found, per table, and what a resume repairs."""
    lines = [f"run {run_dir}", f"  config {name!r} (hash {plan.config_hash}), run id {run_id}"]
    lines.append(f"  sweep: running ({holder})" if holder else "  sweep: not running")
    for table, keys in plan.tables.items():
        failed, missing = keys.failed, keys.missing
        lines.append(f"{TABLE_HEADINGS.get(table, table)}: {len(keys.expected)} expected · {keys.count('ok')} ok · "
                     f"{keys.count('diverged')} diverged · {len(failed)} failed · {len(missing)} missing")
        lines.extend(_damage_lines(table, plan))
        if table == "models" and plan.broken_weights:
            broken = plan.broken_weights
            lines.append(f"  {len(broken)} ok model(s) without usable weights (pairs need them), retrained by resume:")
            lines.extend(f"    model {key}: weights file {why}" for key, why in list(broken.items())[:MAX_LISTED])
        if table == "models" and plan.models_to_measure:
            lines.append(f"  {len(plan.models_to_measure)} ok model(s) lack an added metric of this version; resume "
                         f"measures it from their saved weights (no training)")
        if table == "models" and plan.facts is not None and plan.facts.unresolved_metrics:
            lines.append(f"  metrics.extra {list(plan.facts.unresolved_metrics)}: not checked for missing values (the "
                         f"run has no {FACTS_FILE}, and status imports no code that a run's config names)")
        if plan.other_hashes.get(table):
            lines.append(f"  rows with another config hash: {plan.other_hashes[table]}")
        for key in failed[:MAX_LISTED]:
            lines.append(f"  failed  {key}: {keys.errors.get(key)}")
        for key in missing[:MAX_LISTED]:
            lines.append(f"  missing {key}")
        more = max(len(failed) - MAX_LISTED, 0) + max(len(missing) - MAX_LISTED, 0)
        if more:
            lines.append(f"  ... ({more} more)")
    lines.append(f"curves: {len(set(plan.scans['curves'].row_parts))} pair curve(s) stored")
    lines.extend(_damage_lines("curves", plan))
    if plan.broken_curves:
        lines.append(f"  {len(plan.broken_curves)} ok pair(s) without a readable curve part, recomputed by resume: "
                     + ", ".join(plan.broken_curves[:MAX_LISTED]))
    lines.append(_history_line(run_dir))
    return lines


def _history_line(run_dir: str) -> str:
    """How many models and pairs have a training history (a listing: parts are not read; runs made before the
    tables existed have none)."""
    tables = RunTables(run_dir)
    models, pairs = len(tables.part_keys("history")), len(tables.part_keys("curve_history"))
    return f"history: {models} model(s) and {pairs} curve(s) with a per-epoch training history"


def _damage_lines(table: str, plan) -> list[str]:
    """What `resume` repairs in one table: unreadable parts, parts not holding their own key (duplicates)."""
    lines = []
    unreadable, misnamed = plan.unreadable.get(table, []), plan.misplaced.get(table, {})
    if unreadable:
        lines.append(f"  {len(unreadable)} unreadable part(s), moved aside and recomputed by resume: "
                     + ", ".join(k for k, _ in unreadable[:MAX_LISTED]))
    if misnamed:
        lines.append(f"  {len(misnamed)} {table} part(s) not holding their own key "
                     f"({len(plan.duplicates.get(table, ()))} duplicate(s)), never counted; resume moves them aside:")
        lines.extend(f"    {key}.parquet: {why}" for key, why in list(misnamed.items())[:MAX_LISTED])
    return lines
