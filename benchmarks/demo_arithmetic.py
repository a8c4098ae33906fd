"""The demo's wall against its arithmetic (issue #21): how far a sweep's end-to-end wall is from the matrix
products it must do, run at this machine's measured fp32 peak, plus Ray's fixed start.

    python benchmarks/demo_arithmetic.py                      runs `landscape run demo` in a subprocess, timed
    python benchmarks/demo_arithmetic.py --config smoke       the same for another built-in config
    python benchmarks/demo_arithmetic.py --run-dir DIR        a finished run (read only: nothing is written there)

It prints the fp32 peak (torch.mm 2048^2 at torch's thread count, the demo's cores, and at 1 thread), the
arithmetic per stage counted from the run's tables and config (FLOPs, seconds at the peak, the seconds the rows
measured), Ray's fixed start, the wall, and ratio = wall / (arithmetic at the peak + Ray's fixed start) with
PASS/FAIL against 2.0 (the acceptance of issue #21 is on idle cores: the load average is printed at the start and
the end, with a warning above 0.5).

What is counted (MLP 40-w-...-10 only: the matrix products; biases, ReLU, softmax, SGD updates and the Bezier
combination of a curve step are O(parameters) per step, against O(batch x parameters) for the products):
  training          per model: epochs_completed x floor(n / batch) steps x batch x train_flops
  test evaluations  per model: the history rows with a test loss x test examples x forward_flops
  final evaluation  per model: (n + test examples) x forward_flops
  Hessian           per model: hessian_samples x (train_flops for the gradient graph, built once + products x
                    hvp_flops); products = max(eigen_iterations, DEFLATION_STEPS) Lanczos steps + trace_probes
  curve training    per pair: curve_epochs x floor(n / curve batch) x curve batch x train_flops
  curve evaluation  per pair: curve_points x (n + test examples) x forward_flops
  CKA probes        per pair: 2 models x cka_probe_size x forward_flops (CKA itself: O(probes x classes^2))
Added metrics (e.g. weight_spectral_norm) work on weights, not examples: not counted.

Wall and Ray's start, from a finished run's records: the wall from run.json's created_at to the last file
written in the run directory (a lower bound: the CLI's interpreter start and imports come before run.json);
Ray's fixed start from created_at to the start of Tune's experiment (RUN_DIR/tune/*/experiment_state-*.json),
which is the driver's whole start-up (Ray, planning, data) before the first trial. Ray's start is also measured
here (a local Ray and one trivial Tune trial) and printed beside it; the records' figure is the one used, when
the run has it, since it was taken under the run's own load.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

THRESHOLD = 2.0  # issue #21: wall <= 2 x (arithmetic at the peak + Ray's fixed start)
IDLE_LOAD = 0.5  # the 1-minute load average above which the cores are not idle


# ---- the FLOP model (layout: (out_features, in_features) per Linear, in order) ---------------------------


def mlp_layout(features: int, width: int, depth: int, classes: int) -> list[tuple[int, int]]:
    """(out, in) of each Linear of workloads.models.build_mlp: features -> depth x width -> classes."""
    sizes = [features] + [width] * depth + [classes]
    return [(o, i) for i, o in zip(sizes, sizes[1:])]


def _macs(layout) -> int:
    return sum(o * i for o, i in layout)


def forward_flops(layout) -> int:
    """FLOPs of one example's forward pass: 2 per multiply-add of each Linear."""
    return 2 * _macs(layout)


def train_flops(layout) -> int:
    """FLOPs of one example's forward and backward pass: the forward, each weight gradient (dW = dYᵀX) and each
    input gradient (dX = dY W) but the first layer's (the data need none): 6 x MACs - 2 x the first layer's."""
    return 6 * _macs(layout) - 2 * layout[0][0] * layout[0][1]


def hvp_flops(layout) -> int:
    """FLOPs of one example's Hessian-vector product, a backward through the cached create_graph gradient
    (workloads/metrics/hessian.py, hessian_products). That graph holds per layer three products: Z = X Wᵀ,
    dX = dZ W and dW = dZᵀ X; backpropagating through each costs two products (one per operand that depends on
    the parameters): 6 per layer. The first layer has no dX, and its X (the data) needs no adjoint: Z = X Wᵀ and
    dW = dZᵀ X cost one each, 2 in all. So 12 x MACs - 8 x the first layer's: twice a training step, less the
    first layer (torch.utils.flop_counter agrees exactly: tests/project/test_demo_arithmetic_benchmark.py)."""
    return 12 * _macs(layout) - 8 * layout[0][0] * layout[0][1]


def hessian_products(eigen_iterations: int, trace_probes: int, deflation_steps: int) -> int:
    """Hessian-vector products of one model: the Lanczos steps, which run on past λ_max's convergence
    (``eigen_iterations``) to at least ``deflation_steps`` for the trace's deflation (or stop at the step cap,
    where eigen_iterations is that cap), then one product per Hutchinson probe."""
    return max(eigen_iterations, deflation_steps) + trace_probes


def stage_flops(models, history, pairs, cells: dict, curve_batch: int, test_size: int,
                deflation_steps: int) -> dict[str, float]:
    """{stage: FLOPs} of a run. models, history, pairs: its tables (pandas, analysis/schemas.py columns);
    cells: {(load_value, temperature_value): (layout, batch size)}; curve_batch: metrics.curve.batch_size;
    test_size: test examples; deflation_steps: workloads.metrics.hessian.DEFLATION_STEPS."""
    out = dict.fromkeys(("training", "test evaluations", "final evaluation", "Hessian", "curve training",
                         "curve evaluation", "CKA probes"), 0.0)
    evaluated = history[history["test_loss"].notna()].groupby(["load_value", "temperature_value", "seed"]).size()
    for m in models.itertuples():
        layout, batch = cells[(m.load_value, m.temperature_value)]
        n = int(m.train_size)
        out["training"] += int(m.epochs_completed) * (n // batch) * batch * train_flops(layout)
        evals = int(evaluated.get((m.load_value, m.temperature_value, m.seed), 0))
        out["test evaluations"] += evals * test_size * forward_flops(layout)
        if m.status == "ok":  # a diverged model is neither evaluated nor measured
            out["final evaluation"] += (n + test_size) * forward_flops(layout)
            products = hessian_products(int(m.hessian_eigen_iterations), int(m.hessian_trace_probes), deflation_steps)
            out["Hessian"] += int(m.hessian_samples) * (train_flops(layout) + products * hvp_flops(layout))
    sizes = models.groupby(["load_value", "temperature_value"])["train_size"].max()
    for p in pairs.itertuples():
        if p.status != "ok":
            continue
        layout = cells[(p.load_value, p.temperature_value)][0]
        n = int(sizes[(p.load_value, p.temperature_value)])
        out["curve training"] += int(p.curve_epochs) * (n // curve_batch) * curve_batch * train_flops(layout)
        out["curve evaluation"] += int(p.curve_points) * (n + test_size) * forward_flops(layout)
        out["CKA probes"] += 2 * int(p.cka_probe_size) * forward_flops(layout)
    return out


# ---- what the rows measured, the run's records -------------------------------------------------------------

MEASURED = (  # (label, table, column, the stages it spans): the seconds rows record (a cohort's divided by members)
    ("models: train_seconds", "models", "train_seconds", ("training", "test evaluations")),
    ("models: metrics_seconds", "models", "metrics_seconds", ("final evaluation", "Hessian")),
    ("pairs: wall_seconds", "pairs", "wall_seconds", ("curve training", "curve evaluation", "CKA probes")),
)


def recorded_times(run_dir: str) -> tuple[float | None, float | None, int]:
    """(wall: run.json's created_at to the last file written, the driver's start-up: created_at to Tune's
    experiment start, the number of Tune experiments: more than one means a resumed run, whose created_at is
    its first start); None where the records lack it."""
    with open(os.path.join(run_dir, "run.json")) as f:
        created = datetime.fromisoformat(json.load(f)["created_at"]).timestamp()
    last = max(os.lstat(os.path.join(d, name)).st_mtime
               for d, _, files in os.walk(run_dir) for name in files)
    starts = []
    for path in glob.glob(os.path.join(run_dir, "tune", "*", "experiment_state-*.json")):
        with open(path) as f:
            stats = json.load(f).get("stats", {})  # a dict; a string of one in some Ray versions
        found = re.search(r"'start_time': ([0-9.]+)", stats) if isinstance(stats, str) else None
        start = stats.get("start_time") if isinstance(stats, dict) else found and found[1]
        if start is not None:
            starts.append(float(start))
    start_up = min(starts) - created if starts else None
    return last - created, start_up, len(starts)


def read_run(run_dir: str):
    """(SweepConfig, tables {models, history, pairs}, facts.json) of a finished run."""
    from analysis.tables import RunTables
    from orchestrator.config import load_config

    cfg = load_config(os.path.join(run_dir, "config.yaml"), [], check_data=False)
    tables = RunTables(run_dir)
    frames = {name: tables.read(name) for name in ("models", "history", "pairs")}
    with open(os.path.join(run_dir, "facts.json")) as f:
        facts = json.load(f)
    return cfg, frames, facts


def count(cfg, frames, facts) -> dict[str, float]:
    """stage_flops of a run, its cells' shapes from the config (workloads/knobs.py: what each cell sets)."""
    from orchestrator.planning.cells import cell_quantities
    from workloads.dataset_facts import DATASET_FACTS
    from workloads.metrics.hessian import DEFLATION_STEPS

    if cfg.workload.model != "mlp":
        raise SystemExit(f"the FLOP model is the MLP's; this run trains {cfg.workload.model!r}")
    features = 1
    for d in facts["input_shape"]:
        features *= d
    depth = int((cfg.workload.model_args or {}).get("depth", 2))
    cells = {}
    for lv, tv in frames["models"][["load_value", "temperature_value"]].drop_duplicates().itertuples(index=False):
        width, batch, _ = cell_quantities(cfg, lv, tv, facts["train_size"])
        cells[(lv, tv)] = (mlp_layout(features, width, depth, facts["num_classes"]), batch)
    return stage_flops(frames["models"], frames["history"], frames["pairs"], cells, cfg.metrics.curve.batch_size,
                       DATASET_FACTS[cfg.workload.dataset].test_size, DEFLATION_STEPS)


# ---- this machine: its peak and Ray's start -----------------------------------------------------------------


def fp32_peak_both() -> tuple[float, float, int]:
    """(FLOP/s of torch.mm 2048^2 fp32 at torch's thread count, at 1 thread, that thread count)."""
    import torch

    from benchmarks.cohort import fp32_peak

    threads = torch.get_num_threads()
    peak = fp32_peak(repeats=5)
    torch.set_num_threads(1)
    try:
        single = fp32_peak(repeats=5)
    finally:
        torch.set_num_threads(threads)
    return peak, single, threads


def _trivial_trial(config):
    from ray import tune

    tune.report({"done": 1})


def ray_fixed_start(cpus: int, object_store_mb: int) -> tuple[float, float]:
    """(seconds to start a private local Ray and run one trivial Tune trial, seconds of ray.shutdown after)."""
    from benchmarks.sweep import ray_env

    tmp = tempfile.mkdtemp(prefix="demo-arith-", dir="/tmp")
    env = ray_env()  # 127.0.0.1, no auth token, no usage stats, a private RAY_TMPDIR
    os.environ.update({k: env[k] for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE",
                                           "RAY_USAGE_STATS_ENABLED", "RAY_TMPDIR")})
    from orchestrator.cluster.ray_env import init_ray

    import ray
    from ray import tune

    started = time.perf_counter()
    try:
        init_ray(None, object_store_mb=object_store_mb, num_cpus=cpus)
        tune.Tuner(_trivial_trial, run_config=tune.RunConfig(storage_path=tmp, verbose=0)).fit()
        start = time.perf_counter() - started
    finally:
        stopping = time.perf_counter()
        ray.shutdown()
        stop = time.perf_counter() - stopping
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    return start, stop


def run_cli(config: str, run_dir: str) -> float:
    """Wall seconds of `landscape run CONFIG --out RUN_DIR` (this checkout's) in a subprocess on a private local
    Ray: interpreter start, imports, Ray's start and shutdown and the analysis included."""
    from benchmarks.sweep import landscape_cmd, ray_env

    env = ray_env()
    # This checkout's code, not whichever copy the environment installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    proc = subprocess.run(landscape_cmd() + ["run", config, "--out", run_dir], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"landscape run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


# ---- the report ---------------------------------------------------------------------------------------------


def _load_line(when: str) -> str:
    one, five, fifteen = os.getloadavg()
    warning = ""
    if one > IDLE_LOAD:
        warning = f"  WARNING: above {IDLE_LOAD}, the cores are not idle: the wall and the peak are off"
    return f"load average at the {when}: {one:.2f} {five:.2f} {fifteen:.2f}{warning}"


def stage_table(flops: dict[str, float], frames, peak: float, single: float) -> list[str]:
    """The stages' GFLOP and seconds at ``peak``; the seconds the rows measured over the stages they span, and
    how many times the arithmetic at the 1-thread peak ``single`` they are (each trial runs on one thread)."""
    lines = [f"{'stage':<28}{'GFLOP':>9}{'s at peak':>11}{'measured s':>12}{'x 1-thread peak':>17}"]
    for stage, value in flops.items():
        lines.append(f"{stage:<28}{value / 1e9:>9.1f}{value / peak:>11.2f}")
    spans = [(label, sum(flops[s] for s in stages), float(frames[table][column].sum()))
             for label, table, column, stages in MEASURED]
    spans.append(("total (models+pairs wall)", sum(flops.values()),
                  float(frames["models"]["wall_seconds"].sum() + frames["pairs"]["wall_seconds"].sum())))
    for label, value, seconds in spans:
        lines.append(f"{label:<28}{value / 1e9:>9.1f}{value / peak:>11.2f}{seconds:>12.1f}"
                     f"{seconds / (value / single):>17.1f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="a finished run to analyse (read only) instead of running one")
    parser.add_argument("--config", default="demo", help="built-in config to run (default: demo)")
    parser.add_argument("--keep", help="with no --run-dir: run into this folder and keep it (default: a temp one)")
    args = parser.parse_args(argv)

    print(_load_line("start"))
    peak, single, threads = fp32_peak_both()
    print(f"fp32 peak, torch.mm 2048^2: {peak / 1e9:.1f} GFLOP/s at {threads} thread(s), "
          f"{single / 1e9:.1f} GFLOP/s at 1 thread (x{peak / single:.2f})")

    run_dir, cli_wall, tmp = args.run_dir, None, None
    if run_dir is None:
        tmp = None if args.keep else tempfile.mkdtemp(prefix="demo-arith-run-", dir="/tmp")
        run_dir = args.keep or os.path.join(tmp, "run")
        cli_wall = run_cli(args.config, run_dir)
    try:
        cfg, frames, facts = read_run(run_dir)
        flops = count(cfg, frames, facts)
        recorded_wall, start_up, experiments = recorded_times(run_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    ray_start, ray_stop = ray_fixed_start(threads, cfg.run.object_store_mb)

    print(f"run: {run_dir} ({cfg.name}: {len(frames['models'])} models, {len(frames['pairs'])} pairs)")
    print("\n".join(stage_table(flops, frames, peak, single)))
    print(f"Ray's fixed start measured here: {ray_start:.1f} s (local Ray + one trivial Tune trial; "
          f"ray.shutdown after: {ray_stop:.1f} s)")
    if start_up is not None:
        print(f"the run's own start-up (run.json -> Tune's experiment start): {start_up:.1f} s")
    fixed = start_up if start_up is not None else ray_start
    source = "the run's records" if start_up is not None else "measured here"
    if experiments > 1:
        print(f"WARNING: {experiments} Tune experiments in the run dir: a resumed run, its recorded wall spans "
              "every invocation and the pauses between them")
    print(f"wall from the run's records (run.json -> last file written): {recorded_wall:.1f} s")
    wall = cli_wall if cli_wall is not None else recorded_wall
    if cli_wall is not None:
        print(f"wall of `landscape run {args.config}` timed here: {cli_wall:.1f} s")
    arithmetic = sum(flops.values()) / peak
    ratio = wall / (arithmetic + fixed)
    print(f"ratio = wall / (arithmetic at the {threads}-thread peak + Ray's fixed start, {source}) = "
          f"{wall:.1f} / ({arithmetic:.3g} + {fixed:.3g}) = {ratio:.2f}: "  # 3 digits: a smoke run's 0.05 s
          f"{'PASS' if ratio <= THRESHOLD else 'FAIL'} (<= {THRESHOLD})")
    if cli_wall is None:
        print("note: the peak is measured now, the wall was when the run ran: the ratio holds for this machine only "
              "when both were taken on the same idle cores (the default mode times a run here)")
    print(_load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
