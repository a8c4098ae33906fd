"""Sweep configs: one YAML file per sweep, parsed into frozen dataclasses and validated before Ray starts.

A config names a workload (dataset + model), a *load* axis (width, training-set fraction or label noise),
a *temperature* axis (batch size, learning rate or weight decay), the seeds, the training and metric
settings, the resources each job asks for, and where the run lives. Every mistake a user can make in it is
reported as ONE ConfigError naming the field and the fix, before any cluster is started.

This module does not import ray. It imports torch only through the workloads registries (for the
did-you-mean of dataset and model names, and to check that the model builds with its options).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.resources
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

LOAD_AXES = ("width", "train_fraction", "label_noise")
TEMPERATURE_AXES = ("batch_size", "learning_rate", "weight_decay")
PAIR_MODES = ("auto", "all", "ring")
SCHEDULES = ("constant", "step")
LR_SCALINGS = ("none", "linear")
HESSIAN_BACKENDS = ("lanczos", "pyhessian")

# Sizes and shapes of the registered datasets (workloads/data.py's table), so that validation can check
# batch sizes and build the model without loading data (generating MNIST-1D alone costs ~5 s).
# A dataset registered later and missing here is loaded once to learn them.
KNOWN_DATASETS = {
    #            train size, input shape, classes, needs data_root
    "mnist1d": (4000, (40,), 10, False),
    "digits": (1437, (64,), 10, False),
    "cifar10": (50000, (3, 32, 32), 10, True),
    "cifar100": (50000, (3, 32, 32), 100, True),
    "svhn": (73257, (3, 32, 32), 10, True),
    "synthetic-cifar": (50000, (3, 32, 32), 10, False),  # NOT real data: CIFAR-shaped noise, benchmarks only
}

# Fields of the workload added after runs existed: left out of the config hash while unset (None), so the
# hash of every run made before they existed stays the same.
OPTIONAL_WORKLOAD_FIELDS = ("train_fraction", "label_noise")

CURVE_LR_SCHEDULES = ("garipov", "garipov-epoch0")  # workloads.metrics.connectivity.CURVE_LR_SCHEDULES

# Settings added after run directories existed, each with the value every run made before it used. A saved
# config (RUN_DIR/config.yaml, which holds every field) that lacks one was made before it existed and loads
# with this value; a user's config gets the field's default. The hash leaves a field out while it has this
# value, so the hash of every run made before the field existed stays the same.
LEGACY_VALUES = {
    ("metrics", "curve", "lr_schedule"): "garipov-epoch0",
}

# What tells a saved config from a user's: it holds every field of the schema as first released (to_yaml writes
# them all), which no hand-written config does. Frozen here: fields added since are not required, so saved
# configs of every age qualify.
SAVED_FORM_FIELDS = {
    "": ("name", "description", "workload", "load", "temperature", "seeds", "training", "metrics", "resources",
         "run"),
    "workload": ("dataset", "data_root", "model", "model_args", "width", "data_seed"),
    "load": ("name", "values"),
    "temperature": ("name", "values"),
    "training": ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "lr_scaling",
                 "base_batch_size", "checkpoint_every"),
    "metrics": ("hessian_samples", "hessian_backend", "hessian_eigen_tol", "hessian_eigen_max_iter",
                "hessian_trace_tol", "hessian_trace_max_probes", "hessian_batch_size", "hessian_seed", "cka_probes",
                "cka_probe_seed", "curve", "pairs"),
    "metrics.curve": ("epochs", "lr", "momentum", "weight_decay", "batch_size", "points", "seed"),
    "resources": ("cpu", "gpu", "gpu_by_load", "pair_cpu", "pair_gpu"),
    "run": ("storage", "max_concurrent", "max_failures", "object_store_mb"),
}


def _section(raw, dotted: str):
    node = raw
    for part in dotted.split(".") if dotted else ():
        node = node.get(part) if isinstance(node, dict) else None
    return node


def is_saved_form(raw) -> bool:
    """True when ``raw`` holds every field of SAVED_FORM_FIELDS: a config a run saved, not one a user wrote."""
    for dotted, names in SAVED_FORM_FIELDS.items():
        node = _section(raw, dotted)
        if not isinstance(node, dict) or any(name not in node for name in names):
            return False
    return True


def with_legacy_values(raw: dict) -> dict:
    """``raw`` with LEGACY_VALUES filled in where a saved config lacks them (a copy; user configs unchanged)."""
    if not is_saved_form(raw):
        return raw
    missing = [path for path in LEGACY_VALUES
               if isinstance(_section(raw, ".".join(path[:-1])), dict) and path[-1] not in _section(raw, ".".join(path[:-1]))]
    if not missing:
        return raw
    out = json.loads(json.dumps(raw, default=_json_default))
    for path in missing:
        _section(out, ".".join(path[:-1]))[path[-1]] = LEGACY_VALUES[path]
    return out


class ConfigError(ValueError):
    """A sweep config that cannot run; the message names the field and how to fix it."""


# ---------------------------------------------------------------------------------------------------------
# The schema. Field comments are the documentation of the YAML keys; defaults are the method's.


@dataclass(frozen=True)
class WorkloadConfig:
    dataset: str = "mnist1d"  # a workloads.data.DATASETS name
    data_root: Optional[str] = None  # folder with the dataset's files (image datasets only; never downloaded)
    model: str = "mlp"  # a workloads.models.MODELS name
    model_args: dict = field(default_factory=dict)  # model options, e.g. {depth: 2}
    width: int = 64  # model width when the load axis is not width
    data_seed: int = 0  # seed of the training subset / label corruption: the same data for every seed of a cell
    # Fixed data transforms for every cell when they are not the load axis (null = none), e.g. label_noise 0.1
    # for the paper's width x batch grid on 10% noisy labels, or train_fraction 0.1 for a tenth of the data.
    train_fraction: Optional[float] = None
    label_noise: Optional[float] = None


@dataclass(frozen=True)
class AxisConfig:
    name: str = ""
    values: tuple = ()


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 128  # examples; used when temperature is not batch_size
    lr: float = 0.1  # used when temperature is not learning_rate
    momentum: float = 0.9
    weight_decay: float = 5e-4  # used when temperature is not weight_decay
    schedule: str = "constant"  # constant | step (x0.1 at 75% of the epochs)
    lr_scaling: str = "none"  # none | linear (lr * batch_size / base_batch_size): off by default, see method.md
    base_batch_size: int = 128
    checkpoint_every: int = 0  # epochs between training checkpoints (resume mid-training); 0 = never


@dataclass(frozen=True)
class CurveSettings:
    epochs: int = 50  # curve training epochs: the dominant pairwise cost; it moves the III/IV boundary
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    points: int = 9  # size of the evaluation t-grid linspace(0, 1, points); 9 contains the authors' 5 points
    seed: int = 0
    # How the lr schedule counts epochs: garipov (from 1, as Garipov's and the authors' code: at 50 epochs 25 at
    # the full lr, 6 at 1%) | garipov-epoch0 (from 0: this package before 2026-12, 26 and 5)
    lr_schedule: str = "garipov"


@dataclass(frozen=True)
class MetricsConfig:
    # Training points the Hessian is taken over. The authors used one batch of 200, which is noisy;
    # 1000 (or the whole set when smaller) is still cheap for small models. Recorded per row.
    hessian_samples: int = 1000
    hessian_backend: str = "lanczos"  # lanczos (fast, accuracy-based stopping) | pyhessian (the reference)
    hessian_eigen_tol: float = 1e-3  # relative accuracy of lambda_max (authors: 1e-3)
    hessian_eigen_max_iter: int = 100  # cap on Hessian-vector products for lambda_max (authors: 100)
    hessian_trace_tol: float = 1e-2  # relative standard error of the trace
    hessian_trace_max_probes: int = 100  # cap on Hutchinson probes (authors: 100)
    hessian_batch_size: Optional[int] = None  # chunk of the loss for HVPs (memory only); null = all at once
    hessian_seed: int = 0  # choice of the Hessian points and the random probes
    cka_probes: int = 768  # mixup inputs per cell (authors: 768)
    cka_probe_seed: int = 0
    curve: CurveSettings = field(default_factory=CurveSettings)
    pairs: Any = "auto"  # auto (all pairs for <= 3 seeds, else a ring) | all | ring | [[a, b], ...]


AUTO_GPU = "auto"


@dataclass(frozen=True)
class ResourcesConfig:
    cpu: float = 1.0  # CPUs per training trial
    # GPUs per training trial: "auto" (GPUs when the Ray cluster has any, else CPUs only; decided after Ray
    # starts, on every run and resume) or a number, which is a requirement (a CPU-only cluster refuses it).
    # Fractions pack trials: 0.25 = four per GPU.
    gpu: Any = AUTO_GPU
    auto_gpu_share: float = 0.25  # GPUs per trial when gpu is auto and the cluster has GPUs
    gpu_by_load: dict = field(default_factory=dict)  # load value -> GPUs, overrides gpu (e.g. by width)
    cpu_by_load: dict = field(default_factory=dict)  # load value -> CPUs, overrides cpu
    pair_cpu: Optional[float] = None  # CPUs per pair job (default: cpu)
    pair_gpu: Optional[float] = None  # GPUs per pair job (default: the trial's GPUs at that load)


@dataclass(frozen=True)
class RunSettings:
    storage: Optional[str] = None  # run directory: a path or a URI (s3://...); default runs/<name>-<time>
    max_concurrent: Optional[int] = None  # jobs (trials + pairs) at once; default: what the cluster fits
    max_failures: int = 2  # retries of a job whose process dies or raises, before it is recorded as failed
    object_store_mb: int = 256  # object store of a local Ray (models travel through storage, not Ray)


@dataclass(frozen=True)
class SweepConfig:
    name: str = "sweep"
    description: str = ""
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    load: AxisConfig = field(default_factory=AxisConfig)
    temperature: AxisConfig = field(default_factory=AxisConfig)
    seeds: tuple = (0, 1, 2)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    run: RunSettings = field(default_factory=RunSettings)

    # -- derived views -------------------------------------------------------------------------------

    def model_keys(self) -> list[tuple[float, float, int]]:
        """(load value, temperature value, seed) of every model of the grid, in grid order."""
        return [(lv, tv, s) for lv in self.load.values for tv in self.temperature.values for s in self.seeds]

    def seed_pairs(self) -> list[tuple[int, int]]:
        """The seed pairs connected in every cell, each as (a, b) with a < b."""
        return seed_pairs(self.metrics.pairs, self.seeds)

    def pair_keys(self) -> list[tuple[float, float, int, int]]:
        return [(lv, tv, a, b) for lv in self.load.values for tv in self.temperature.values for a, b in self.seed_pairs()]

    @property
    def gpu_is_auto(self) -> bool:
        return self.resources.gpu == AUTO_GPU

    def with_gpus_available(self, cluster_has_gpus: bool) -> "SweepConfig":
        """This config with ``resources.gpu: auto`` decided for a cluster with or without GPUs.

        With GPUs: ``auto_gpu_share`` per trial (``gpu_by_load`` and ``pair_gpu`` apply as written). Without:
        every job runs on CPUs, so ``gpu_by_load`` and ``pair_gpu`` are dropped (they describe the GPU
        layout). A config with a number is returned unchanged: a number is a requirement.
        """
        r = self.resources
        if not self.gpu_is_auto:
            return self
        if cluster_has_gpus:
            return dataclasses.replace(self, resources=dataclasses.replace(r, gpu=float(r.auto_gpu_share)))
        return dataclasses.replace(self, resources=dataclasses.replace(r, gpu=0.0, gpu_by_load={}, pair_gpu=None))

    def trial_gpu(self, load_value: float) -> float:
        if self.gpu_is_auto:
            raise ValueError("resources.gpu is 'auto': decide it for a cluster first (with_gpus_available)")
        by_load = {float(k): float(v) for k, v in self.resources.gpu_by_load.items()}
        return by_load.get(float(load_value), float(self.resources.gpu))

    def trial_cpu(self, load_value: float) -> float:
        by_load = {float(k): float(v) for k, v in self.resources.cpu_by_load.items()}
        return by_load.get(float(load_value), float(self.resources.cpu))

    def trial_resources(self, load_value: float) -> dict:
        return {"cpu": self.trial_cpu(load_value), "gpu": self.trial_gpu(load_value)}

    def pair_resources(self, load_value: float) -> dict:
        r = self.resources
        cpu = self.trial_cpu(load_value) if r.pair_cpu is None else float(r.pair_cpu)
        gpu = self.trial_gpu(load_value) if r.pair_gpu is None else float(r.pair_gpu)
        return {"cpu": cpu, "gpu": gpu}

    def to_dict(self) -> dict:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    def science_dict(self) -> dict:
        """The settings that determine the value of a row (not which rows exist, nor where they run)."""
        d = self.to_dict()
        workload = {k: v for k, v in d["workload"].items() if not (k in OPTIONAL_WORKLOAD_FIELDS and v is None)}
        science = {
            "workload": workload,
            "load_name": d["load"]["name"],
            "temperature_name": d["temperature"]["name"],
            # How often a training is checkpointed does not change its result (resume is bit-exact), so a
            # run may change it on resume (e.g. more often on spot workers).
            "training": {k: v for k, v in d["training"].items() if k != "checkpoint_every"},
            "metrics": {k: v for k, v in d["metrics"].items() if k != "pairs"},
        }
        for path, legacy in LEGACY_VALUES.items():
            *parents, leaf = path
            node = science
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and node.get(leaf) == legacy:
                del node[leaf]
        return science

    def config_hash(self) -> str:
        """sha256 prefix of :meth:`science_dict`.

        Grid values, seeds, pairs, resources and storage are left out on purpose: growing a sweep or
        running it elsewhere keeps the hash, so rows computed before and after stay comparable, while a
        change of any training or metric setting changes it (resume refuses to mix the two).
        """
        text = json.dumps(self.science_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def seed_pairs(mode, seeds) -> list[tuple[int, int]]:
    """Seed pairs for a pairs setting: auto = all pairs for <= 3 seeds, else a ring (s0-s1, s1-s2, ..., sn-s0)."""
    seeds = list(seeds)
    if mode == "auto":
        mode = "all" if len(seeds) <= 3 else "ring"
    if mode == "all":
        return [(min(a, b), max(a, b)) for i, a in enumerate(seeds) for b in seeds[i + 1 :]]
    if mode == "ring":
        if len(seeds) < 2:
            return []
        if len(seeds) == 2:
            return [tuple(sorted(seeds))]
        ring = [(seeds[i], seeds[(i + 1) % len(seeds)]) for i in range(len(seeds))]
        return [(min(a, b), max(a, b)) for a, b in ring]
    return sorted({(min(int(a), int(b)), max(int(a), int(b))) for a, b in mode})


# ---------------------------------------------------------------------------------------------------------
# Loading: YAML text / dict -> SweepConfig


def builtin_dir():
    return importlib.resources.files("orchestrator.configs")


def builtin_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in builtin_dir().iterdir() if p.name.endswith(".yaml"))


def builtin_path(name: str) -> str:
    return str(builtin_dir() / f"{name}.yaml")


def read_raw(source: str) -> tuple[dict, str]:
    """(raw dict, where it came from) for a built-in name or a YAML path."""
    if source in builtin_names():
        path = builtin_path(source)
    elif os.path.exists(source):
        path = source
    else:
        hint = ""
        close = difflib.get_close_matches(source, builtin_names(), n=1)
        if close:
            hint = f"; did you mean the built-in {close[0]!r}?"
        raise ConfigError(
            f"config {source!r} is neither a built-in config nor an existing file{hint} "
            f"Built-ins: {', '.join(builtin_names())} (see `landscape configs`)."
        )
    try:
        # Bytes, not text: PyYAML then detects the encoding itself and reports bytes that are not text as a
        # YAMLError (a text-mode open raised UnicodeDecodeError from deep inside the reader).
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1_000_000} MB; a sweep config is a small YAML file")
    raw = parse_yaml(data, path)
    if raw is None:
        raise ConfigError(f"{path}: the file is empty (no YAML mapping); start from a built-in, e.g. "
                          f"`landscape validate demo` and orchestrator/configs/demo.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep config is a YAML mapping (key: value), got {type(raw).__name__}")
    return raw, path


MAX_SEED = 2**31
MAX_CONFIG_BYTES = 1_000_000  # a real config is ~2 kB; this bounds reading junk such as a data file
MAX_CONFIG_NODES = 100_000  # values after YAML aliases are expanded (a "billion laughs" file expands to 10^9)


class DuplicateKey(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so a
    second `training:` block would quietly replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: PyYAML's own error follows
                break
            if duplicate:
                raise DuplicateKey(f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1}); "
                                   f"keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(data, where: str) -> Any:
    """YAML text or bytes -> plain data; ConfigError for anything that is not a small, valid YAML document."""
    try:
        raw = yaml.load(data, Loader=_StrictLoader)
    except DuplicateKey as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({_one_line(exc)[:300]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a sweep config") from None
    _check_size(raw, where)
    return raw


def _check_size(raw, where: str) -> None:
    """Refuse data that expands to more than MAX_CONFIG_NODES values: YAML aliases can make a tiny file
    expand exponentially, and the config is copied and hashed as plain JSON (which expands them)."""
    count, stack = 0, [raw]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ConfigError(f"{where}: expands to more than {MAX_CONFIG_NODES} values (YAML aliases?); "
                              f"a sweep config is small")
        if isinstance(node, dict):
            stack.extend(node.values())
            stack.extend(node.keys())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def load_config(source: str, overrides: list[str] | tuple = (), *, check_data: bool = True) -> SweepConfig:
    """Read a built-in name or YAML path, apply ``--set`` overrides, parse and validate."""
    raw, _ = read_raw(source)
    raw = apply_overrides(raw, overrides)
    return parse_config(raw, check_data=check_data)


def parse_config(raw: dict, *, check_data: bool = True) -> SweepConfig:
    """A validated SweepConfig from a plain dict (ConfigError on the first problem).

    A saved config (see ``is_saved_form``) lacking a field of LEGACY_VALUES gets the value runs used before it.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a sweep config is a mapping, got {type(raw).__name__}")
    cfg = _build(SweepConfig, with_legacy_values(raw), "")
    validate(cfg, check_data=check_data)
    return cfg


def apply_overrides(raw: dict, overrides) -> dict:
    """Copy of ``raw`` with every ``dotted.key=value`` set; values are parsed as YAML (``[8, 16]``, ``0.1``, ``null``)."""
    out = json.loads(json.dumps(raw, default=_json_default)) if raw else {}
    for item in overrides or ():
        item = str(item)
        if "=" not in item:
            raise ConfigError(f"--set {_clip(item)}: expected KEY=VALUE, e.g. --set training.epochs=20")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {_clip(item)}: the key must be a dotted path such as training.epochs")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"--set {_clip(item)}: the value is not valid YAML ({_one_line(exc)[:300]})") from None
        _check_path(key)
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {_clip(item)}: {'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _clip(text: str, limit: int = 80) -> str:
    """repr of a user's text for an error line, shortened (a pasted blob must not flood the terminal)."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _check_path(key: str) -> None:
    """Unknown dotted paths fail here with a did-you-mean (model_args and *_by_load take any sub-key)."""
    cls: Any = SweepConfig
    done = []
    for part in key.split("."):
        if cls is None:
            return  # inside a free-form dict
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            where = ".".join(done) or "the top level"
            raise ConfigError(_unknown_key_message(part, names, where, prefix=".".join(done)))
        done.append(part)
        hint = typing.get_type_hints(cls)[part]
        cls = hint if dataclasses.is_dataclass(hint) else None


def _unknown_key_message(key: str, known: list[str], where: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    full = f"{prefix}.{key}" if prefix else str(key)
    msg = f"unknown key {full!r} in {where}"
    if close:
        msg += f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?"
    return msg + f" Known keys there: {', '.join(known)}."


def _build(cls, raw, path: str):
    """Instantiate dataclass ``cls`` from ``raw`` with type checks; ``path`` names the section in errors."""
    where = path or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping (key: value), got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(_unknown_key_message(key, names, where, prefix=path))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        fpath = f"{path}.{f.name}" if path else f.name
        hint = hints[f.name]
        value = raw[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, value, fpath)
        elif cls is AxisConfig and f.name == "values":
            kwargs[f.name] = _number_list(value, fpath)
        elif cls is SweepConfig and f.name == "seeds":
            kwargs[f.name] = tuple(_int_list(value, fpath))
        elif cls is ResourcesConfig and f.name == "gpu":
            kwargs[f.name] = _gpu_request(value, fpath)
        else:
            kwargs[f.name] = _coerce(value, hint, fpath)
    return cls(**kwargs)


def _coerce(value, hint, path: str):
    """Check ``value`` against a simple type hint (int, float, str, bool, dict, Optional[...], Any)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} must be true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{path} must be an integer, got {_show(value)}")
        number = _as_number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{path} must be an integer, got {_show(value)}")
        return int(number)
    if hint is float:
        number = None if isinstance(value, bool) else _as_number(value)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{path} must be a number, got {_show(value)}")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {_show(value)}")
        return value
    if hint is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping (key: value), got {_show(value)}")
        return dict(value)
    raise AssertionError(f"unsupported config type {hint} at {path}")


def _as_number(value):
    """int/float, or a numeric string (PyYAML reads 1e-3 as a string: YAML 1.1 floats need a dot)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _number_list(value, path: str) -> tuple:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list of numbers, e.g. [8, 16, 32], got {_show(value)}")
    out = []
    for i, v in enumerate(value):
        number = _as_number(v)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{path}[{i}] must be a number, got {_show(v)}")
        out.append(int(number) if float(number).is_integer() else float(number))
    return tuple(out)


def _int_list(value, path: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list of integers, e.g. [0, 1, 2], got {_show(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{path}[{i}] must be an integer, got {_show(v)}")
        out.append(v)
    return out


def _show(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _json_default(obj):
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(type(obj).__name__)


# ---------------------------------------------------------------------------------------------------------
# Semantic validation


def _fail(path: str, message: str) -> None:
    raise ConfigError(f"{path}: {message}")


def dataset_facts(name: str, root: Optional[str]) -> tuple[int, tuple, int]:
    """(training-set size, input shape, classes) of a dataset, without loading it when it is known."""
    if name in KNOWN_DATASETS:
        size, shape, classes, _ = KNOWN_DATASETS[name]
        return size, shape, classes
    from workloads.data import load_dataset

    ds = load_dataset(name, root)
    return ds.train_size, tuple(ds.input_shape), int(ds.num_classes)


def transformed_train_size(cfg: SweepConfig, load_value: float, full_size: int) -> int:
    """Training points left after the load transform (a lower bound within num_classes for fractions)."""
    if cfg.load.name == "train_fraction":
        return int(math.floor(float(load_value) * full_size))
    if cfg.workload.train_fraction is not None:
        return int(math.floor(float(cfg.workload.train_fraction) * full_size))
    return full_size


def expand_data_root(root: Optional[str]) -> Optional[str]:
    """``~`` expanded on the machine that reads the data (a worker's home on a cluster)."""
    if not root or "://" in root:
        return root
    return os.path.expanduser(root)


def missing_data_root(cfg: SweepConfig) -> Optional[str]:
    """Why the data folder of a file-backed dataset is not usable on THIS machine, or None when it is.

    On a cluster the trials read the data on the nodes that run them, so a folder missing on the driver
    is only a note there; a local run needs it here.
    """
    w = cfg.workload
    if not KNOWN_DATASETS.get(w.dataset, (0, (), 0, False))[3] or not w.data_root or "://" in w.data_root:
        return None
    root = expand_data_root(w.data_root)
    if not os.path.isdir(root):
        return f"folder {w.data_root!r} ({root}) does not exist on this machine"
    return None


def validate(cfg: SweepConfig, *, check_data: bool = True) -> None:
    """Raise ConfigError on the first problem; ``check_data`` also checks the data folder exists here."""
    if not isinstance(cfg.name, str) or not cfg.name.strip():
        _fail("name", "give the sweep a non-empty name")
    # The name becomes part of the default run directory (runs/<name>-<time>) and of the run id.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", cfg.name):
        _fail("name", f"{cfg.name!r}: use letters, digits, '.', '_' and '-' (starting with a letter or digit, "
                      f"at most 100 characters); it names the run directory")
    # Axes
    if cfg.load.name not in LOAD_AXES:
        _fail("load.name", f"{_choice(cfg.load.name, LOAD_AXES)}")
    if cfg.temperature.name not in TEMPERATURE_AXES:
        _fail("temperature.name", f"{_choice(cfg.temperature.name, TEMPERATURE_AXES)}")
    for axis, section in ((cfg.load, "load"), (cfg.temperature, "temperature")):
        if not axis.values:
            _fail(f"{section}.values", f"the {section} axis is empty: list at least one {axis.name} value")
        if len(set(map(float, axis.values))) != len(axis.values):
            _fail(f"{section}.values", f"{list(axis.values)} repeats a value; list each value once")
    if not cfg.seeds:
        _fail("seeds", "no seeds: list at least one, e.g. seeds: [0, 1, 2]")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        _fail("seeds", f"{list(cfg.seeds)} repeats a seed")
    # Seeds feed numpy (< 2^32) and derived seeds (seed + offsets): keep them well inside 32 bits.
    for path, values in (("seeds", cfg.seeds), ("workload.data_seed", [cfg.workload.data_seed]),
                         ("metrics.hessian_seed", [cfg.metrics.hessian_seed]),
                         ("metrics.cka_probe_seed", [cfg.metrics.cka_probe_seed]),
                         ("metrics.curve.seed", [cfg.metrics.curve.seed])):
        if min(values) < 0 or max(values) >= MAX_SEED:
            _fail(path, f"seeds must lie in [0, {MAX_SEED}), got {min(values) if min(values) < 0 else max(values)}")
    for i, v in enumerate(cfg.load.values):
        p = f"load.values[{i}]"
        if cfg.load.name == "width" and (not float(v).is_integer() or not 1 <= v <= MAX_WIDTH):
            _fail(p, f"a width must be an integer in [1, {MAX_WIDTH}], got {v:g}")
        if cfg.load.name == "train_fraction" and not 0 < v <= 1:
            _fail(p, f"a training-set fraction must lie in (0, 1], got {v}")
        if cfg.load.name == "label_noise" and not 0 <= v < 1:
            _fail(p, f"a label-noise fraction must lie in [0, 1), got {v}")
    for i, v in enumerate(cfg.temperature.values):
        p = f"temperature.values[{i}]"
        if cfg.temperature.name == "batch_size" and (not float(v).is_integer() or v < 1):
            _fail(p, f"a batch size must be a positive integer, got {v}")
        if cfg.temperature.name == "learning_rate" and not v > 0:
            _fail(p, f"a learning rate must be > 0, got {v}")
        if cfg.temperature.name == "weight_decay" and v < 0:
            _fail(p, f"a weight decay must be >= 0, got {v}")

    # Workload: names through the registries (did-you-mean), then the model must build with its options.
    w = cfg.workload
    from workloads.data import DATASETS
    from workloads.models import MODELS

    if w.dataset not in DATASETS:
        try:
            DATASETS.get(w.dataset)
        except LookupError as exc:
            _fail("workload.dataset", str(exc))
    if w.model not in MODELS:
        try:
            MODELS.get(w.model)
        except LookupError as exc:
            _fail("workload.model", str(exc))
    if not 1 <= w.width <= MAX_WIDTH:
        _fail("workload.width", f"must be an integer in [1, {MAX_WIDTH}], got {w.width}")
    if w.train_fraction is not None:
        if cfg.load.name == "train_fraction":
            _fail("workload.train_fraction", "the load axis is train_fraction already: remove this fixed value")
        if not 0 < w.train_fraction <= 1:
            _fail("workload.train_fraction", f"a training-set fraction must lie in (0, 1], got {w.train_fraction}")
    if w.label_noise is not None:
        if cfg.load.name == "label_noise":
            _fail("workload.label_noise", "the load axis is label_noise already: remove this fixed value")
        if not 0 <= w.label_noise < 1:
            _fail("workload.label_noise", f"a label-noise fraction must lie in [0, 1), got {w.label_noise}")
    needs_root = KNOWN_DATASETS.get(w.dataset, (0, (), 0, False))[3]
    if needs_root:
        if not w.data_root:
            _fail(
                "workload.data_root",
                f"dataset {w.dataset!r} is read from local files (never downloaded): set workload.data_root "
                f"to the folder holding them, e.g. --set workload.data_root=/data",
            )
        problem = missing_data_root(cfg) if check_data else None
        if problem:
            _fail("workload.data_root", f"{problem}; point it at the dataset's folder")
    full_size, input_shape, num_classes = dataset_facts(w.dataset, w.data_root)
    widths = cfg.load.values if cfg.load.name == "width" else (w.width,)
    _check_model_builds(cfg, int(min(widths)), input_shape, num_classes, max_width=int(max(widths)))

    # Training
    t = cfg.training
    if t.epochs < 1:
        _fail("training.epochs", f"must be >= 1, got {t.epochs}")
    if t.schedule not in SCHEDULES:
        _fail("training.schedule", _choice(t.schedule, SCHEDULES))
    if t.lr_scaling not in LR_SCALINGS:
        _fail("training.lr_scaling", _choice(t.lr_scaling, LR_SCALINGS))
    _check_sgd("training", t)
    if t.batch_size < 1 or t.base_batch_size < 1:
        _fail("training.batch_size", "batch sizes must be >= 1")
    if t.checkpoint_every < 0:
        _fail("training.checkpoint_every", f"must be >= 0 (0 = never), got {t.checkpoint_every}")

    # The batch size is the experiment: it is never shrunk, so it must fit every transformed training set.
    smallest = min(transformed_train_size(cfg, lv, full_size) for lv in cfg.load.values)
    batches = cfg.temperature.values if cfg.temperature.name == "batch_size" else (t.batch_size,)
    field_name = "temperature.values" if cfg.temperature.name == "batch_size" else "training.batch_size"
    if max(batches) > smallest:
        where = f"the smallest training set of the sweep ({smallest} examples"
        where += f" at train_fraction {min(cfg.load.values)})" if cfg.load.name == "train_fraction" else ")"
        _fail(field_name, f"batch size {int(max(batches))} is larger than {where}; batches are never shrunk: "
                          f"use batch sizes <= {smallest}")

    # Metrics
    m = cfg.metrics
    if m.hessian_samples < 1:
        _fail("metrics.hessian_samples", f"must be >= 1, got {m.hessian_samples}")
    if m.hessian_backend not in HESSIAN_BACKENDS:
        _fail("metrics.hessian_backend", _choice(m.hessian_backend, HESSIAN_BACKENDS))
    for name in ("hessian_eigen_tol", "hessian_trace_tol"):
        if not getattr(m, name) > 0:
            _fail(f"metrics.{name}", f"must be > 0, got {getattr(m, name)}")
    for name in ("hessian_eigen_max_iter", "hessian_trace_max_probes"):
        if getattr(m, name) < 1:
            _fail(f"metrics.{name}", f"must be >= 1, got {getattr(m, name)}")
    if m.hessian_batch_size is not None and m.hessian_batch_size < 1:
        _fail("metrics.hessian_batch_size", f"must be >= 1 or null (all points at once), got {m.hessian_batch_size}")
    if m.cka_probes < 2:
        _fail("metrics.cka_probes", f"CKA needs at least 2 probe inputs, got {m.cka_probes}")
    c = m.curve
    if c.epochs < 0:
        _fail("metrics.curve.epochs", f"must be >= 0, got {c.epochs}")
    _check_sgd("metrics.curve", c)
    if c.points < 2:
        _fail("metrics.curve.points", f"the t-grid needs t=0 and t=1: at least 2 points, got {c.points}")
    if c.lr_schedule not in CURVE_LR_SCHEDULES:
        _fail("metrics.curve.lr_schedule", _choice(c.lr_schedule, CURVE_LR_SCHEDULES))
    if c.batch_size < 1:
        _fail("metrics.curve.batch_size", f"must be >= 1, got {c.batch_size}")
    if c.batch_size > smallest:
        _fail("metrics.curve.batch_size", f"{c.batch_size} is larger than the smallest training set ({smallest}); "
                                          f"use a curve batch size <= {smallest}")
    _validate_pairs(m.pairs, cfg.seeds)
    _check_sizes(cfg)

    # Resources
    r = cfg.resources
    if not r.cpu > 0:
        _fail("resources.cpu", f"each trial needs CPUs > 0, got {r.cpu}")
    if r.gpu != AUTO_GPU:
        _check_gpu("resources.gpu", r.gpu)
    if not r.auto_gpu_share > 0:
        _fail("resources.auto_gpu_share", f"a trial on a GPU cluster needs a GPU share > 0, got {r.auto_gpu_share} "
                                          f"(for CPU-only trials set resources.gpu: 0)")
    _check_gpu("resources.auto_gpu_share", r.auto_gpu_share)
    load_floats = {float(v) for v in cfg.load.values}
    for k, v in r.gpu_by_load.items():
        kv = _as_number(k)
        if kv is None or float(kv) not in load_floats:
            _fail(f"resources.gpu_by_load.{k}", f"{k!r} is not a load value of the sweep ({list(cfg.load.values)})")
        number = _as_number(v)
        if number is None or not math.isfinite(number):
            _fail(f"resources.gpu_by_load.{k}", f"must be a number of GPUs, got {_show(v)}")
        _check_gpu(f"resources.gpu_by_load.{k}", float(number))
    for k, v in r.cpu_by_load.items():
        kv = _as_number(k)
        if kv is None or float(kv) not in load_floats:
            _fail(f"resources.cpu_by_load.{k}", f"{k!r} is not a load value of the sweep ({list(cfg.load.values)})")
        number = _as_number(v)
        if number is None or not math.isfinite(number) or not number > 0:
            _fail(f"resources.cpu_by_load.{k}", f"must be a number of CPUs > 0, got {_show(v)}")
    if r.pair_cpu is not None and not r.pair_cpu > 0:
        _fail("resources.pair_cpu", f"must be > 0, got {r.pair_cpu}")
    if r.pair_gpu is not None:
        _check_gpu("resources.pair_gpu", r.pair_gpu)

    # Run
    if cfg.run.max_concurrent is not None and cfg.run.max_concurrent < 1:
        _fail("run.max_concurrent", f"must be >= 1 or null (automatic), got {cfg.run.max_concurrent}")
    if cfg.run.max_failures < 0:
        _fail("run.max_failures", f"must be >= 0, got {cfg.run.max_failures}")
    if cfg.run.object_store_mb < 80:
        _fail("run.object_store_mb", f"Ray needs at least 80 MB of object store, got {cfg.run.object_store_mb}")


def _check_sgd(section: str, settings) -> None:
    """The SGD settings shared by the training and the curve: lr, momentum, weight_decay."""
    if not settings.lr > 0:
        _fail(f"{section}.lr", f"must be > 0, got {settings.lr}")
    if not 0 <= settings.momentum < 1:
        _fail(f"{section}.momentum", f"must lie in [0, 1), got {settings.momentum}")
    if settings.weight_decay < 0:
        _fail(f"{section}.weight_decay", f"must be >= 0, got {settings.weight_decay}")


def _gpu_request(value, path: str):
    """``auto`` or a number of GPUs."""
    if isinstance(value, str) and value.strip().lower() == AUTO_GPU:
        return AUTO_GPU
    number = None if isinstance(value, bool) else _as_number(value)
    if number is None or not math.isfinite(number):
        hint = f"; did you mean {AUTO_GPU!r}?" if isinstance(value, str) and difflib.get_close_matches(
            value.lower(), [AUTO_GPU], n=1) else ""
        raise ConfigError(f"{path} must be auto (GPUs when the cluster has them) or a number of GPUs per trial, "
                          f"got {_show(value)}{hint}")
    return float(number)


def _check_gpu(path: str, gpu: float) -> None:
    if gpu < 0:
        _fail(path, f"must be >= 0, got {gpu}")
    if gpu > 1 and not float(gpu).is_integer():
        _fail(path, f"more than one GPU must be a whole number, got {gpu} (fractions are for packing: <= 1)")


def _validate_pairs(pairs, seeds) -> None:
    if isinstance(pairs, str):
        if pairs not in PAIR_MODES:
            _fail("metrics.pairs", _choice(pairs, PAIR_MODES) + " or a list of seed pairs [[0, 1], ...]")
        return
    if not isinstance(pairs, (list, tuple)):
        _fail("metrics.pairs", f"must be auto, all, ring or a list of seed pairs [[0, 1], ...], got {_show(pairs)}")
    for i, p in enumerate(pairs):
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) for s in p)
        ):
            _fail(f"metrics.pairs[{i}]", f"a pair is two seeds, e.g. [0, 1], got {_show(p)}")
        if p[0] == p[1]:
            _fail(f"metrics.pairs[{i}]", f"a pair needs two different seeds, got {list(p)}")
        missing = [s for s in p if s not in seeds]
        if missing:
            _fail(f"metrics.pairs[{i}]", f"seed(s) {missing} are not in seeds {list(seeds)}")


# Caps on sizes, far above any real sweep, so that a typo (a 2-million-model grid, 1e9 CKA probes) is one
# clear error naming the field instead of a driver that grows to gigabytes or a job that never ends.
MAX_MODELS = 100_000  # 110x the largest paper grid (910 models); the driver holds ~1 kB per job (2 M: 1.6 GB)
MAX_PAIRS = 100_000  # as many pair jobs (the paper grids have one per model)
SIZE_CAPS = (
    # (field, cap, why)
    ("training.epochs", 100_000, "the paper trains 200 epochs"),
    ("metrics.curve.epochs", 100_000, "the paper trains a curve 200 epochs"),
    ("metrics.curve.points", 1_000, "the authors used 5; each point is a BatchNorm pass and a full evaluation"),
    ("metrics.cka_probes", 100_000, "the authors used 768; the probes and both models' outputs are held in memory"),
    ("metrics.hessian_eigen_max_iter", 1_000, "the authors used 100; Lanczos keeps one vector of the "
                                              "model's size per iteration"),
    ("metrics.hessian_trace_max_probes", 100_000, "the authors used 100"),
    ("run.max_failures", 100, "a job that failed 100 times will fail again"),
    ("run.object_store_mb", 1_000_000, "1 TB; trained weights travel through the run directory, not Ray"),
)


def pairs_per_cell(mode, n_seeds: int) -> int:
    """len(seed_pairs(mode, seeds)) for n_seeds seeds, without building the list (a huge seed list would)."""
    if mode == "auto":
        mode = "all" if n_seeds <= 3 else "ring"
    if mode == "all":
        return n_seeds * (n_seeds - 1) // 2
    if mode == "ring":
        return 0 if n_seeds < 2 else 1 if n_seeds == 2 else n_seeds
    return len({(min(a, b), max(a, b)) for a, b in mode})


def _check_sizes(cfg: SweepConfig) -> None:
    cells = len(cfg.load.values) * len(cfg.temperature.values)
    models = cells * len(cfg.seeds)
    if models > MAX_MODELS:
        _fail("seeds" if len(cfg.seeds) > cells else "load.values",
              f"the grid has {models:,} models ({len(cfg.load.values)} loads x {len(cfg.temperature.values)} "
              f"temperatures x {len(cfg.seeds)} seeds), more than the {MAX_MODELS:,} this tool runs in one sweep; "
              f"split it into several run directories")
    pairs = cells * pairs_per_cell(cfg.metrics.pairs, len(cfg.seeds))
    if pairs > MAX_PAIRS:
        _fail("metrics.pairs", f"the grid has {pairs:,} seed pairs, more than {MAX_PAIRS:,}; use pairs: ring "
                               f"(one pair per seed) or fewer seeds")
    for path, cap, why in SIZE_CAPS:
        value = cfg
        for part in path.split("."):
            value = getattr(value, part)
        if value > cap:
            _fail(path, f"{value:,} is beyond any real sweep (at most {cap:,}: {why})")


def config_warnings(cfg: SweepConfig) -> list[str]:
    """What a valid config will not give, for `validate` and `run` to say before any work."""
    if cfg.pair_keys():
        return []
    why = "one seed" if len(cfg.seeds) < 2 else "metrics.pairs connects none of them"
    return [f"no seed pairs ({why}): the models are trained and measured, but there is no mode connectivity, so no "
            f"cell gets a phase; give at least two seeds for phases"]


MAX_WIDTH = 1_000_000  # beyond any trainable width (and torch's size arithmetic overflows far beyond it)
MAX_MODEL_OPTION = 10_000  # no numeric model option (depth, ...) of a trainable network comes near this
MAX_PARAMETERS = 10**10  # 40 GB of float32 weights (x3 with gradients and momentum): beyond one accelerator


def _check_model_builds(cfg: SweepConfig, width: int, input_shape: tuple, num_classes: int,
                        max_width: Optional[int] = None) -> None:
    """The model builds with its options at ``width`` and, when given, is not absurdly large at ``max_width``.

    Built on the meta device (shapes only). Huge options are refused before building: building a depth of
    10^9 layers takes forever even without weights, and a huge width overflows torch's size arithmetic.
    """
    import torch

    from workloads.models import build_model, count_parameters

    for name, value in cfg.workload.model_args.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MODEL_OPTION:
            _fail(f"workload.model_args.{name}", f"{value:g} is beyond any network this tool trains "
                                                 f"(at most {MAX_MODEL_OPTION})")
    for w in sorted({width, max_width or width}):
        try:
            with torch.device("meta"):  # checks options and shapes without allocating (or initialising) weights
                model = build_model(cfg.workload.model, width=w, num_classes=num_classes, input_shape=input_shape,
                                    **cfg.workload.model_args)
                params = count_parameters(model)
        except (TypeError, ValueError) as exc:
            _fail("workload.model_args", _one_line(exc))
        except (RuntimeError, OverflowError, MemoryError) as exc:  # torch's size arithmetic overflowed
            _fail("load.values" if cfg.load.name == "width" else "workload.width",
                  f"model {cfg.workload.model!r} cannot be built at width {w} ({_one_line(exc)[:200]})")
        if params > MAX_PARAMETERS:
            _fail("load.values" if cfg.load.name == "width" else "workload.width",
                  f"model {cfg.workload.model!r} at width {w} has {params:.3g} parameters ({params * 4 / 1e9:.0f} "
                  f"GB of weights), more than any accelerator holds; lower the width")


def _choice(value, choices) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"unknown value {value!r}{hint} Choose one of: {', '.join(choices)}"


# ---------------------------------------------------------------------------------------------------------
# Built-in listing


def describe_builtin(name: str) -> tuple[str, int, int]:
    """(one-line description, models, pairs) of a built-in config, without validation."""
    raw, _ = read_raw(name)
    cfg = _build(SweepConfig, raw, "")
    return (cfg.description.strip().splitlines() or [""])[0], len(cfg.model_keys()), len(cfg.pair_keys())
