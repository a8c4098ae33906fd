"""What a job of the sweep is: its kind, its key, and what every job is shipped with.

A job is a plain dict (it is Tune's trial config):
    model  {"kind": "model", "load", "temperature", "seed"}                 train one model, measure it, save it
    pair   {"kind": "pair", "load", "temperature", "seed_a", "seed_b"}      connect two trained models of a cell
Its key names its parts in the tables (analysis.tables.model_key / pair_key).
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


def job_key(cfg: SweepConfig, job: dict) -> str:
    if job["kind"] == "model":
        return mkey(cfg, job["load"], job["temperature"], job["seed"])
    return pkey(cfg, job["load"], job["temperature"], job["seed_a"], job["seed_b"])



@dataclass(frozen=True)
class JobContext:
    """What every job needs besides its own keys; shipped once to the workers by tune.with_parameters."""

    sweep: dict  # SweepConfig.to_dict()
    run_dir: str
    run_id: str
    config_hash: str
    faults: str | None = None  # testing hook only: see FAULT_INJECT_ENV

