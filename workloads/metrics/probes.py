"""The probe inputs on which CKA compares two models of a cell, made by a named hook (``metrics.cka_probe_maker``).

    make_probes(maker, pool_x, num, seed) -> (num, *input_shape) tensor, pool_x's dtype and device
    probe_pool(data, pool) -> pool_x   the inputs the probes are made from (``metrics.cka_probe_pool``)

Pools (``metrics.cka_probe_pool``):

    train        the training inputs the cell's models saw (the default, as the authors' code). With the
                 training-set size as the load, each column then draws its probes from its own subset.
    test         the test inputs, which no knob changes: every cell of a sweep is compared on the same held-out
                 inputs (with ``points``, the models' agreement on real unseen examples).

Makers (every one deterministic in (train_x, num, seed); the same probes for every pair of a cell):

    mixup        float inputs (the default; method.md section 4): lam x[a] + (1 - lam) x[b], lam ~ Beta(16, 16),
                 a, b uniform training indices (workloads.metrics.cka.mixup_probes)
    crossover    integer token inputs, which cannot be averaged: the same draws of a, b and lam as mixup, then
                 each position (every element of one input) is taken from x[a] with probability lam, else from
                 x[b] (independent Bernoulli(lam) per position, from a second seeded stream). A probe is thus a
                 real-token sequence mixing two training sequences in about lam : 1 - lam, the token analogue of
                 mixup (lam ~ Beta(16, 16) keeps it near half and half).
    points       the pool's own inputs, unmixed: ``num`` distinct inputs drawn without replacement (a seeded
                 permutation; the pool must hold at least ``num``).
    module:function / an entry point of ``landscape.probes``: the user's fn(train_x, num=, seed=), returning
                 (num, *input_shape) of train_x's dtype (checked).
"""

from __future__ import annotations

import numpy as np
import torch

from workloads import plugins
from workloads.metrics.cka import mixup_plan, mixup_probes
from workloads.registry import Registry
from workloads.settings import CKA_PROBE_POOLS

CROSSOVER_MASK_STREAM = 1  # the Bernoulli draws come from PCG64([seed, 1]); mixup_plan's from PCG64(seed)


def crossover_probes(x: torch.Tensor, num: int, seed: int, alpha: float = 16.0) -> torch.Tensor:
    """Per-position crossover of two training inputs (see the module doc): (n, *shape) -> (num, *shape)."""
    a, b, lam = mixup_plan(x.shape[0], num, seed, alpha)
    rng = np.random.Generator(np.random.PCG64([int(seed), CROSSOVER_MASK_STREAM]))
    positions = int(np.prod(x.shape[1:], dtype=np.int64))
    take_a = rng.random((num, positions)) < lam[:, None]  # (num, positions)
    mask = torch.as_tensor(take_a, device=x.device).reshape(num, *x.shape[1:])
    ia, ib = torch.as_tensor(a, device=x.device), torch.as_tensor(b, device=x.device)
    return torch.where(mask, x[ia], x[ib])


def sample_points(x: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """``num`` distinct inputs of ``x``, unmixed: (n, *shape) -> (num, *shape), the first ``num`` of a
    PCG64(seed) permutation of the n inputs. ValueError when n < num."""
    n = int(x.shape[0])
    if num > n:
        raise ValueError(f"the points probe maker draws {num} distinct inputs but the probe pool has only {n}; "
                         f"lower metrics.cka_probes to at most {n} or use metrics.cka_probe_maker: mixup")
    order = np.random.Generator(np.random.PCG64(int(seed))).permutation(n)[:num]
    return x[torch.as_tensor(order, device=x.device)]


def probe_pool(data, pool: str) -> torch.Tensor:
    """The inputs of ``data`` (a workloads.data.Dataset) that CKA probes are made from: its training or its test
    inputs (see the module doc)."""
    if pool not in CKA_PROBE_POOLS:
        raise ValueError(f"metrics.cka_probe_pool: unknown pool {pool!r}; choose one of {', '.join(CKA_PROBE_POOLS)}")
    return data.train_x if pool == "train" else data.test_x


PROBE_MAKERS = Registry("CKA probe maker")  # the built-ins (did-you-mean for typos)
PROBE_MAKERS.register("mixup")(mixup_probes)
PROBE_MAKERS.register("crossover")(crossover_probes)
PROBE_MAKERS.register("points")(sample_points)


def maker_problem(maker: str, token_inputs: bool) -> str | None:
    """Why ``maker`` cannot make probes for these inputs, or None (built-ins only; user makers are checked
    by their output)."""
    if maker == "mixup" and token_inputs:
        return ("mixup averages inputs, which integer tokens cannot be; set metrics.cka_probe_maker: crossover "
                "(per-position crossover of two training sequences) or your own module:function")
    return None


def make_probes(maker: str, train_x: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """The CKA probes of a cell: (num, *input_shape), dtype and device of ``train_x``; ValueError / PluginError
    naming what is wrong."""
    problem = maker_problem(maker, not train_x.is_floating_point())
    if problem:
        raise ValueError(f"metrics.cka_probe_maker: {problem}")
    fn = plugins.user_callable("probes", maker, PROBE_MAKERS)
    if fn is None:
        return PROBE_MAKERS.get(maker)(train_x, int(num), int(seed))
    out = plugins.call_user("probes", maker, fn, train_x=train_x, num=int(num), seed=int(seed))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (int(num), *train_x.shape[1:]) or out.dtype != train_x.dtype:
        shown = f"{type(out).__name__} {tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise plugins.PluginError(f"probes {maker!r} returned {shown}; it must return a tensor of shape "
                                  f"{(int(num), *train_x.shape[1:])} and dtype {train_x.dtype}")
    return out.to(train_x.device)
