"""What a sweep's Tune trials show to Tune's own tools (ExperimentAnalysis, TensorBoard, W&B, MLflow): their
names, one label per member of a trial, each member's hyperparameters and its final metrics.

A trial trains or measures a cohort of models or pairs, of one or more (orchestrator/planning/cohorts.py), so a trial is
named by what it computes, the knob values and seeds of its members:

    model width=64,batch_size=32,seeds=0-4        pair width=64,batch_size=32,seeds=0-1
    model width=64,batch_size=32,seed=3           pair width=64,batch_size=32,pairs=0-1+0-2+1-2

(values that differ between members are joined with '+'; consecutive seeds are a range). Its folder in
RUN_DIR/tune/<experiment>/ is the same text with '_' for the space; a name longer than MAX_DIRNAME keeps its
start and ends in a hash of the whole, and a folder name already taken in the experiment gets a hash of the
job, so every trial has its own folder.

Each member's numbers are reported under its own tag path, ``<member label>/<metric>``: the label is the seed
(``seed_3``, a pair's ``seeds_0-1``), preceded by the knob values that differ between the trial's members
(``lr_0.05/seed_3``), so TensorBoard, W&B and MLflow show one curve per model. Labels use only characters that
MLflow accepts in a metric name (letters, digits, '_', '-', '.', '/').
"""

from __future__ import annotations

import hashlib
import math
import re

from analysis.tables import format_value
from orchestrator.config import SweepConfig, cell_knob_values
from orchestrator.planning.jobs import job_keys, members
from workloads import knobs

MAX_DIRNAME = 120  # characters of a trial's folder name (file systems allow 255 bytes; paths stay readable)
UNSAFE_IN_DIRNAME = re.compile(r"[^A-Za-z0-9._=+,~-]")

# A member's final numbers, as its job reports them (the models / pairs row's column names).
FINAL_MODEL_METRICS = ("test_acc", "test_loss", "train_loss", "train_acc", "hessian_top_eigenvalue", "hessian_trace")
FINAL_PAIR_METRICS = ("mode_connectivity", "cka", "l2_distance")


def seed_ranges(seeds) -> str:
    """Sorted seeds as ranges: [0, 1, 2, 4] -> "0-2+4"."""
    seeds = sorted({int(s) for s in seeds})
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return "+".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _values_text(values) -> str:
    return "+".join(format_value(v) for v in sorted({float(v) for v in values}))


def _pair_text(a, b) -> str:
    a, b = sorted((int(a), int(b)))
    return f"{a}-{b}"


def trial_name(cfg: SweepConfig, job: dict) -> str:
    """What the trial computes, e.g. "model width=64,batch_size=32,seeds=0-4" (see the module doc)."""
    found = members(job)
    parts = [f"{cfg.load.name}={_values_text(m[0] for m in found)}",
             f"{cfg.temperature.name}={_values_text(m[1] for m in found)}"]
    if job["kind"] == "model":
        seeds = {int(m[2]) for m in found}
        parts.append(f"seed={seed_ranges(seeds)}" if len(seeds) == 1 else f"seeds={seed_ranges(seeds)}")
    else:
        pairs = sorted({_pair_text(m[2], m[3]) for m in found})
        parts.append(f"seeds={pairs[0]}" if len(pairs) == 1 else f"pairs={'+'.join(pairs)}")
    return f"{job['kind']} {','.join(parts)}"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def dirname_of(name: str) -> str:
    """A trial name as a folder name: safe characters only, at most MAX_DIRNAME of them."""
    safe = UNSAFE_IN_DIRNAME.sub("_", name)
    if len(safe) > MAX_DIRNAME:
        safe = f"{safe[:MAX_DIRNAME - 9]}~{_short_hash(name)}"
    return safe


class TrialNamer:
    """Tune's trial_name_creator (``name``) and trial_dirname_creator (``dirname``) of one experiment: each
    trial's name and folder are made once (Tune may ask again) and no two trials share a folder."""

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg
        self.dirnames: dict[str, str] = {}  # trial id -> its folder name
        self.taken: set[str] = set()

    def name(self, trial) -> str:
        return trial_name(self.cfg, trial.config)

    def dirname(self, trial) -> str:
        if trial.trial_id not in self.dirnames:
            folder = dirname_of(self.name(trial))
            if folder in self.taken:  # another job of the same name: its own key tells them apart
                folder = dirname_of(f"{folder}~{_short_hash(trial.config['cohort'] + trial.trial_id)}")
            self.taken.add(folder)
            self.dirnames[trial.trial_id] = folder
        return self.dirnames[trial.trial_id]


def member_labels(cfg: SweepConfig, job: dict) -> list[str]:
    """The tag path of each member of ``job`` (in ``members(job)`` order): ``seed_3`` / ``seeds_0-1``, after the
    knob values that differ between the job's members (``width_64/seed_3``)."""
    found = members(job)
    varying = [(name, i) for i, name in enumerate((cfg.load.name, cfg.temperature.name))
               if len({float(m[i]) for m in found}) > 1]
    labels = []
    for m in found:
        path = [f"{name}_{format_value(m[i])}" for name, i in varying]
        path.append(f"seed_{int(m[2])}" if job["kind"] == "model" else f"seeds_{_pair_text(m[2], m[3])}")
        labels.append("/".join(path))
    return labels


def member_hparams(cfg: SweepConfig, job: dict) -> dict[str, dict]:
    """{member label: its hyperparameters}: the two knobs' values, the seed(s), and the training settings the
    cell uses (lr, batch size, weight decay and epochs; a pair's curve epochs and lr); what a trial's config
    adds for TensorBoard's HParams, W&B's config and MLflow's params."""
    hparams = {}
    for label, m in zip(member_labels(cfg, job), members(job)):
        values = {cfg.load.name: float(m[0]), cfg.temperature.name: float(m[1])}
        if job["kind"] == "model":
            applied = knobs.applied(cell_knob_values(cfg, m[0], m[1]))
            training = cfg.training
            values.update(seed=int(m[2]), lr=float(applied.get("training.lr", training.lr)),
                          batch_size=int(applied.get("training.batch_size", training.batch_size)),
                          weight_decay=float(applied.get("training.weight_decay", training.weight_decay)),
                          epochs=int(training.epochs))
        else:
            curve = cfg.metrics.curve
            a, b = sorted((int(m[2]), int(m[3])))
            values.update(seed_a=a, seed_b=b, curve_epochs=int(curve.epochs), curve_lr=float(curve.lr))
        hparams[label] = values
    return hparams


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def final_values(kind: str, row: dict) -> dict:
    """A model's (``kind`` "model") or pair's final numbers from its row, as its job's result carries them."""
    return {name: row.get(name) for name in (FINAL_MODEL_METRICS if kind == "model" else FINAL_PAIR_METRICS)}


def final_member_metrics(cfg: SweepConfig, job: dict, result: dict) -> dict:
    """The final numbers of each member a job computed, ``{"<label>/<metric>": value}`` (the finite ones of
    FINAL_MODEL_METRICS / FINAL_PAIR_METRICS), from the job's result (its ``members``)."""
    label_of = dict(zip(job_keys(cfg, job), member_labels(cfg, job)))
    names = FINAL_MODEL_METRICS if job["kind"] == "model" else FINAL_PAIR_METRICS
    metrics = {}
    for member in result.get("members") or ():
        label = label_of.get(member.get("key"))
        if label is None:
            continue
        metrics.update({f"{label}/{name}": float(member[name]) for name in names if _finite(member.get(name))})
    return metrics
