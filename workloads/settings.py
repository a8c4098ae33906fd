"""Every setting of a model's training, its Hessian, its CKA probes and its Bezier curve, declared once.

A setting is a dataclass field made by ``setting()``: one default, one documentation line, a unit and one
check. The same declarations serve a notebook user (``TrainConfig(epochs=20)`` checks itself and raises
ValueError naming every bad field) and the sweep config, which embeds these dataclasses as its sections and
builds them from YAML with one generic builder (orchestrator/config/build.py) that runs the same checks and
names the field path in its error. Metadata a field may declare:

    doc, unit      what it is (README and error messages quote them)
    check          a function value -> None (fine) or a problem ("must be >= 1, got 0"); a tuple: all of them
    legacy         the value runs had before the setting existed. A saved run config lacking the field loads
                   with it, and the config hash leaves the field out while it has it, so the hash of every run
                   made before the field existed stays the same
    hashed=False   does not change what a result means (e.g. how often a training is checkpointed): left out
                   of the config hash
    sweep=False    not a setting of a sweep config (set per job, e.g. the seed and device, or fixed)
    flatten        (a dataclass field of a config section) its fields appear in the section with this prefix
    parse          (config only) a function (value, path) -> value for YAML forms the type hint cannot say

Plain Python: no torch (the sweep config and the analysis read these declarations without loading torch).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

MAX_SEED = 2**31  # seeds feed numpy (< 2^32) and derived seeds (seed + offsets): well inside 32 bits


class _NoLegacy:
    def __repr__(self) -> str:
        return "NO_LEGACY"


NO_LEGACY = _NoLegacy()  # the setting existed from the first release


def setting(default: Any = dataclasses.MISSING, *, factory: Callable | None = None, doc: str = "", unit: str = "",
            check: Callable | tuple = (), legacy: Any = NO_LEGACY, hashed: bool = True, sweep: bool = True,
            flatten: str | None = None, parse: Callable | None = None) -> Any:
    """A dataclass field carrying the metadata of the module docstring."""
    metadata = {"doc": doc, "unit": unit, "check": check if isinstance(check, tuple) else (check,),
                "legacy": legacy, "hashed": hashed, "sweep": sweep, "flatten": flatten, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def info(f: dataclasses.Field) -> dict:
    """A field's setting metadata, with the defaults of ``setting()`` for fields declared without it."""
    meta = dict(f.metadata) if f.metadata else {}
    for key, value in (("doc", ""), ("unit", ""), ("check", ()), ("legacy", NO_LEGACY), ("hashed", True),
                       ("sweep", True), ("flatten", None), ("parse", None)):
        meta.setdefault(key, value)
    return meta


def problems(obj) -> list[tuple[str, str]]:
    """(field name, problem) for every field of the dataclass ``obj`` whose value fails its check."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        for check in info(f)["check"]:
            problem = check(value)
            if problem:
                out.append((f.name, problem))
                break
    return out


def check_fields(obj) -> None:
    """ValueError naming every field of ``obj`` that fails its check (for ``__post_init__``)."""
    found = problems(obj)
    if found:
        raise ValueError(f"invalid {type(obj).__name__}: " + "; ".join(f"{name} {problem}" for name, problem in found))


# ---------------------------------------------------------------------------------------------------------
# Checks: value -> None or a problem in words (the field's name is added by whoever reports it)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(lo, note: str = "") -> Callable:
    def check(value):
        if not _number(value) or not value >= lo:
            return f"must be >= {lo}{' ' + note if note else ''}, got {value!r}"
        return None
    return check


def greater_than(lo) -> Callable:
    def check(value):
        if not _number(value) or not value > lo:
            return f"must be > {lo}, got {value!r}"
        return None
    return check


def in_range(lo, hi, bounds: str = "[)", what: str = "") -> Callable:
    """lo..hi with open or closed ends, e.g. "[)" = [lo, hi); ``what`` names the quantity ("a fraction")."""
    def check(value):
        low_ok = value >= lo if bounds[0] == "[" else value > lo
        high_ok = value <= hi if bounds[1] == "]" else value < hi
        if not _number(value) or not (low_ok and high_ok):
            prefix = f"{what} must lie" if what else "must lie"
            return f"{prefix} in {bounds[0]}{lo:g}, {hi:g}{bounds[1]}, got {value!r}"
        return None
    return check


def at_most(cap, why: str) -> Callable:
    """A cap far above any real sweep, so that a typo is one clear error instead of a job that never ends."""
    def check(value):
        if _number(value) and value > cap:
            return f"{value:,} is beyond any real sweep (at most {cap:,}: {why})"
        return None
    return check


def choice_problem(value, choices) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"unknown value {value!r}{hint} Choose one of: {', '.join(choices)}"


def one_of(*choices: str) -> Callable:
    def check(value):
        return None if value in choices else choice_problem(value, choices)
    check.choices = choices
    return check


def optional(*checks: Callable) -> Callable:
    """None passes; anything else must pass ``checks``."""
    def check(value):
        if value is None:
            return None
        for c in checks:
            problem = c(value)
            if problem:
                return problem
        return None
    return check


def seed() -> Callable:
    def check(value):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_SEED:
            return f"seeds must lie in [0, {MAX_SEED}), got {value!r}"
        return None
    return check


def finite() -> Callable:
    def check(value):
        return None if _number(value) and math.isfinite(value) else f"must be a finite number, got {value!r}"
    return check


# ---------------------------------------------------------------------------------------------------------
# The settings

SCHEDULES = ("constant", "step")
LR_SCALINGS = ("none", "linear")
HESSIAN_BACKENDS = ("lanczos", "pyhessian")
# How the curve's lr schedule counts epochs: the number the first epoch gets (workloads/metrics/connectivity.py).
#   garipov         1, as Garipov et al.'s train.py and the authors' Mode_connectivity.py: at 50 epochs, 25 epochs
#                   at the full lr and 6 at 1%
#   garipov-epoch0  0: what this package did before the setting existed (26 full, 5 at 1%)
CURVE_LR_SCHEDULES = {"garipov": 1, "garipov-epoch0": 0}
# training.eval_every: "auto" evaluates the test set at about AUTO_EVALUATIONS evenly spaced epochs (and at the last
# one): a handful of points of the test curve at ~1% of the training cost for the demo's models.
EVAL_AUTO = "auto"
AUTO_EVALUATIONS = 5


def eval_every_check(value) -> str | None:
    if value == EVAL_AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return (f"must be {EVAL_AUTO} (about {AUTO_EVALUATIONS} evaluations and the last epoch) or a whole number of "
            f"epochs >= 1, got {value!r}")


def eval_epochs(epochs: int, eval_every) -> frozenset[int]:
    """The 0-based epochs after which the test set is evaluated: every ``eval_every``-th epoch (epoch + 1 a
    multiple of it) and the last one; ``auto`` = every max(1, epochs // AUTO_EVALUATIONS) epochs."""
    every = max(1, epochs // AUTO_EVALUATIONS) if eval_every == EVAL_AUTO else int(eval_every)
    return frozenset(e for e in range(epochs) if (e + 1) % every == 0 or e == epochs - 1)


# How a cohort's training runs (workloads/cohort_train.py Execution; the sweep's execution section):
#   compile    off | default | reduce-overhead (CUDA graphs) | max-autotune: torch.compile of the training forward
#   precision  fp32 | bf16 (autocast of the training forward pass only; every metric is taken in fp32)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
PRECISIONS = ("fp32", "bf16")
# What mode connectivity is measured on (paper App. D.4: the loss for translation): its unit follows.
MC_ON = {"error": "percentage points", "loss": "nats"}


@dataclass
class TrainConfig:
    """Training hyperparameters (defaults: the authors' released setting, method.md section 2); see the
    ``doc`` of each field. The batch size is never shrunk: it is the experiment."""

    epochs: int = setting(100, doc="passes over the training set", unit="epochs",
                          check=(at_least(1), at_most(100_000, "the paper trains 200 epochs")))
    batch_size: int = setting(128, doc="examples per SGD step; used when the temperature is not batch_size",
                              unit="examples", check=at_least(1))
    lr: float = setting(0.1, doc="learning rate per step; used when the temperature is not learning_rate",
                        check=greater_than(0))
    momentum: float = setting(0.9, doc="SGD heavy-ball momentum", check=in_range(0, 1, "[)"))
    weight_decay: float = setting(5e-4, doc="L2 coefficient on every parameter (biases and BatchNorm too); used "
                                            "when the temperature is not weight_decay", check=at_least(0))
    schedule: str = setting("constant", doc="constant | step (lr x 0.1 from epoch int(0.75 * epochs))",
                            check=one_of(*SCHEDULES))
    lr_scaling: str = setting("none", doc="none | linear (lr * batch_size / base_batch_size): off by default, it "
                                          "would cancel the batch-size temperature", check=one_of(*LR_SCALINGS))
    base_batch_size: int = setting(128, doc="the batch size lr refers to under linear scaling", unit="examples",
                                   check=at_least(1))
    seed: int = setting(0, doc="batch order and the global RNGs (the model's seed)", sweep=False)
    device: str = setting("cpu", doc='"cpu", "cuda", "cuda:1", ...', sweep=False)
    checkpoint_every: int = setting(0, doc="epochs between training checkpoints (resume mid-training); 0 = never. "
                                           "Resume is bit-exact, so it does not change results", unit="epochs",
                                    check=at_least(0, "(0 = never)"), hashed=False)
    checkpoint_minutes: float = setting(5.0, doc="also write the training checkpoint after the first epoch that ends "
                                                 "this long after the last one (or the start), so an interrupted "
                                                 "training resumes from there; 0 = only checkpoint_every. Does not "
                                                 "change results", unit="minutes",
                                        check=at_least(0, "(0 = off)"), hashed=False)
    eval_every: Any = setting(EVAL_AUTO, doc="epochs between evaluations of the test set during training (the "
                                             "history table's test_loss/test_acc); auto = about 5 and the last "
                                             "epoch. Evaluating does not change training, so it is not hashed",
                              unit="epochs", check=eval_every_check, hashed=False)

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class HessianSettings:
    """How the per-model Hessian metrics are measured (workloads/metrics/hessian.py)."""

    samples: int = setting(1000, doc="training points the Hessian is taken over (all of them when the training set "
                                     "is smaller); the authors used one batch of 200, which is noisy", unit="examples",
                           check=at_least(1))
    backend: str = setting("lanczos", doc="lanczos (fast, accuracy-based stopping) | pyhessian (the reference)",
                           check=one_of(*HESSIAN_BACKENDS))
    eigen_tol: float = setting(1e-3, doc="relative accuracy of lambda_max (authors: 1e-3)", check=greater_than(0))
    eigen_max_iter: int = setting(100, doc="cap on Hessian-vector products for lambda_max (authors: 100)",
                                  check=(at_least(1), at_most(1_000, "the authors used 100; Lanczos keeps one vector "
                                                                    "of the model's size per iteration")))
    trace_tol: float = setting(1e-2, doc="relative standard error of the trace", check=greater_than(0))
    trace_max_probes: int = setting(100, doc="cap on Hutchinson probes (authors: 100)",
                                    check=(at_least(1), at_most(100_000, "the authors used 100")))
    batch_size: int | None = setting(None, doc="chunk of the loss for Hessian-vector products (memory only); null = "
                                               "all at once", unit="examples",
                                     check=optional(at_least(1, "or null (all points at once)")))
    seed: int = setting(0, doc="choice of the Hessian points and the random probes", check=seed())

    def __post_init__(self):
        check_fields(self)


# Where CKA probes are drawn from (workloads/metrics/probes.py: probe_pool).
CKA_PROBE_POOLS = ("train", "test")


@dataclass(frozen=True)
class CkaSettings:
    """The probe inputs on which CKA compares two models of a cell (workloads/metrics/cka.py)."""

    probes: int = setting(768, doc="probe inputs per cell (authors: 768)", unit="examples",
                          check=(at_least(2, "(CKA needs at least 2 probe inputs)"),
                                 at_most(100_000, "the authors used 768; the probes and both models' outputs are "
                                                  "held in memory")))
    probe_seed: int = setting(0, doc="seed of the probe set (shared by every pair of a cell)", check=seed())
    probe_maker: str = setting("mixup", doc="mixup (float inputs: lam x_a + (1 - lam) x_b, lam ~ Beta(16, 16)) | "
                                            "crossover (token inputs: each position from x_a with probability lam) "
                                            "| points (distinct inputs of the pool, unmixed) "
                                            "| module:function called as fn(train_x, num=, seed=)", legacy="mixup")
    probe_pool: str = setting("train", doc="the inputs the probes are made from: train (the cell's training inputs, "
                                           "as the authors) | test (the test inputs: the same held-out inputs for "
                                           "every cell, also across training-set sizes)",
                              check=one_of(*CKA_PROBE_POOLS), legacy="train")

    def __post_init__(self):
        check_fields(self)


@dataclass
class CurveConfig:
    """Curve training and evaluation settings. Defaults are the authors' (Garipov et al.; Yang et al. code)
    except points: 9 points (spacing 1/8) contain the authors' 5-point grid {0, .25, .5, .75, 1}, so their mc
    can be read off the same curve, at twice their resolution."""

    epochs: int = setting(50, doc="curve training epochs: the dominant pairwise cost; it moves the III/IV boundary",
                          unit="epochs", check=(at_least(0), at_most(100_000, "the paper trains a curve 200 epochs")))
    lr: float = setting(0.01, doc="base SGD learning rate (schedule: lr_schedule)", check=greater_than(0))
    momentum: float = setting(0.9, doc="SGD momentum", check=in_range(0, 1, "[)"))
    weight_decay: float = setting(5e-4, doc="as 0.5 wd ||gamma(t)||^2 in the loss, on every curve-point parameter",
                                  check=at_least(0))
    batch_size: int = setting(128, doc="examples per step; never shrunk", unit="examples", check=at_least(1))
    points: int = setting(9, doc="size of the evaluation t-grid linspace(0, 1, points); 9 contains the authors' 5",
                          check=(at_least(2, "(the t-grid needs t=0 and t=1)"),
                                 at_most(1_000, "the authors used 5; each point is a BatchNorm pass and a full "
                                                "evaluation")))
    seed: int = setting(0, doc="minibatch order and the t draws", check=seed())
    lr_schedule: str = setting("garipov", doc="how the lr schedule counts epochs: garipov (from 1, as Garipov's and "
                                              "the authors' code: at 50 epochs 25 at the full lr, 6 at 1%) | "
                                              "garipov-epoch0 (from 0: this package's earlier releases, 26 and 5)",
                               check=one_of(*CURVE_LR_SCHEDULES), legacy="garipov-epoch0")
    mc_on: str = setting("error", doc="what mode connectivity is measured on: error (train error, percentage "
                                      "points) | loss (train loss, nats; the paper's choice for translation)",
                         check=one_of(*MC_ON), legacy="error")
    device: str = setting("cpu", sweep=False)
    bn_batch_size: int = setting(128, doc="examples per batch of the BatchNorm recompute pass at each evaluated t",
                                 sweep=False, check=at_least(1))
    eval_batch_size: int = setting(1000, doc="examples per forward pass when evaluating (memory only)", sweep=False,
                                   check=at_least(1))

    def __post_init__(self):
        check_fields(self)

    def ts(self):
        """The evaluation grid, (points,), from 0 to 1 inclusive."""
        import numpy as np

        return np.linspace(0.0, 1.0, self.points)


# ---------------------------------------------------------------------------------------------------------
# The workload: data, model and the values of the knobs that are not an axis of the sweep

MAX_WIDTH = 1_000_000  # beyond any trainable width (and torch's size arithmetic overflows far beyond it)


def width_check(value) -> str | None:
    if not _number(value) or not float(value).is_integer() or not 1 <= value <= MAX_WIDTH:
        return f"a width must be an integer in [1, {MAX_WIDTH}], got {value:g}" if _number(value) else \
            f"a width must be an integer in [1, {MAX_WIDTH}], got {value!r}"
    return None


def train_fraction_check(value) -> str | None:
    return None if _number(value) and 0 < value <= 1 else f"a training-set fraction must lie in (0, 1], got {value}"


def label_noise_check(value) -> str | None:
    return None if _number(value) and 0 <= value < 1 else f"a label-noise fraction must lie in [0, 1), got {value}"


def batch_size_check(value) -> str | None:
    ok = _number(value) and float(value).is_integer() and value >= 1
    return None if ok else f"a batch size must be a positive integer, got {value}"


def learning_rate_check(value) -> str | None:
    return None if _number(value) and value > 0 else f"a learning rate must be > 0, got {value}"


def weight_decay_check(value) -> str | None:
    return None if _number(value) and value >= 0 else f"a weight decay must be >= 0, got {value}"


@dataclass(frozen=True)
class Workload:
    """What is trained on what: the dataset, the model, and the fixed values of the knobs that are not an axis."""

    dataset: str = setting("mnist1d", doc="a built-in dataset (workloads.data.DATASETS), 'module:function' or an "
                                          "entry point of landscape.datasets")
    data_root: str | None = setting(None, doc="folder with the dataset's files (image datasets; never downloaded); "
                                              "handed to a plug-in dataset as root=")
    model: str = setting("mlp", doc="a built-in model (workloads.models.MODELS), 'module:function' or an entry "
                                    "point of landscape.models")
    model_args: dict = setting(factory=dict, doc="model options, e.g. {depth: 2}")
    width: int = setting(64, doc="model width when the load axis is not width", check=width_check)
    data_seed: int = setting(0, doc="seed of the training subset and label corruption (the same data for every seed "
                                    "of a cell); a plug-in dataset gets it as seed=", check=seed())
    # Fixed data transforms of every cell when they are not the load axis (null = none), e.g. label_noise 0.1 for
    # the paper's width x batch grid on 10% noisy labels, or train_fraction 0.1 for a tenth of the data.
    train_fraction: float | None = setting(None, doc="fixed training-set fraction of every cell (null = all)",
                                           check=optional(train_fraction_check), legacy=None)
    label_noise: float | None = setting(None, doc="fixed fraction of randomised training labels (null = none)",
                                        check=optional(label_noise_check), legacy=None)
    dataset_args: dict = setting(factory=dict, doc="options of a plug-in dataset function (fn(root=, seed=, **args))",
                                 legacy={})
