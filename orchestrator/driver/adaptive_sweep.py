"""`search: adaptive` on the real sweep (issue #22): the waves of analysis.adaptive's policy, each run by run_sweep.

A wave is a set of model keys (cells and seeds the policy asks for) and the pair keys among the trained seeds of
those cells (the config's seed pairs whose two seeds are trained once the wave is in). Each wave runs through the
ordinary sweep (orchestrator.driver.sweep.run_sweep, limited to the wave's keys), so cohorts, pairs, retries, faults,
status and resume work as for a grid.

The waves are derived from the tables, every time, and never read back from RUN_DIR/adaptive/ (those files are
written for the user): wave 0 from no rows at all, wave k from the rows of the keys of waves 0..k-1 only. So a
row a running wave adds, or a row of a key no wave asked for (a grid run continued adaptively), never changes an
earlier wave's choice: a resumed run derives the same waves, and a key is never trained twice. The first wave
whose keys are not all done (ok or diverged) is the current one; when every derived wave is done and the policy
asks for nothing more (or its budget is spent), the search is finished.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pandas as pd

from analysis.adaptive import Grid, Wave, next_wave
from analysis.tables import join
from orchestrator.rundir import storage
from orchestrator.config import SweepConfig
from orchestrator.planning.jobs import mkey, pkey
from orchestrator.planning.plan import Plan

WAVES_DIR = "adaptive"


@dataclass(frozen=True)
class WaveKeys:
    """One wave of the policy and the job keys it adds (as the config's grid values)."""

    number: int
    wave: Wave
    models: tuple  # ((load value, temperature value, seed), ...)
    pairs: tuple  # ((load value, temperature value, seed_a, seed_b), ...)


@dataclass(frozen=True)
class Replay:
    """The waves derived from a run's tables: every one done but the last, unless ``finished``."""

    waves: tuple  # (WaveKeys, ...)
    finished: bool  # every wave done and the policy adds nothing (``note`` says why)
    note: str = ""

    @property
    def current(self) -> WaveKeys | None:
        return None if self.finished else self.waves[-1]

    def model_keys(self, cfg: SweepConfig) -> set[str]:
        return {mkey(cfg, *k) for w in self.waves for k in w.models}

    def pair_keys(self, cfg: SweepConfig) -> set[str]:
        return {pkey(cfg, *k) for w in self.waves for k in w.pairs}


def grid_of(cfg: SweepConfig) -> Grid:
    return Grid(cfg.load.name, tuple(cfg.load.values), cfg.temperature.name, tuple(cfg.temperature.values),
                tuple(cfg.seeds))


def first_wave(cfg: SweepConfig) -> Wave:
    """The wave a new run starts with (it depends on no result: the coarse grid at the starting seeds)."""
    return next_wave(cfg.adaptive_settings(), grid_of(cfg), pd.DataFrame(), pd.DataFrame())


def replay(cfg: SweepConfig, plan: Plan) -> Replay:
    """The waves of ``cfg``'s policy on the tables ``plan`` was made from (its scans, its done keys)."""
    settings, grid = cfg.adaptive_settings(), grid_of(cfg)
    # The config's own values (an int width stays an int), so that keys are spelled as the grid spells them.
    loads = {float(v): v for v in cfg.load.values}
    temps = {float(v): v for v in cfg.temperature.values}
    models, pairs = plan.scans["models"], plan.scans["pairs"]
    trained: dict[tuple, set] = {}  # (load, temperature) -> seeds asked for by the waves so far
    model_keys: set[str] = set()
    pair_keys: set[str] = set()
    waves: list[WaveKeys] = []
    for number in range(len(cfg.model_keys()) + 1):  # each wave adds at least one model key of the grid
        wave = next_wave(settings, grid, _rows(models, model_keys), _rows(pairs, pair_keys))
        if wave.done:
            return Replay(tuple(waves), True, wave.note)
        new_models, new_pairs = [], []
        for request in wave.cells:
            cell = (loads[float(request.load_value)], temps[float(request.temperature_value)])
            before = trained.setdefault(cell, set())
            new_models += [(*cell, s) for s in request.seeds if s not in before]
            before.update(request.seeds)
            new_pairs += [(*cell, a, b) for a, b in cfg.seed_pairs()
                          if a in before and b in before and pkey(cfg, *cell, a, b) not in pair_keys]
        waves.append(WaveKeys(number, wave, tuple(new_models), tuple(new_pairs)))
        model_keys |= {mkey(cfg, *k) for k in new_models}
        pair_keys |= {pkey(cfg, *k) for k in new_pairs}
        done = all(mkey(cfg, *k) in plan.models_done for k in new_models) and all(
            pkey(cfg, *k) in plan.pairs_done for k in new_pairs)
        if not done:
            return Replay(tuple(waves), False)
    raise RuntimeError("the adaptive policy asked for more waves than the grid has models")  # next_wave's contract


def _rows(scan, keys: set[str]) -> pd.DataFrame:
    """The rows of a table scan whose own part is one of ``keys`` (those of the earlier waves)."""
    frame = scan.frame
    return frame[[part in keys for part in scan.row_parts]] if len(frame) else frame


def restrict(cfg: SweepConfig, plan: Plan, replay_: Replay) -> Plan:
    """``plan`` limited to the keys of the derived waves: what is left to do is the current wave's, and what
    status expects is what the policy asked for (the cells it did not choose are not missing)."""
    models, pairs = replay_.model_keys(cfg), replay_.pair_keys(cfg)
    wanted = {"models": models, "pairs": pairs}
    tables = {table: dataclasses.replace(keys, expected=tuple(k for k in keys.expected if k in wanted[table]))
              for table, keys in plan.tables.items()}
    return dataclasses.replace(plan, tables=tables,
                               models_todo=tuple(k for k in plan.models_todo if mkey(cfg, *k) in models),
                               pairs_todo=tuple(k for k in plan.pairs_todo if pkey(cfg, *k) in pairs),
                               models_to_measure=tuple(k for k in plan.models_to_measure if mkey(cfg, *k) in models))


def wave_uri(run_dir: str, number: int) -> str:
    return join(run_dir, WAVES_DIR, f"wave-{number:03d}.json")


def wave_record(cfg: SweepConfig, w: WaveKeys) -> dict:
    """What RUN_DIR/adaptive/wave-NNN.json holds: the policy's choice, its reasons and the keys it adds."""
    return {"wave": w.number, **w.wave.to_dict(), "model_keys": [mkey(cfg, *k) for k in w.models],
            "pair_keys": [pkey(cfg, *k) for k in w.pairs],
            "note_for_readers": "written for people; a resume derives the waves again from the tables"}


def write_waves(cfg: SweepConfig, run_dir: str, replay_: Replay) -> None:
    """Every derived wave to RUN_DIR/adaptive/ (atomically; the same content each time, the waves being a
    function of the tables), and, once the search is finished, done.json saying why."""
    for w in replay_.waves:
        storage.write_bytes(wave_uri(run_dir, w.number), json.dumps(wave_record(cfg, w), indent=2).encode())
    if replay_.finished:
        storage.write_bytes(join(run_dir, WAVES_DIR, "done.json"), json.dumps(
            {"waves": len(replay_.waves), "models": sum(len(w.models) for w in replay_.waves),
             "grid_models": len(cfg.model_keys()), "note": replay_.note}, indent=2).encode())


def describe_wave(w: WaveKeys) -> str:
    counts = ", ".join(f"{n} {reason}" for reason, n in w.wave.counts().items() if n)
    return f"wave {w.number}: {len(w.models)} models, {len(w.pairs)} pairs ({counts} cell(s))"


def status_lines(cfg: SweepConfig, replay_: Replay, recorded: list[str]) -> list[str]:
    """What `landscape status` says of an adaptive search (``recorded``: the wave files present)."""
    trained = sum(len(w.models) for w in replay_.waves)
    lines = [f"  search: adaptive: {len(replay_.waves)} wave(s) derived from the tables, {trained} of the grid's "
             f"{len(cfg.model_keys())} models chosen; cells the policy did not choose stay untrained on purpose "
             f"(not missing)"]
    lines += [f"    {describe_wave(w)}" for w in replay_.waves]
    lines.append("    finished: " + (replay_.note or "the policy adds nothing") if replay_.finished else
                 f"    current: wave {replay_.current.number}; later waves depend on its results")
    lines.append(f"    wave files in {WAVES_DIR}/: {', '.join(recorded) if recorded else 'none'} (for reading; "
                 f"resume derives the waves from the tables)")
    return lines


def status_json(cfg: SweepConfig, replay_: Replay, recorded: list[str]) -> dict:
    """The facts of status_lines for `landscape status --json`: each wave's counts, and where the search is."""
    return {"search": "adaptive", "grid_models": len(cfg.model_keys()),
            "chosen_models": sum(len(w.models) for w in replay_.waves), "finished": replay_.finished,
            "note": replay_.note or None, "current_wave": None if replay_.finished else replay_.current.number,
            "waves": [{"number": w.number, "models": len(w.models), "pairs": len(w.pairs),
                       "cells": {reason: n for reason, n in w.wave.counts().items() if n}} for w in replay_.waves],
            "wave_files": list(recorded)}


def run_adaptive(cfg: SweepConfig, run_dir: str, *, run_id: str, resources: dict, progress, plan: Plan, echo):
    """Run wave after wave until the policy adds nothing (or a wave cannot finish: failed jobs). Returns the
    SweepSummary of the whole search, its ``plan_after`` limited to the waves' keys (restrict)."""
    from orchestrator.driver.sweep import SweepSummary, run_sweep

    first, seconds, summary = plan, 0.0, None
    tried: set[int] = set()
    while True:
        derived = replay(cfg, plan)
        write_waves(cfg, run_dir, derived)
        current = derived.current
        if current is None or current.number in tried:  # finished, or the wave's jobs failed in this run
            break
        tried.add(current.number)
        echo(f"  {describe_wave(current)}")
        scope = ({mkey(cfg, *k) for k in current.models}, {pkey(cfg, *k) for k in current.pairs})
        summary = run_sweep(cfg, run_dir, run_id=run_id, resources=resources, progress=progress, plan=plan,
                            scope=scope)
        seconds += summary.seconds
        plan = summary.plan_after
    if derived.finished:
        echo(f"  adaptive search finished after {len(derived.waves)} wave(s): {derived.note}")
    final = restrict(cfg, plan, derived)
    if summary is None:
        return None
    return SweepSummary(run_dir=run_dir, run_id=run_id, seconds=seconds, plan_before=first, plan_after=final,
                        state=summary.state, resources=resources)
