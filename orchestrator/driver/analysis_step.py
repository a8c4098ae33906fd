"""The analysis at the end of a run (and of `landscape analyze`), and how its results are shown."""

from __future__ import annotations

import os

from orchestrator.driver.console import echo


def saved_rules(run_dir: str) -> tuple[dict, str | None]:
    """(the non-default phase rules of the analysis in RUN_DIR/analysis/phase_rules.json, a note for the
    user or None): what `landscape analyze --rule` chose, so that a later run or resume of the directory
    draws its analysis with the same rules instead of silently replacing it with the defaults."""
    import json

    from analysis.phases import PhaseRules
    from orchestrator.rundir import storage

    uri = storage.join(run_dir, "analysis", "phase_rules.json")
    try:
        saved = json.loads(storage.read_bytes(uri).decode())["rules"]
        rules = PhaseRules.from_mapping(saved)
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"{uri} cannot be used ({type(exc).__name__}): the analysis uses the default phase rules"
    chosen = {r["name"]: r["value"] for r in rules.describe() if r["value"] != r["default"]}
    if not chosen:
        return {}, None
    text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items())
    return chosen, (f"analysis with the phase rules of the earlier analysis ({text}; from {uri}); "
                    f"`landscape analyze {run_dir}` without --rule draws it with the defaults")


def run_config_hash(run_dir: str) -> tuple[str | None, str | None]:
    """(the hash of the run's config.yaml, a note for the user or None): what `landscape analyze` admits rows
    by, as `status` and `resume` do (rows of another hash are left out). (None, None) for a run without a
    config (an imported reference); (None, note) when its config.yaml cannot be read or is not a sweep config."""
    from orchestrator.rundir import storage
    from orchestrator.config import ConfigError
    from orchestrator.config.run_config import load_run_config

    if not storage.exists(storage.config_uri(run_dir)) and not os.path.lexists(storage.config_uri(run_dir)):
        return None, None
    try:
        return load_run_config(run_dir).config_hash(), None
    except ConfigError as exc:
        return None, (f"rows are not checked against the run's config hash: {' '.join(str(exc).split())[:300]}")


def run_analysis(run_dir: str, *, scans: dict | None = None, pairs_expected: bool | None = None) -> None:
    try:
        from analysis import api
    except ImportError:
        echo("  (analysis package not available: skipped)")
        return
    rules, note = saved_rules(run_dir)
    if note:
        echo(f"  note: {note}")
    try:
        # No out_dir: the analysis writes RUN_DIR/analysis, on the run's own storage (URIs included).
        result = api.analyze_run(run_dir, rules=rules or None, scans=scans, pairs_expected=pairs_expected)
    except Exception as exc:  # the sweep's results are safe; analysis problems must not hide them
        echo(f"  analysis failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}; "
             f"retry with `landscape analyze {run_dir}`", err=True)
        return
    echo_analysis(result, run_dir)


def echo_analysis(result, run_dir: str) -> None:
    """Where the phase diagram and the report are (analysis.api.AnalysisResult, or anything path-like)."""
    figures = getattr(result, "figures", None) or {}
    for name, files in sorted(figures.items()):
        if name.startswith("phase_map") and isinstance(files, dict) and files.get("png"):
            echo(f"  phase diagram: {files['png']}")
    for line in summary_lines(getattr(result, "cells", None), getattr(result, "claims", None) or [],
                              getattr(result, "claims_path", None)):
        echo(line)
    report = getattr(result, "report_path", None)
    if report:
        echo(f"  report: {report}")
        if str(report).startswith("s3://"):
            out = getattr(result, "out_dir", None) or report.rsplit("/", 1)[0]
            echo(f"  (fetch with: aws s3 sync {out} ./analysis)")
    for warning in getattr(result, "warnings", None) or []:  # on stderr, like the sweep's own warnings
        echo(f"warning: {warning}", err=True)
    if not figures and not report:
        if isinstance(result, (str, os.PathLike)):
            echo(f"  analysis: {result}")
        else:
            echo(f"  analysis written under {run_dir}")


def analyse_during_sweep(run_dir: str, analyse):
    """`landscape analyze`: ``analyse()``'s result; while a sweep runs in ``run_dir`` (its lock is held) say so,
    analyse what is written so far, and drop the advice to `landscape resume` (refused while the sweep runs,
    and the sweep computes what is missing) from its warnings and errors."""
    import dataclasses

    from orchestrator.rundir.runlock import lock_holder

    try:
        holder = lock_holder(run_dir)
    except (OSError, ValueError):
        holder = None  # the lock cannot be read: analyse as usual
    if not holder:
        return analyse()
    running = f"a sweep is running in {run_dir} ({holder})"
    echo(f"  note: {running}: analysing the results written so far; analyze again when it has finished")
    try:
        result = analyse()
    except ValueError as exc:
        raise ValueError(f"{running} and there is nothing to analyse yet ({without_resume_advice(str(exc))}); "
                         f"analyze again once models are done (`landscape status {run_dir}` shows progress)") from None
    warnings = [without_resume_advice(w) + " (the running sweep may still compute them)"
                if "landscape resume" in w else w for w in getattr(result, "warnings", None) or []]
    return dataclasses.replace(result, warnings=warnings) if dataclasses.is_dataclass(result) else result


def without_resume_advice(message: str) -> str:
    """A message without its clauses (split at "; ") that advise `landscape resume`."""
    kept = [clause for clause in " ".join(message.split()).split("; ") if "landscape resume" not in clause]
    return "; ".join(kept) if kept else message


PHASE_ORDER = ("I", "II", "III", "IV-A", "IV-B")
CLAIM_STATUS_ORDER = ("holds", "does not hold", "unresolved", "cannot be measured")


def summary_lines(cells, claims: list[dict], claims_path: str | None) -> list[str]:
    """What `run` and `analyze` end with: cells per phase (per diagram when several), then every claim that
    applies with its verdict and p, and where claims.json is."""
    lines = []
    if cells is not None and len(cells) and "phase" in cells:
        keys = ["load_name", "temperature_name"]
        groups = list(cells.groupby(keys, sort=True)) if set(keys) <= set(cells.columns) else [(None, cells)]
        for names, part in groups:
            counts = part["phase"].fillna("none").value_counts()
            text = " · ".join(f"{phase} {int(counts[phase])}" for phase in (*PHASE_ORDER, "none") if phase in counts)
            where = f" ({names[0]} × {names[1]})" if len(groups) > 1 else ""
            lines.append(f"  phases{where}: {text} (cells)")
            if "sampling" in part:  # an adaptive run: which of those cells were trained, which interpolated
                from analysis.adaptive_cells import sampling_text

                sampled = sampling_text(part)
                if sampled:
                    lines.append(f"  search: adaptive{where}: {sampled}; claims use the trained cells only")
    applied = [c for c in claims if c.get("applies")]
    if applied:
        counts = {status: sum(c.get("status") == status for c in applied) for status in CLAIM_STATUS_ORDER}
        lines.append("  claims: " + " · ".join(f"{n} {status}" for status, n in counts.items() if n)
                     + (f" (claims.json: {claims_path})" if claims_path else ""))
        for claim in applied:
            p = claim.get("p_holds")
            several = len({c.get("diagram") for c in applied}) > 1
            where = f"{claim.get('diagram')}: " if several else ""
            lines.append(f"    {claim.get('status', '?'):<18} {where}{claim['id']} ({claim.get('figure')})"
                         + (f", p = {p:.2f}" if isinstance(p, (int, float)) else ""))
    elif claims_path:
        lines.append(f"  claims: none applies to this run (claims.json: {claims_path})")
    return lines
