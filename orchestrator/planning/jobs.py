"""What a job of the sweep is: its kind, its key, and what every job is shipped with.

A job is a plain dict (it is Tune's trial config), a cohort of one or more members (orchestrator/planning/cohorts.py;
``execution.cohort: off`` makes every cohort one member):
    model  {"kind": "model", "cohort": ID, "members": [[load, temperature, seed], ...]}
           train the members as one cohort, measure them, save them
    pair   {"kind": "pair", "cohort": ID, "members": [[load, temperature, seed_a, seed_b], ...]}
           connect each member's two trained models of a cell, their curves trained as one cohort
The cohort id names the members (a hash of their keys, ``cohort_id``). Each member's key names its parts in the
tables (analysis.tables.model_key / pair_key); ``job_keys`` lists them, the kind says which table (models or
pairs) a job fills.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from analysis.tables import model_key, pair_key
from orchestrator.config import SweepConfig

DONE_MODEL = ("ok", "diverged")
DONE_PAIR = ("ok", "diverged")
STORAGE_ERROR = "storage_error"  # a job's result status (never a row's): the run directory cannot be written


def mkey(cfg: SweepConfig, lv, tv, seed) -> str:
    return model_key(cfg.load.name, lv, cfg.temperature.name, tv, seed)


def pkey(cfg: SweepConfig, lv, tv, a, b) -> str:
    return pair_key(cfg.load.name, lv, cfg.temperature.name, tv, a, b)


def cohort_id(table: str, keys: list[str]) -> str:
    """``models-<12 hex>`` / ``pairs-<12 hex>``: the sha256 of the sorted member keys. It is the ``cohort`` column
    of the members' rows and the name of the cohort's training checkpoint, so a resume whose cohort has other
    members never continues another cohort's checkpoint (it starts that cohort over)."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:12]
    return f"{table}-{digest}"


def model_job(cfg: SweepConfig, members: list) -> dict:
    """The job training ``members`` [(load, temperature, seed)] as one cohort."""
    members = [[lv, tv, int(seed)] for lv, tv, seed in members]
    return {"kind": "model", "cohort": cohort_id("models", [mkey(cfg, *m) for m in members]), "members": members}


def pair_job(cfg: SweepConfig, members: list) -> dict:
    """The job measuring the pairs ``members`` [(load, temperature, seed_a, seed_b)], their curves as one cohort."""
    members = [[lv, tv, int(a), int(b)] for lv, tv, a, b in members]
    return {"kind": "pair", "cohort": cohort_id("pairs", [pkey(cfg, *m) for m in members]), "members": members}


def members(job: dict) -> list[tuple]:
    """A job's members: (load, temperature, seed) of each model, or (load, temperature, seed_a, seed_b) of each
    pair."""
    return [tuple(m) for m in job["members"]]


def member_key(cfg: SweepConfig, kind: str, member: tuple) -> str:
    """The table key of one member of a job of ``kind`` (model | pair)."""
    return mkey(cfg, *member) if kind == "model" else pkey(cfg, *member)


def job_keys(cfg: SweepConfig, job: dict) -> list[str]:
    """The table keys a job computes, one per member."""
    return [member_key(cfg, job["kind"], m) for m in members(job)]


@dataclass(frozen=True)
class JobContext:
    """What every job needs besides its own keys; shipped once to the workers by tune.with_parameters."""

    sweep: dict  # SweepConfig.to_dict()
    run_dir: str
    run_id: str
    config_hash: str
    faults: str | None = None  # tests only: the fault file's path (orchestrator/rundir/fault_hook.py)

