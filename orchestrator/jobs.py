"""What a job of the sweep is: its kind, its key, and what every job is shipped with.

A job is a plain dict (it is Tune's trial config):
    model         {"kind": "model", "load", "temperature", "seed"}            train one model, measure it, save it
    pair          {"kind": "pair", "load", "temperature", "seed_a", "seed_b"} connect two trained models of a cell
    model_cohort  {"kind": "model_cohort", "cohort": ID, "members": [[load, temperature, seed], ...]}
                  train and measure the members as one cohort (orchestrator/cohorts.py)
    pair_cohort   {"kind": "pair_cohort", "cohort": ID, "members": [[load, temperature, seed_a, seed_b], ...]}
Each member's key names its parts in the tables (analysis.tables.model_key / pair_key); ``job_keys`` lists
them, ``stage`` says which table (models or pairs) a job fills.
"""

from __future__ import annotations

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


def model_job(lv, tv, seed) -> dict:
    return {"kind": "model", "load": lv, "temperature": tv, "seed": int(seed)}


def pair_job(lv, tv, a, b) -> dict:
    return {"kind": "pair", "load": lv, "temperature": tv, "seed_a": int(a), "seed_b": int(b)}


def model_cohort_job(cohort: str, members: list) -> dict:
    return {"kind": "model_cohort", "cohort": cohort,
            "members": [[lv, tv, int(seed)] for lv, tv, seed in members]}


def pair_cohort_job(cohort: str, members: list) -> dict:
    return {"kind": "pair_cohort", "cohort": cohort,
            "members": [[lv, tv, int(a), int(b)] for lv, tv, a, b in members]}


COHORT_KINDS = ("model_cohort", "pair_cohort")


def stage(job: dict) -> str:
    """"model" for the jobs that fill the models table, "pair" for those that fill pairs and curves."""
    return "model" if job["kind"] in ("model", "model_cohort") else "pair"


def job_key(cfg: SweepConfig, job: dict) -> str:
    """The key of a plain job; a cohort job's id."""
    if job["kind"] in COHORT_KINDS:
        return job["cohort"]
    if job["kind"] == "model":
        return mkey(cfg, job["load"], job["temperature"], job["seed"])
    return pkey(cfg, job["load"], job["temperature"], job["seed_a"], job["seed_b"])


def member_jobs(job: dict) -> list[dict]:
    """The plain jobs a job stands for: itself, or one per member of a cohort."""
    if job["kind"] == "model_cohort":
        return [model_job(*m) for m in job["members"]]
    if job["kind"] == "pair_cohort":
        return [pair_job(*m) for m in job["members"]]
    return [job]


def job_keys(cfg: SweepConfig, job: dict) -> list[str]:
    """The table keys a job computes: one, or every member's."""
    return [job_key(cfg, j) for j in member_jobs(job)]



@dataclass(frozen=True)
class JobContext:
    """What every job needs besides its own keys; shipped once to the workers by tune.with_parameters."""

    sweep: dict  # SweepConfig.to_dict()
    run_dir: str
    run_id: str
    config_hash: str
    faults: str | None = None  # tests only: the fault file's path (orchestrator/fault_hook.py)

