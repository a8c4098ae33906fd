"""Training checkpoints (one per cohort, a single model being a cohort of one): plain data only, resuming bit
for bit.

A checkpoint is a dict of tensors, lists, dicts, strings, numbers and None (nothing else), so
``torch.load(path, weights_only=True)`` reads it and nothing read from a run directory can execute code:

    format, version   CHECKPOINT_FORMAT, CHECKPOINT_VERSION
    epoch             epochs completed (training continues with this 0-based epoch)
    configs           one dataclasses.asdict(TrainConfig) per member
    members           one string per member naming it (the caller's key, e.g. cell and seed), or None
    state             the cohort's stacked state dict: {name: (M, *shape)} parameters and BatchNorm buffers
    momentum          {name: (M, *shape)} SGD momentum buffers of the trainable parameters
    generators        one uint8 tensor per member: its batch-order generator's state
    histories         per member, train.py's per-epoch history dicts
    errors            per member, None (active) or its divergence message (frozen)
    rng               (optional) torch's, numpy's and python's global generator states: a model whose training
                      forward pass draws random numbers (dropout; the plain backend) resumes bit for bit

Every problem found when resuming is a ResumeStateError (a ValueError) whose message starts with
"resume_state" and says what is wrong (the orchestrator retrains from scratch on such errors).
"""

from __future__ import annotations

import copy
import dataclasses
import random

import numpy as np
import torch

from workloads.settings import TrainConfig

CHECKPOINT_FORMAT = "landscape-cohort-train"
CHECKPOINT_VERSION = 1
# Config fields that may differ between a checkpointed run and its resumption (they do not change the math).
RESUME_MAY_DIFFER = ("device", "checkpoint_every", "checkpoint_minutes", "eval_every")
_KEYS = ("format", "version", "epoch", "configs", "members", "state", "momentum", "generators", "histories", "errors")


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy (the fused backend's weights and momentum are transposed views)."""
    return tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def checkpoint_state(epochs_done: int, net, sgd, orders: list[torch.Generator], run, configs: list[TrainConfig],
                     members: list[str] | None) -> dict:
    """Everything needed to continue the cohort, as a CPU copy safe to keep while training goes on."""
    names = [n for n, p in net.params().items() if p.requires_grad]
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": int(epochs_done),
        "configs": [dataclasses.asdict(c) for c in configs],
        "members": None if members is None else [str(k) for k in members],
        "state": {k: _cpu(v) for k, v in net.stacked_state().items()},
        "momentum": {n: _cpu(b) for n, b in zip(names, sgd.buffers)},
        "generators": [g.get_state() for g in orders],
        "histories": copy.deepcopy(run.histories),
        "errors": list(run.errors),
        "rng": global_rng_state(),
    }


class ResumeStateError(ValueError):
    """A resume_state (a training checkpoint) that cannot continue this training: made with other settings,
    for other members, or not a checkpoint at all. The caller starts from epoch 0 instead."""


def _fail(problem: str) -> ResumeStateError:
    return ResumeStateError(f"resume_state is not a usable cohort checkpoint: {problem}")


def restore_checkpoint(state, net, sgd, orders: list[torch.Generator], run, configs: list[TrainConfig],
                       members: list[str] | None) -> int:
    """Load a ``checkpoint_state`` dict into the cohort, optimiser, generators and bookkeeping; returns the
    next epoch. ResumeStateError ("resume_state ...") naming the problem when it does not fit this cohort (other
    members, when both name theirs; other configs; other shapes)."""
    if not isinstance(state, dict):
        raise _fail(f"expected a dict, got {type(state).__name__}")
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise _fail(f"missing {missing}")
    if state["format"] != CHECKPOINT_FORMAT or state["version"] != CHECKPOINT_VERSION:
        raise _fail(f"format {state['format']!r} version {state['version']!r}, expected {CHECKPOINT_FORMAT!r} "
                    f"version {CHECKPOINT_VERSION}")
    m = net.members
    for key in ("configs", "generators", "histories", "errors"):
        if not isinstance(state[key], list) or len(state[key]) != m:
            raise _fail(f"{key} must be a list of {m} members")
    if members is not None and state["members"] is not None and list(state["members"]) != [str(k) for k in members]:
        raise ResumeStateError(f"resume_state was made for other cohort members: {state['members']} vs now "
                         f"{[str(k) for k in members]}")
    _check_configs(state["configs"], configs)
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= configs[0].epochs:
        raise _fail(f"epoch must be an integer in [0, {configs[0].epochs}], got {epoch!r}")
    if not isinstance(state["state"], dict):
        raise _fail("state must be a dict of tensors")
    try:
        net.load_stacked(state["state"])
    except (ValueError, TypeError, RuntimeError) as err:
        raise _fail(f"state does not fit this cohort ({err})") from None
    names = [n for n, p in net.params().items() if p.requires_grad]
    momentum = state["momentum"]
    if not isinstance(momentum, dict) or list(momentum) != names:
        raise _fail("momentum buffers do not name this cohort's trainable parameters")
    buffers = []
    for name, p in zip(names, sgd.params):
        buf = momentum[name]
        if not isinstance(buf, torch.Tensor) or buf.shape != p.shape:
            raise _fail(f"momentum buffer {name!r} has the wrong shape")
        buffers.append(buf.to(device=p.device, dtype=p.dtype, copy=True))
    sgd.buffers = buffers
    for i, (gen, saved) in enumerate(zip(orders, state["generators"])):
        try:
            gen.set_state(saved)
        except (RuntimeError, TypeError) as err:
            raise _fail(f"generator state of member {i} ({err})") from None
    if not all(e is None or isinstance(e, str) for e in state["errors"]):
        raise _fail("errors must be None or strings")
    if "rng" in state:
        try:
            set_global_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise _fail(f"rng states ({type(err).__name__}: {err})") from None
    run.histories = copy.deepcopy(state["histories"])
    run.errors = list(state["errors"])
    return epoch


def _check_configs(saved: list, configs: list[TrainConfig]) -> None:
    for i, (old, new) in enumerate(zip(saved, configs)):
        if not isinstance(old, dict):
            raise _fail(f"configs[{i}] is not a dict")
        now = dataclasses.asdict(new)
        differ = sorted(k for k, v in now.items() if k not in RESUME_MAY_DIFFER and k in old and old[k] != v)
        if differ:
            detail = ", ".join(f"{k}: checkpoint {old[k]!r} vs now {now[k]!r}" for k in differ)
            raise ResumeStateError(f"resume_state was made with a different TrainConfig for member {i} ({detail})")


# --------------------------------------------------------------------------------------------------------
# The global generators


def global_rng_state() -> dict:
    """The global torch / numpy / python RNG states as tensors and plain numbers only.

    A checkpoint must load with ``torch.load(..., weights_only=True)``, which refuses anything but tensors,
    containers and primitives (it never calls code named by the file): numpy's state (an ndarray inside a
    tuple) and python's (a tuple of 625 ints) are stored as int64 tensors plus numbers.
    """
    _kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # kind is always MT19937
    version, internal, gauss_next = random.getstate()
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }
    if torch.cuda.is_available():
        rng["cuda"] = [s.detach().cpu() for s in torch.cuda.get_rng_state_all()]
    return rng


def set_global_rng_state(rng: dict) -> None:
    """Inverse of global_rng_state (CUDA states only where the device count matches)."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "numpy" in rng:
        n = rng["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if "python" in rng:
        p = rng["python"]
        random.setstate((int(p["version"]), tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
