"""Two runs compared from Python, as `landscape compare` does (analysis/compare.py computes it).

    cmp = landscape.compare("runs/fp32", "runs/bf16")                       # two runs
    cmp = landscape.compare(run, run, rules_b={"mc_threshold": 2})           # a run against its relabelling
    cmp.changed        # one row per cell whose phase differs, with the numbers that decided each label
    cmp.claims         # each claim's verdict (and p) on both sides
    cmp.config_diff    # (setting, A's value, B's value)
    print(cmp.text())  # what the command line prints

Nothing is written into either run; warnings about what was read around are LandscapeWarnings.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

from analysis.bootstrap import DEFAULT_DRAWS
from analysis.compare import Comparison, compare_runs
from analysis.compare_report import comparison_json, comparison_text
from landscape.results import READ_ERRORS, LandscapeWarning, Run
from orchestrator.driver.analysis_step import run_config_hash
from orchestrator.rundir.storage import normalise_run_dir
from orchestrator.driver.sweep_errors import InputError


@dataclasses.dataclass
class RunComparison(Comparison):
    """analysis.compare.Comparison with the command line's text and JSON at hand."""

    def text(self) -> str:
        return comparison_text(self)

    def to_json(self) -> dict:
        return comparison_json(self)


def _run_dir(run) -> str:
    return run.dir if isinstance(run, Run) else normalise_run_dir(os.fspath(run))


def compare(run_a, run_b, *, rules: dict | None = None, rules_a: dict | None = None, rules_b: dict | None = None,
            bootstrap_draws: int = DEFAULT_DRAWS) -> RunComparison:
    """Compare the phase labels of ``run_a`` and ``run_b`` (Runs, folders or URIs; the same run twice with
    ``rules_b`` shows what those rules change). ``rules`` apply to both sides, ``rules_a``/``rules_b`` over them.
    ``bootstrap_draws``: seed resamplings per run behind each claim's p (0: none). Raises InputError when a run
    cannot be read or the two grids have different knobs."""
    dirs = [_run_dir(run_a), _run_dir(run_b)]
    hashes = []
    for run_dir in dirs:
        config_hash, note = run_config_hash(run_dir)
        if note:
            warnings.warn(f"{run_dir}: {note}", LandscapeWarning, stacklevel=2)
        hashes.append(config_hash)
    side_a = {**(rules or {}), **(rules_a or {})}
    side_b = {**(rules or {}), **(rules_b or {})}
    try:
        result = compare_runs(dirs[0], dirs[1], rules_a=side_a or None, rules_b=side_b or None,
                              config_hash_a=hashes[0], config_hash_b=hashes[1], bootstrap_draws=bootstrap_draws)
    except (LookupError, *READ_ERRORS) as exc:
        raise InputError(" ".join(str(exc).split())) from exc
    for side in (result.a, result.b):
        for warning in side.warnings:
            warnings.warn(f"{side.run_dir}: {warning}", LandscapeWarning, stacklevel=2)
    return RunComparison(**{f.name: getattr(result, f.name) for f in dataclasses.fields(Comparison)})
