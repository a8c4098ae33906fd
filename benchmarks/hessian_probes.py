"""Hutchinson trace probes one at a time against probes in blocks (one batched backward per block), in one process.

    /work/main/.venv/bin/python benchmarks/hessian_probes.py [--repeats R] [--probes P] [--blocks 4,8,16]

The demo's model and Hessian batch: MLP 40 -> w -> w -> 10 on MNIST-1D, widths 32/64/128/256, 1,000 training
points (demo.yaml metrics.hessian_samples), eval mode, the cached double-backward graph of the "lanczos"
backend, random (initial) weights: the cost of a product depends on the shapes, not on the weights. Each
repeat times `deflated_hutchinson` on P probes (tol 0, so no early stop) with block size 1 (the sequential
reference, today's path) and with each block size, in rotating order, deflated by a 40-vector Lanczos basis
like a real run's; the same probes every time. Prints the median seconds per probe and the ratio
sequential / blocked (> 1: blocks are faster), and checks that the estimates agree. One intra-op thread,
as the sweep's trials run.

Two batched products are compared: "autograd", the one hessian.py uses (torch.autograd.grad with
is_grads_batched through the cached gradient graph, which the chunked loss and the cohort operator share),
and "func", torch.func's vmap over the vjp of torch.func.grad (graph built once by vjp), as the alternative.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workloads.data import load_dataset  # noqa: E402
from workloads.metrics.hessian import (  # noqa: E402
    HessianOperator,
    _eval_mode,
    _trainable,
    deflated_hutchinson,
    lanczos,
)
from workloads import objective  # noqa: E402
from workloads.models import build_model  # noqa: E402

WIDTHS = (32, 64, 128, 256)
SAMPLES = 1000  # demo.yaml metrics.hessian_samples
BASIS = 40  # Lanczos vectors deflated (a demo run keeps 20-60)


def time_trace(matvec, dim, basis, exact, block_size, probes) -> tuple[float, float]:
    started = time.perf_counter()
    run = deflated_hutchinson(matvec, dim, basis, exact, generator=torch.Generator().manual_seed(1), tol=0.0,
                              max_probes=probes, block_size=block_size)
    return (time.perf_counter() - started) / probes, run.trace


def func_products(model, x, y):
    """(b, dim) -> (b, dim) Hessian products by torch.func: vmap over the vjp of grad(loss), built once."""
    names = [n for n, p in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    numels = [p.numel() for p in params.values()]
    buffers = dict(model.named_buffers())

    def loss(p):
        return objective.mean_loss(torch.func.functional_call(model, (p, buffers), (x,)), y)

    _, vjp_fn = torch.func.vjp(torch.func.grad(loss), params)

    def one(v):
        out = vjp_fn({n: t.view_as(params[n]) for n, t in zip(names, v.split(numels))})[0]
        return torch.cat([out[n].reshape(-1) for n in names])

    return torch.func.vmap(one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--blocks", default="4,8,16")
    args = parser.parse_args()
    torch.set_num_threads(1)
    blocks = [1] + [int(b) for b in args.blocks.split(",")]
    data = load_dataset("mnist1d")
    x, y = data.train_x[:SAMPLES], data.train_y[:SAMPLES]
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
          f"1 thread, {SAMPLES} points, {args.probes} probes per timing, {args.repeats} repeats (median)")
    for width in WIDTHS:
        torch.manual_seed(0)
        model = build_model("mlp", width=width, num_classes=10, input_shape=data.input_shape, depth=2)
        with _eval_mode(model):
            op = HessianOperator(model, _trainable(model), x, y)
            start = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
            run = lanczos(op, start, tol=float("inf"), max_steps=BASIS, min_steps=BASIS)
            basis, exact = torch.stack(run.basis), float(np.sum(run.diagonal))
            contenders = {("autograd", b): op for b in blocks}
            contenders.update({("func", b): func_products(model, x, y) for b in blocks[1:]})
            times = {key: [] for key in contenders}
            traces = {}
            keys = list(contenders)
            for repeat in range(args.repeats):
                for key in keys[repeat % len(keys):] + keys[: repeat % len(keys)]:  # rotate who goes first
                    seconds, traces[key] = time_trace(contenders[key], op.dim, basis, exact, key[1], args.probes)
                    times[key].append(seconds)
        ref_key = ("autograd", 1)
        ref = statistics.median(times[ref_key])
        print(f"width {width:3d} ({op.dim:6d} params): one by one {ref * 1e3:6.2f} ms/probe")
        for kind in ("autograd", "func"):
            cells = []
            for b in blocks[1:]:
                med = statistics.median(times[(kind, b)])
                agree = abs(traces[(kind, b)] - traces[ref_key]) <= 1e-4 * abs(traces[ref_key])
                cells.append(f"block {b:2d}: {med * 1e3:6.2f} ms ({ref / med:.2f}x{'' if agree else ', DIFFERS'})")
            print(f"    {kind:8s} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
