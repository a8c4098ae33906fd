"""The sweep config's schema: frozen dataclasses, one per YAML section, and the views derived from them
(the grid's keys, the resources of a job, the saved YAML form, the config hash).

Field comments are the documentation of the YAML keys; defaults are the method's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

LOAD_AXES = ("width", "train_fraction", "label_noise")
TEMPERATURE_AXES = ("batch_size", "learning_rate", "weight_decay")
PAIR_MODES = ("auto", "all", "ring")
SCHEDULES = ("constant", "step")
LR_SCALINGS = ("none", "linear")
HESSIAN_BACKENDS = ("lanczos", "pyhessian")

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


def pairs_per_cell(mode, n_seeds: int) -> int:
    """len(seed_pairs(mode, seeds)) for n_seeds seeds, without building the list (a huge seed list would)."""
    if mode == "auto":
        mode = "all" if n_seeds <= 3 else "ring"
    if mode == "all":
        return n_seeds * (n_seeds - 1) // 2
    if mode == "ring":
        return 0 if n_seeds < 2 else 1 if n_seeds == 2 else n_seeds
    return len({(min(a, b), max(a, b)) for a, b in mode})



def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj

