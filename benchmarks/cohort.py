"""Cohorts vs one model at a time: the same jobs both ways in one process, interleaved, with their differences.

    python benchmarks/cohort.py [CONFIG] [--set KEY=VALUE ...] [--stage train|models|all] [--max-cohort N]
    python benchmarks/cohort.py --backends      grouped kernels vs torch.func per model family (training steps)
    python benchmarks/cohort.py --hessian       vectorised vs one-at-a-time Hessian per MLP width
    python benchmarks/cohort.py --fused         the grouped engine's step vs the fused MLP step (eager, compiled)
    python benchmarks/cohort.py --curves        the same for the curves' middle-point step (Bezier, eager)
    python benchmarks/cohort.py --fused-hessian the demo's Hessian stage as chosen before vs fused products

Grid mode (default: the built-in demo, 72 trainings of 70 epochs). The grid's models are grouped as the
orchestrator will group them (workloads.cohort_experiment.plan_model_cohorts: the seeds of a cell for a
batch-size temperature, whole rows of cells for a learning-rate or weight-decay one) and every cohort is
run both ways, alternating which goes first so that a change in the machine's load hits both alike:
  train   (default) workloads.train.train per model vs workloads.cohort_train.train_cohort per cohort
  models  workloads.experiment.train_and_measure vs train_and_measure_cohort (training + every metric)
  all     models, then every pair: measure_pair vs measure_pairs_cohort (curves trained together)
It prints per cohort and in total the time one at a time, as a cohort, the speed-up, and the largest
differences: weights (relative L2), test accuracy (in test examples) and, with --stage all, mc (pp).
--singles also runs every model as a cohort of one, which separates the leaner training loop from the
vectorisation. Threads: 1 by default (--threads), as one trial per CPU runs.

Timings taken while other processes load the machine are noisy; the ratio is what this script is for.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _relative(state: dict, reference: dict) -> float:
    keys = [k for k, v in reference.items() if v.is_floating_point()]
    num = sum(float(((state[k].double() - reference[k].double()) ** 2).sum()) for k in keys)
    den = sum(float((reference[k].double() ** 2).sum()) for k in keys)
    return (num / den) ** 0.5


# ---------------------------------------------------------------------------------------------------------
# Grid mode


class Tally:
    """Seconds both ways per cohort, and the largest differences seen."""

    def __init__(self):
        self.rows: list[dict] = []
        self.weights = 0.0
        self.test_examples = 0
        self.mc = 0.0

    def add(self, label: str, size: int, alone: float, together: float, single: float | None = None):
        self.rows.append({"label": label, "size": size, "alone": alone, "together": together, "single": single})
        single_text = f"  cohort-of-1 {single:7.2f} s" if single is not None else ""
        print(f"  {label:<34} M={size:<3} one at a time {alone:7.2f} s   cohort {together:7.2f} s   "
              f"x{alone / together:5.2f}{single_text}", flush=True)

    def summary(self, what: str) -> None:
        alone = sum(r["alone"] for r in self.rows)
        together = sum(r["together"] for r in self.rows)
        print(f"\n{what}: one at a time {alone:.1f} s, as cohorts {together:.1f} s: speed-up x{alone / together:.2f} "
              f"({len(self.rows)} cohorts)")
        singles = [r["single"] for r in self.rows if r["single"] is not None]
        if singles:
            print(f"  every model as a cohort of one: {sum(singles):.1f} s (x{alone / sum(singles):.2f} from the "
                  f"leaner loop alone, x{sum(singles) / together:.2f} more from vectorisation)")


def _train_stage(cohort, tally: Tally, k: int, singles: bool, quiet: bool = False) -> None:
    import torch

    from workloads.cohort_experiment import member_datasets
    from workloads.cohort_net import build_cohort_net, member_state
    from workloads.cohort_train import evaluate_cohort, train_cohort
    from workloads.train import evaluate, train

    cells = [s.cell for s in cohort]
    datasets = member_datasets(cells)
    models = [c.build_model(s.seed, d) for c, s, d in zip(cells, cohort, datasets)]
    configs = [c.train_config(s.seed, "cpu") for c, s in zip(cells, cohort)]
    ys = torch.stack([d.train_y for d in datasets])

    def alone():
        return [train(copy.deepcopy(m), d, c).model for m, d, c in zip(models, datasets, configs)]

    def together():
        net = build_cohort_net(models[0], [m.state_dict() for m in models])
        return train_cohort(net, datasets[0].train_x, ys, configs).net

    def one_each():
        for m, d, c in zip(models, datasets, configs):
            train_cohort(build_cohort_net(m, [m.state_dict()]), d.train_x, d.train_y.unsqueeze(0), [c])

    runs = [("alone", alone), ("together", together)] + ([("single", one_each)] if singles else [])
    if k % 2:
        runs.reverse()
    seconds, out = {}, {}
    for name, fn in runs:
        started = time.perf_counter()
        out[name] = fn()
        seconds[name] = time.perf_counter() - started
    net = out["together"]
    stacked = net.stacked_state()
    _, accs = evaluate_cohort(net, datasets[0].test_x, torch.stack([d.test_y for d in datasets]))
    for i, (model, d) in enumerate(zip(out["alone"], datasets)):
        tally.weights = max(tally.weights, _relative(member_state(stacked, i), model.state_dict()))
        _, acc = evaluate(model, d.test_x, d.test_y)
        tally.test_examples = max(tally.test_examples, round(abs(acc - accs[i]) * len(d.test_y)))
    if not quiet:
        tally.add(_label(cohort), len(cohort), seconds["alone"], seconds["together"], seconds.get("single"))


def _models_stage(cohort, tally: Tally, k: int, states: dict) -> None:
    from workloads.cohort_experiment import member_datasets, train_and_measure_cohort
    from workloads.experiment import train_and_measure

    runs = [("alone", lambda: [train_and_measure(s) for s in cohort]),
            ("together", lambda: train_and_measure_cohort(cohort))]
    if k % 2:
        runs.reverse()
    seconds, out = {}, {}
    for name, fn in runs:
        started = time.perf_counter()
        out[name] = fn()
        seconds[name] = time.perf_counter() - started
    n_test = len(member_datasets([cohort[0].cell])[0].test_y)
    for spec, a, b in zip(cohort, out["alone"], out["together"]):
        if a.state_dict is not None and b.state_dict is not None:
            tally.weights = max(tally.weights, _relative(b.state_dict, a.state_dict))
            tally.test_examples = max(tally.test_examples, round(abs(a.row["test_acc"] - b.row["test_acc"]) * n_test))
        states[(spec.cell.keys()["load_value"], spec.cell.keys()["temperature_value"], spec.seed)] = (a.state_dict,
                                                                                                    b.state_dict)
    tally.add(_label(cohort), len(cohort), seconds["alone"], seconds["together"])


def _pairs_stage(cfg, states: dict, tally: Tally, max_cohort) -> None:
    from orchestrator.planning.cells import cell_spec
    from workloads.cohort_experiment import measure_pairs_cohort, plan_pair_cohorts
    from workloads.experiment import PairSpec, measure_pair

    specs = [PairSpec(cell_spec(cfg, lv, tv), a, b) for lv, tv, a, b in cfg.pair_keys()
             if states[(lv, tv, a)][0] is not None and states[(lv, tv, b)][0] is not None]
    first = specs[0]  # untimed warm-up of both paths (first calls pay one-time costs)
    short = dataclasses.replace(first, cell=dataclasses.replace(
        first.cell, curve=dataclasses.replace(first.cell.curve, epochs=1)))
    warm = states[(short.cell.load_value, short.cell.temperature_value, short.seed_a)][0]
    measure_pair(short, warm, warm)
    measure_pairs_cohort([short], [(warm, warm)])
    for k, cohort in enumerate(plan_pair_cohorts(specs, max_cohort)):
        def key(s, seed):
            return (s.cell.keys()["load_value"], s.cell.keys()["temperature_value"], seed)

        runs = [("alone", lambda: [measure_pair(s, states[key(s, s.seed_a)][0], states[key(s, s.seed_b)][0])
                                   for s in cohort]),
                ("together", lambda: measure_pairs_cohort(cohort, [(states[key(s, s.seed_a)][1],
                                                                    states[key(s, s.seed_b)][1]) for s in cohort]))]
        if k % 2:
            runs.reverse()
        seconds, out = {}, {}
        for name, fn in runs:
            started = time.perf_counter()
            out[name] = fn()
            seconds[name] = time.perf_counter() - started
        for a, b in zip(out["alone"], out["together"]):
            if a.row["mode_connectivity"] is not None and b.row["mode_connectivity"] is not None:
                tally.mc = max(tally.mc, abs(a.row["mode_connectivity"] - b.row["mode_connectivity"]))
        tally.add(f"pairs {_label(cohort)}", len(cohort), seconds["alone"], seconds["together"])


def _label(cohort) -> str:
    cells = sorted({(s.cell.load_value, s.cell.temperature_value) for s in cohort})
    loads = sorted({c[0] for c in cells})
    temps = sorted({c[1] for c in cells})
    name = cohort[0].cell
    return (f"{name.load_name}={','.join(f'{v:g}' for v in loads)} "
            f"{name.temperature_name}={','.join(f'{v:g}' for v in temps)}")


def _warm_up(cohort) -> None:
    """One short untimed training both ways: lazy initialisation and allocator warm-up hit neither timing."""
    short = [dataclasses.replace(s, cell=dataclasses.replace(
        s.cell, training=dataclasses.replace(s.cell.training, epochs=1))) for s in cohort]
    _train_stage(short, Tally(), 0, False, quiet=True)


def grid(args) -> int:
    from orchestrator.config import load_config
    from orchestrator.planning.cells import cell_spec
    from workloads.cohort_experiment import plan_model_cohorts
    from workloads.specs import ModelSpec

    cfg = load_config(args.config, args.set)
    specs = [ModelSpec(cell_spec(cfg, lv, tv), seed) for lv, tv, seed in cfg.model_keys()]
    cohorts = plan_model_cohorts(specs, args.max_cohort)
    print(f"{cfg.name}: {len(specs)} models in {len(cohorts)} cohorts ({cfg.training.epochs} epochs, "
          f"{cfg.workload.model} on {cfg.workload.dataset}); stage {args.stage}; {args.threads} thread(s)", flush=True)
    tally, states = Tally(), {}
    started = time.perf_counter()
    _warm_up(cohorts[0])
    for k, cohort in enumerate(cohorts):
        if args.stage == "train":
            _train_stage(cohort, tally, k, args.singles)
        else:
            _models_stage(cohort, tally, k, states)
    tally.summary("training" if args.stage == "train" else "training + per-model metrics")
    if args.stage == "all":
        pairs = Tally()
        _pairs_stage(cfg, states, pairs, args.max_cohort)
        pairs.summary("pairs (curve + CKA + L2)")
        tally.mc = pairs.mc
    print(f"largest differences, cohort vs one at a time: weights {tally.weights:.2e} relative, test accuracy "
          f"{tally.test_examples} test example(s)" + (f", mc {tally.mc:.3f} pp" if args.stage == "all" else ""))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Backends: grouped vs torch.func per model family


BACKEND_CASES = [  # (family, input shape, model kwargs, widths, batches)
    ("mlp", (40,), {}, (8, 64, 256), (16, 128)),
    ("cnn", (40,), {"batch_norm": True}, (4, 16, 64), (16, 128)),
    ("resnet18", (3, 32, 32), {}, (2, 8), (16, 64)),
]


def _random_data(shape, n):
    import torch

    from workloads.data import Dataset

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *shape, generator=gen), torch.arange(n) % 10
    return Dataset("random", x, y, x[:10], y[:10], 10, {})


def backends(args) -> int:
    import torch  # noqa: F401

    from workloads.cohort_net import build_cohort_net
    from workloads.cohort_train import train_cohort
    from workloads.models import seeded_model
    from workloads.train import TrainConfig, train

    members, steps = 3, args.steps
    print(f"training steps of {members} members (ms per step of all {members}), {steps} steps per timing, median of "
          f"{args.repeats}; {args.threads} thread(s)")
    verdicts: dict[str, list[float]] = {}
    for family, shape, kw, widths, batches in BACKEND_CASES:
        for width in widths:
            for batch in batches:
                data = _random_data(shape, batch * steps)
                models = [seeded_model(family, s, width=width, num_classes=10, input_shape=shape, **kw)
                          for s in range(members)]
                configs = [TrainConfig(epochs=1, batch_size=batch, lr=0.01, seed=s) for s in range(members)]
                times = {"alone": [], "grouped": [], "vmap": []}
                for rep in range(args.repeats + 1):  # the first round warms up, untimed
                    order = ["alone", "grouped", "vmap"] if rep % 2 else ["vmap", "grouped", "alone"]
                    for name in order:
                        started = time.perf_counter()
                        if name == "alone":
                            for m, c in zip(models, configs):
                                train(copy.deepcopy(m), data, c)
                        else:
                            net = build_cohort_net(models[0], [m.state_dict() for m in models], name)
                            train_cohort(net, data.train_x, data.train_y.expand(len(configs), -1), configs)
                        if rep:
                            times[name].append((time.perf_counter() - started) / steps)
                med = {k: statistics.median(v) for k, v in times.items()}
                faster = med["vmap"] / med["grouped"]
                verdicts.setdefault(family, []).append(faster)
                print(f"  {family:<8} k={width:<3} batch {batch:<4}: one at a time {med['alone'] * 1e3:7.2f} ms/step, "
                      f"grouped {med['grouped'] * 1e3:7.2f}, torch.func {med['vmap'] * 1e3:7.2f} "
                      f"-> grouped x{faster:.2f} faster than torch.func, x{med['alone'] / med['grouped']:.2f} than "
                      f"one at a time", flush=True)
    print("\nper family, torch.func time / grouped time (> 1: grouped faster):")
    for family, ratios in verdicts.items():
        print(f"  {family:<8} {min(ratios):.2f} .. {max(ratios):.2f} -> "
              f"{'grouped' if min(ratios) > 1 else 'vmap' if max(ratios) < 1 else 'mixed'}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Hessian: the members' products together or one model at a time


def _trained_mlps(width: int, count: int, x, y) -> list:
    """``count`` MLPs 40-width-width-10 (seeds 0..count-1) after 30 full-batch SGD steps on (x, y), in eval mode:
    the Hessian benchmarks' models, so that the curvature is a trained model's."""
    import torch

    from workloads.models import seeded_model

    models = [seeded_model("mlp", s, width=width, num_classes=10, input_shape=(40,)) for s in range(count)]
    for m in models:
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        m.eval()
    return models


def hessian(args) -> int:
    from workloads.cohort_net import build_cohort_net
    from workloads.data import load_dataset
    from workloads.metrics.cohort_hessian import estimate_hessian_cohort
    from workloads.metrics.hessian import estimate_hessian
    from workloads.models import count_parameters

    data = load_dataset("mnist1d")
    x, y = data.train_x[:1000], data.train_y[:1000]
    print(f"3 MLPs 40-w-w-10 on 1000 MNIST-1D points, default tolerances, median of {args.repeats}")
    for width in (8, 16, 32, 64, 128, 256):
        models = _trained_mlps(width, 3, x, y)
        net = build_cohort_net(models[0], [m.state_dict() for m in models])
        times = {"alone": [], "cohort": []}
        for rep in range(args.repeats):
            order = ["alone", "cohort"] if rep % 2 == 0 else ["cohort", "alone"]
            for name in order:
                started = time.perf_counter()
                if name == "alone":
                    want = [estimate_hessian(m, x, y) for m in models]
                else:
                    got = estimate_hessian_cohort(net, x, y.expand(3, -1))
                times[name].append(time.perf_counter() - started)
        worst = max(abs(g.top_eigenvalue - w.top_eigenvalue) / abs(w.top_eigenvalue) for g, w in zip(got, want))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  width {width:<4} ({count_parameters(models[0]):>6} params): one at a time {med['alone']:6.2f} s, "
              f"cohort {med['cohort']:6.2f} s -> x{med['alone'] / med['cohort']:.2f}; lambda_max differs by "
              f"{worst:.1e} relative", flush=True)
    return 0


def fused_hessian(args) -> int:
    """Per MLP width: the demo's Hessian stage of one cohort (``--members`` MLPs 40-w-w-10 trained 30 full-batch
    steps, 1,000 MNIST-1D points, default tolerances) the way cohort_experiment._hessians took it before the
    fused products (members together through autograd's double-backward, CohortHessianOperator, up to
    HESSIAN_COHORT_CPU_MAX_PARAMS=4096 parameters, else estimate_hessian one model at a time) against
    estimate_hessian_cohort on the FusedNet (FusedHessianOperator); interleaved, median of ``--repeats``. Also
    one product for every member, the operators alone (no estimator, no threads): the cohort's
    FusedHessianOperator against each member's HessianOperator (autograd), median of 10 per repeat."""
    import torch

    from workloads.cohort_net import build_cohort_net
    from workloads.data import load_dataset
    from workloads.metrics.cohort_hessian import estimate_hessian_cohort
    from workloads.metrics.fused_hessian import FusedHessianOperator
    from workloads.metrics.hessian import HessianOperator, estimate_hessian
    from workloads.models import count_parameters

    before_max_params = 4096  # HESSIAN_COHORT_CPU_MAX_PARAMS before the fused products
    data = load_dataset("mnist1d")
    x, y = data.train_x[:1000], data.train_y[:1000]
    members = args.members
    print(f"{members} MLPs 40-w-w-10 on 1000 MNIST-1D points, default tolerances, median of {args.repeats}, "
          f"{args.threads} thread(s); load average {_load_average()}", flush=True)
    total = {"before": 0.0, "fused": 0.0}  # the stage's medians summed over the widths
    for width in args.widths:
        models = _trained_mlps(width, members, x, y)
        states = [m.state_dict() for m in models]
        params = count_parameters(models[0])
        targets = y.expand(members, -1)
        grouped = build_cohort_net(models[0], states, "grouped")
        fused_net = build_cohort_net(models[0], states, "fused")
        together = params <= before_max_params

        def before():
            if together:
                return estimate_hessian_cohort(grouped, x, targets)
            return [estimate_hessian(m, x, y) for m in models]

        fused_op = FusedHessianOperator(fused_net, x, targets)
        single_ops = [HessianOperator(m, list(m.parameters()), x, y) for m in models]
        vectors = {i: torch.randn(fused_op.dim, generator=torch.Generator().manual_seed(i)) for i in range(members)}
        runs = {"before": before, "fused": lambda: estimate_hessian_cohort(fused_net, x, targets),
                "product alone": lambda: [op(vectors[i]) for i, op in enumerate(single_ops)],
                "product fused": lambda: fused_op(vectors)}
        times, out = {name: [] for name in runs}, {}
        for rep in range(args.repeats):
            for name in (list(runs) if rep % 2 == 0 else list(reversed(runs))):
                reps = 10 if name.startswith("product") else 1
                started = time.perf_counter()
                for _ in range(reps):
                    out[name] = runs[name]()
                times[name].append((time.perf_counter() - started) / reps)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k in total:
            total[k] += med[k]
        pairs = list(zip(out["fused"], out["before"]))
        eig = max(abs(g.top_eigenvalue - w.top_eigenvalue) / abs(w.top_eigenvalue) for g, w in pairs)
        tr = max(abs(g.trace - w.trace) / w.trace_std_error for g, w in pairs)
        hvps = sum(e.hvps for e in out["fused"])
        print(f"  width {width:<4} ({params:>6} params): before ({'cohort' if together else 'per-member'}) "
              f"{med['before']:6.2f} s, fused {med['fused']:6.2f} s -> x{med['before'] / med['fused']:.2f}; "
              f"{hvps} products; lambda_max differs by {eig:.1e} relative, trace by {tr:.2f} standard errors | "
              f"one product per member: autograd one at a time {med['product alone'] * 1e3:.1f} ms, fused "
              f"{med['product fused'] * 1e3:.1f} ms -> x{med['product alone'] / med['product fused']:.2f}",
              flush=True)
    print(f"all widths: before {total['before']:.1f} s, fused {total['fused']:.1f} s -> "
          f"x{total['before'] / total['fused']:.2f}; load average at the end {_load_average()}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# The fused MLP step vs the grouped engine


def fp32_peak(size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of torch.mm on two (size, size) float32 matrices, best of ``repeats`` (the machine's practical peak
    at the current thread count)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages (other processes' work that the timings share the cores with)."""
    if not os.path.exists("/proc/loadavg"):
        return "unknown"
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def mlp_step_flops(layout: list[tuple[int, int]], batch: int, members: int) -> int:
    """Multiply-add FLOPs of one training step's matrix products: layout (out, in) per Linear; per layer the
    forward and the weight gradient (2 * B * in * out each) and, but for the first layer, the input gradient."""
    per_member = sum((6 if i else 4) * batch * i_f * o_f for i, (o_f, i_f) in enumerate(layout))
    return per_member * members


def fused(args) -> int:
    """Per MLP width: one epoch of the demo's training (MNIST-1D-shaped random data, batch 64) by the grouped
    engine, the fused step and the compiled fused step, interleaved, each through train_cohort from a fresh
    cohort; ms per step, ratios to grouped, % of the fp32 peak measured first, and how far the fused weights
    end from the grouped ones (float rounding). The first compiled epoch, which compiles, is timed apart."""
    import torch

    from workloads.cohort_net import build_cohort_net
    from workloads.cohort_train import Execution, train_cohort
    from workloads.models import seeded_model
    from workloads.train import TrainConfig

    members, batch, n = args.members, 64, 4000  # the demo: MNIST-1D's 4000 training examples, batch 64
    steps = n // batch
    engines = {"grouped": ("grouped", Execution()), "fused": ("fused", Execution()),
               "compiled": ("fused", Execution(compile="default"))}
    load = _load_average()
    peak = fp32_peak()
    print(f"MLP 40-w-w-10, cohort of {members}, batch {batch}, one epoch of {steps} steps per timing through "
          f"train_cohort, median of {args.repeats}; {args.threads} thread(s); torch.mm 2048^2 fp32: "
          f"{peak / 1e9:.1f} GFLOP/s; load average {load}", flush=True)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 40, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    for width in args.widths:
        models = [seeded_model("mlp", s, width=width, num_classes=10, input_shape=(40,)) for s in range(members)]
        configs = [TrainConfig(epochs=1, batch_size=batch, lr=0.05, momentum=0.9, weight_decay=5e-4, seed=s)
                   for s in range(members)]
        layout = [(width, 40), (width, width), (10, width)]
        flops = mlp_step_flops(layout, batch, members)

        def run(name):
            backend, execution = engines[name]
            net = build_cohort_net(models[0], [m.state_dict() for m in models], backend)
            train_cohort(net, x, y.expand(members, -1), configs, execution=execution)
            return net.stacked_state()

        compile_seconds = _seconds(lambda: run("compiled"))  # the first call compiles: untimed below
        states = {name: run(name) for name in ("grouped", "fused")}
        times = {name: [] for name in engines}
        for rep in range(args.repeats):
            order = list(engines) if rep % 2 == 0 else list(reversed(engines))
            for name in order:
                times[name].append(_seconds(lambda: run(name)) / steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = _relative(states["fused"], states["grouped"])
        pct = {k: 100 * flops / v / peak for k, v in med.items()}
        print(f"  w={width:<4} grouped {med['grouped'] * 1e3:6.2f} ms/step ({pct['grouped']:4.1f}% of peak) | fused "
              f"{med['fused'] * 1e3:6.2f} ({pct['fused']:4.1f}%, x{med['grouped'] / med['fused']:.2f}) | compiled "
              f"{med['compiled'] * 1e3:6.2f} ({pct['compiled']:4.1f}%, x{med['grouped'] / med['compiled']:.2f}; "
              f"compiling {compile_seconds:.0f} s) | weights fused vs grouped after {steps} steps: {diff:.1e} "
              "relative", flush=True)
    print(f"load average at the end: {_load_average()}")
    return 0


def curves(args) -> int:
    """Per MLP width: one epoch of the demo's curve training (its settings: batch 128, the Bezier middle points
    of ``--members`` pairs, each pair its own t per step) by the grouped engine's autograd step and by the fused
    step, interleaved, each from the same endpoints; ms per step, the ratio, % of the fp32 peak measured first
    (a curve step's products are a training step's), and how far the middle points end apart (rounding)."""
    import torch

    from workloads.metrics.connectivity import CurveConfig, curve_cohort, train_curves
    from workloads.models import seeded_model

    pairs, n = args.members, 4000  # the demo: a ring of 5 pairs per cell, MNIST-1D's 4000 training examples
    config = CurveConfig(epochs=1, lr=0.2, weight_decay=5e-4)  # the demo's lr; 1 epoch: the lr floor, same work
    steps = n // config.batch_size
    configs = [dataclasses.replace(config, seed=p) for p in range(pairs)]
    load, peak = _load_average(), fp32_peak()
    print(f"MLP 40-w-w-10, {pairs} curves, batch {config.batch_size}, one epoch of {steps} steps per timing "
          f"through train_curves, median of {args.repeats}; {args.threads} thread(s); torch.mm 2048^2 fp32: "
          f"{peak / 1e9:.1f} GFLOP/s; load average {load}", flush=True)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 40, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    for width in args.widths:
        models = [seeded_model("mlp", s, width=width, num_classes=10, input_shape=(40,)) for s in range(pairs + 1)]
        ends = [(models[p], models[p + 1]) for p in range(pairs)]
        flops = mlp_step_flops([(width, 40), (width, width), (10, width)], config.batch_size, pairs)

        def run(backend):
            net, end_a, end_b = curve_cohort(ends, "cpu", backend)
            return train_curves(net, end_a, end_b, x, y.expand(pairs, -1), configs)[0]

        middles = {name: run(name) for name in ("grouped", "fused")}  # also warms both up
        times = {name: [] for name in middles}
        for rep in range(args.repeats):
            for name in (("grouped", "fused") if rep % 2 == 0 else ("fused", "grouped")):
                times[name].append(_seconds(lambda: run(name)) / steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        pct = {k: 100 * flops / v / peak for k, v in med.items()}
        print(f"  w={width:<4} grouped {med['grouped'] * 1e3:6.2f} ms/step ({pct['grouped']:4.1f}% of peak) | fused "
              f"{med['fused'] * 1e3:6.2f} ({pct['fused']:4.1f}%, x{med['grouped'] / med['fused']:.2f}) | middle "
              f"points fused vs grouped after {steps} steps: {_relative(middles['fused'], middles['grouped']):.1e} "
              "relative", flush=True)
    print(f"load average at the end: {_load_average()}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default="demo", help="built-in name or YAML path (default demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--stage", choices=("train", "models", "all"), default="train")
    parser.add_argument("--max-cohort", type=int, default=None, help="at most this many members per cohort")
    parser.add_argument("--singles", action="store_true", help="also run every model as a cohort of one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", action="store_true", help="grouped vs torch.func per model family")
    parser.add_argument("--hessian", action="store_true", help="vectorised vs one-at-a-time Hessian")
    parser.add_argument("--fused", action="store_true", help="the grouped engine's step vs the fused MLP step")
    parser.add_argument("--curves", action="store_true", help="the grouped engine's curve step vs the fused one")
    parser.add_argument("--fused-hessian", action="store_true", help="the Hessian stage before vs fused products")
    parser.add_argument("--members", type=int, default=5, help="--fused / --curves / --fused-hessian: cohort size")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256],
                        help="--fused / --curves / --fused-hessian: MLP widths")
    parser.add_argument("--steps", type=int, default=20, help="--backends: steps per timing")
    parser.add_argument("--repeats", type=int, default=3,
                        help="--backends / --hessian / --fused / --curves / --fused-hessian: timed repeats")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.backends:
        return backends(args)
    if args.hessian:
        return hessian(args)
    if args.fused:
        return fused(args)
    if args.curves:
        return curves(args)
    if args.fused_hessian:
        return fused_hessian(args)
    return grid(args)


if __name__ == "__main__":
    sys.exit(main())
