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


def tables_only_status(run_dir: str, tables: RunTables) -> str:
    """For run dirs without a sweep config (e.g. an imported reference): rows per table and status."""
    lines = [f"run {run_dir} (no config.yaml: tables only, nothing to compare with a grid)"]
    for table in ("models", "pairs"):
        df = tables.read(table, on_corrupt="skip")
        by = df["status"].value_counts().to_dict() if len(df) else {}
        lines.append(f"{table}: {len(df)} rows" + "".join(f" · {n} {st}" for st, n in sorted(by.items())))
    lines.append(f"curves: {len(tables.part_keys('curves'))} pair curve(s) stored")
    return "\n".join(lines)


def run_status(run_dir: str) -> str:
    run_dir = storage.normalise_run_dir(run_dir)
    try:
        return _run_status(run_dir)
    except OSError as exc:  # e.g. tables/models is a file, or a folder we may not read
        raise ConfigError(f"cannot read the run directory {run_dir}: {exc.strerror or exc} "
                          f"({getattr(exc, 'filename', None) or 'a table folder'}); a run directory holds "
                          f"tables/<table>/ folders of Parquet parts: restore or remove what is in the way") from None


def _broken_weights(cfg, run_dir: str) -> dict[str, str]:
    """Model key -> "missing" | "truncated" for ok models without usable weights (resume retrains them)."""
    from orchestrator.sweep import PlanError, make_plan

    try:
        return make_plan(cfg, run_dir, repair=False).broken_weights
    except PlanError:
        return {}  # reported below as rows with another config hash


def _run_status(run_dir: str) -> str:
    tables = RunTables(run_dir)
    if not storage.exists(storage.config_uri(run_dir)) and (tables.part_keys("models") or tables.part_keys("pairs")):
        return tables_only_status(run_dir, tables)
    cfg = load_run_config(run_dir)
    info = storage.read_run_info(run_dir) or {}
    lines = [f"run {run_dir}", f"  config {cfg.name!r} (hash {cfg.config_hash()}), run id {info.get('run_id', '?')}"]
    holder = storage.lock_holder(run_dir)
    lines.append(f"  sweep: running ({holder})" if holder else "  sweep: not running")

    errors = {}
    for table, expected_keys, key_of in (
        ("models", [mkey(cfg, *k) for k in cfg.model_keys()],
         lambda r: mkey(cfg, r.load_value, r.temperature_value, r.seed)),
        ("pairs", [pkey(cfg, *k) for k in cfg.pair_keys()],
         lambda r: pkey(cfg, r.load_value, r.temperature_value, r.seed_a, r.seed_b)),
    ):
        corrupt = tables.corrupt_parts(table)
        df = tables.read(table, on_corrupt="skip")
        statuses = {}
        for r in df.itertuples(index=False):
            statuses[key_of(r)] = r.status
            if r.status == "failed":
                errors[key_of(r)] = r.error
        stale = sorted(set(df["config_hash"].dropna()) - {cfg.config_hash()})
        c = stage_counts(expected_keys, statuses)
        stage = "stage 1 models" if table == "models" else "stage 2 pairs "
        lines.append(f"{stage}: {c['expected']} expected · {c['ok']} ok · {c['diverged']} diverged · "
                     f"{c['failed']} failed · {c['missing']} missing")
        if corrupt:
            lines.append(f"  {len(corrupt)} unreadable part(s), recomputed by resume: "
                         + ", ".join(k for k, _ in corrupt[:MAX_LISTED]))
        if table == "models":
            broken = _broken_weights(cfg, run_dir)
            if broken:
                lines.append(f"  {len(broken)} ok model(s) without usable weights (pairs need them), retrained by "
                             f"resume:")
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
    curves = len(tables.part_keys("curves"))
    lines.append(f"curves: {curves} pair curve(s) stored")
    return "\n".join(lines)
