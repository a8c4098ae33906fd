"""`landscape status RUN_DIR`: per stage, what the tables say is done, diverged, failed and missing."""

from __future__ import annotations

from analysis.tables import RunTables
from orchestrator import storage
from orchestrator.config import ConfigError, parse_config, parse_yaml
from orchestrator.sweep import mkey, pkey

MAX_LISTED = 8  # failed / missing keys listed per stage
# A run's config.yaml holds the settings its rows were computed with (the tables' config hash checks them).
RUN_CONFIG_FIX = ("restore the run's config.yaml from a copy, or rewrite it with the settings the run was started "
                  "with (resume checks them against the tables' config hash)")


def load_run_config(run_dir: str):
    try:
        data = storage.read_bytes(storage.config_uri(run_dir))
    except (FileNotFoundError, OSError):
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)") from None
    try:
        raw = parse_yaml(data, storage.config_uri(run_dir))  # damaged bytes: ConfigError, not a traceback
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {RUN_CONFIG_FIX}") from None
    if raw is None:
        raise ConfigError(f"{storage.config_uri(run_dir)} is empty; {RUN_CONFIG_FIX}")
    try:
        return parse_config(raw, check_data=False)
    except ConfigError as exc:
        raise ConfigError(f"{storage.config_uri(run_dir)}: {exc}") from None


def stage_counts(expected: list[str], statuses: dict[str, str]) -> dict:
    """{"expected", "ok", "diverged", "failed", "missing", "failed_keys", "missing_keys"} for one stage."""
    out = {"expected": len(expected), "ok": 0, "diverged": 0, "failed": 0, "missing": 0,
           "failed_keys": [], "missing_keys": []}
    for key in expected:
        st = statuses.get(key)
        if st in ("ok", "diverged", "failed"):
            out[st] += 1
            if st == "failed":
                out["failed_keys"].append(key)
        else:
            out["missing"] += 1
            out["missing_keys"].append(key)
    return out


def tables_only_status(run_dir: str, scans: dict) -> str:
    """For run dirs without a sweep config (e.g. an imported reference): rows per table and status."""
    lines = [f"run {run_dir} (no config.yaml: tables only, nothing to compare with a grid)"]
    for table in ("models", "pairs"):
        df = scans[table].frame
        by = df["status"].value_counts().to_dict() if len(df) else {}
        lines.append(f"{table}: {len(df)} rows" + "".join(f" · {n} {st}" for st, n in sorted(by.items())))
    lines.append(f"curves: {len(set(scans['curves'].row_parts))} pair curve(s) stored")
    return "\n".join(lines)


def run_status(run_dir: str) -> str:
    run_dir = storage.normalise_run_dir(run_dir)
    try:
        return _run_status(run_dir)
    except OSError as exc:  # e.g. tables/models is a file, or a folder we may not read
        raise ConfigError(f"cannot read the run directory {run_dir}: {exc.strerror or exc} "
                          f"({getattr(exc, 'filename', None) or 'a table folder'}); a run directory holds "
                          f"tables/<table>/ folders of Parquet parts: restore or remove what is in the way") from None


def _run_status(run_dir: str) -> str:
    from orchestrator.sweep import PlanError, make_plan, scan_tables

    has_config = storage.exists(storage.config_uri(run_dir))
    tables = RunTables(run_dir)
    if not has_config and not (tables.part_keys("models") or tables.part_keys("pairs")):
        load_run_config(run_dir)  # the clear error: not a run directory
    scans = scan_tables(run_dir)  # every part read once; the plan below shares the read
    if not has_config:
        return tables_only_status(run_dir, scans)
    cfg = load_run_config(run_dir)
    info = storage.read_run_info(run_dir) or {}
    lines = [f"run {run_dir}", f"  config {cfg.name!r} (hash {cfg.config_hash()}), run id {info.get('run_id', '?')}"]
    holder = storage.lock_holder(run_dir)
    lines.append(f"  sweep: running ({holder})" if holder else "  sweep: not running")
    try:
        plan = make_plan(cfg, run_dir, repair=False, scans=scans)
    except PlanError:
        plan = None  # rows of other settings: reported below per table

    errors = {}
    for table, expected_keys in (("models", [mkey(cfg, *k) for k in cfg.model_keys()]),
                                 ("pairs", [pkey(cfg, *k) for k in cfg.pair_keys()])):
        scan = plan.scans[table] if plan else scans[table].without(scans[table].misnamed())
        df = scan.frame
        statuses = dict(zip(scan.row_parts, df["status"]))
        errors.update({k: e for k, st, e in zip(scan.row_parts, df["status"], df["error"]) if st == "failed"})
        stale = sorted(set(df["config_hash"].dropna()) - {cfg.config_hash()})
        c = stage_counts(expected_keys, statuses)
        stage = "stage 1 models" if table == "models" else "stage 2 pairs "
        lines.append(f"{stage}: {c['expected']} expected · {c['ok']} ok · {c['diverged']} diverged · "
                     f"{c['failed']} failed · {c['missing']} missing")
        lines.extend(_damage_lines(table, scans[table]))
        if table == "models" and plan and plan.broken_weights:
            broken = plan.broken_weights
            lines.append(f"  {len(broken)} ok model(s) without usable weights (pairs need them), retrained by resume:")
            lines.extend(f"    model {key}: weights file {why}" for key, why in list(broken.items())[:MAX_LISTED])
        if stale:
            lines.append(f"  rows with another config hash: {stale}")
        for key in c["failed_keys"][:MAX_LISTED]:
            lines.append(f"  failed  {key}: {errors.get(key)}")
        for key in c["missing_keys"][:MAX_LISTED]:
            lines.append(f"  missing {key}")
        more = len(c["failed_keys"]) + len(c["missing_keys"]) - 2 * MAX_LISTED
        if c["missing"] > MAX_LISTED or c["failed"] > MAX_LISTED:
            lines.append(f"  ... ({max(more, 0)} more)")
    curves = scans["curves"]
    lines.append(f"curves: {len(set(curves.without(curves.misnamed()).row_parts))} pair curve(s) stored")
    lines.extend(_damage_lines("curves", curves))
    if plan and plan.broken_curves:
        lines.append(f"  {len(plan.broken_curves)} ok pair(s) without a readable curve part, recomputed by resume: "
                     + ", ".join(plan.broken_curves[:MAX_LISTED]))
    return "\n".join(lines)


def _damage_lines(table: str, scan) -> list[str]:
    """What `resume` repairs in one table: unreadable parts, parts not holding their own key (duplicates)."""
    lines = []
    if scan.unreadable:
        lines.append(f"  {len(scan.unreadable)} unreadable part(s), moved aside and recomputed by resume: "
                     + ", ".join(k for k, _ in scan.unreadable[:MAX_LISTED]))
    misnamed = scan.misnamed()
    if misnamed:
        dupes = scan.duplicates()
        lines.append(f"  {len(misnamed)} {table} part(s) not holding their own key ({len(dupes)} duplicate(s)), "
                     f"never counted; resume moves them aside:")
        lines.extend(f"    {key}.parquet: {why}" for key, why in list(misnamed.items())[:MAX_LISTED])
    return lines
