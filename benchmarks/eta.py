"""How good is the progress view's ETA? Replayed on the tables of a finished run.

    python benchmarks/eta.py RUN_DIR [--slots N]

Every row records when its job finished and how long it took, so the moment each job started and ended
is known. At each job's end the script computes what the progress view would have shown then:
  * "weighted" (SweepState.eta_seconds without its running trials' epoch reports, which the tables do not
    keep): the estimated cost of the jobs not finished (running ones at half their cost), times the seconds
    per unit of cost measured on the jobs finished, over the slots;
  * "mean" (the ETA before issue #11): the mean time of the finished model jobs times the model jobs left,
    half of it per pair job left, over the slots;
and compares both with the time the sweep really still took (its last job's end minus that moment).
Jobs are run longest first, so the first jobs to finish are the slowest: the mean overestimates early.
Prints the ratio ETA / real remaining time at 5 %, 10 %, 25 %, 50 % and 75 % of the jobs.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from analysis.tables import RunTables  # noqa: E402
from orchestrator.config.run_config import load_run_config  # noqa: E402
from orchestrator.planning.cost import job_costs  # noqa: E402
from orchestrator.planning.jobs import mkey, pkey
from orchestrator.driver.state import SweepState


def replay(run_dir: str, slots: int) -> list[dict]:
    cfg = load_run_config(run_dir)
    tables = RunTables(run_dir)
    jobs = []  # (start, end, kind, key)
    for r in tables.read("models").itertuples():
        end = r.finished_at.timestamp()
        jobs.append((end - (r.wall_seconds or 0.0), end, "model", mkey(cfg, r.load_value, r.temperature_value, r.seed)))
    for r in tables.read("pairs").itertuples():
        end = r.finished_at.timestamp()
        jobs.append((end - (r.wall_seconds or 0.0), end, "pair",
                     pkey(cfg, r.load_value, r.temperature_value, r.seed_a, r.seed_b)))
    jobs.sort(key=lambda j: j[1])
    last = jobs[-1][1]
    costs = job_costs(cfg)
    out = []
    for k in range(1, len(jobs)):
        now = jobs[k - 1][1]
        state = SweepState(slots=slots, costs=costs)
        state.models.keys = [mkey(cfg, *m) for m in cfg.model_keys()]
        state.pairs.keys = [pkey(cfg, *p) for p in cfg.pair_keys()]
        for start, end, kind, key in jobs:
            counts = state.counts(kind)
            if end <= now:
                counts.outcome[key] = "ok"
                counts.seconds[key] = end - start
            elif start <= now:
                counts.live[f"trial-{key}"] = key
        weighted = state.eta_seconds()
        m, p = state.models, state.pairs
        mean_m = sum(m.seconds.values()) / len(m.seconds) if m.seconds else None
        mean_p = sum(p.seconds.values()) / len(p.seconds) if p.seconds else (mean_m / 2 if mean_m else None)
        mean = None
        if mean_m is not None:
            mean = ((m.pending + m.running / 2) * mean_m + (p.pending + p.running / 2) * mean_p) / max(1, slots)
        out.append({"done": k / len(jobs), "real": last - now, "weighted": weighted, "mean": mean})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--slots", type=int, default=2, help="jobs the run's cluster ran at once")
    args = parser.parse_args()
    points = replay(args.run_dir, args.slots)
    print(f"{'jobs done':>9}  {'real left':>9}  {'weighted ETA':>12}  {'ratio':>5}  {'mean ETA':>9}  {'ratio':>5}")
    for fraction in (0.05, 0.10, 0.25, 0.50, 0.75):
        p = min(points, key=lambda q: abs(q["done"] - fraction))
        ratio = lambda eta: f"{eta / p['real']:5.2f}" if eta is not None and p["real"] > 0 else "    ?"  # noqa: E731
        print(f"{p['done']:9.0%}  {p['real']:8.0f}s  {p['weighted'] or 0:11.0f}s  {ratio(p['weighted'])}  "
              f"{p['mean'] or 0:8.0f}s  {ratio(p['mean'])}")


if __name__ == "__main__":
    main()
