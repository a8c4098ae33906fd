"""What a run learned from its workload's code, recorded as data (RUN_DIR/facts.json) for the commands that only read.

The cost model (orchestrator/planning/cost.py: the order of the model jobs, the ETA's weights, auto cohorts) needs the
training-set size, the input shape, the class count and each width's parameter count; the plan needs the names
of the run's added metrics. Learning them means calling the code the config names (the user's dataset function,
model function, metrics.extra modules): only `run` and `resume` do that (``measure``), and they record the answer
in the run directory. `status` and the other read-only commands read it back as data (``recorded``: JSON through
analysis.run_files, every field checked, nothing executed), or, for runs made before it existed, use a cost that
needs no code at all (``assumed``: the built-in datasets' known sizes, a width-squared parameter count).

    measure(cfg) -> RunFacts                 calls the config's code (run, resume, validate only)
    record(run_dir, facts)                   RUN_DIR/facts.json
    recorded(run_dir, cfg) -> RunFacts|None  read back as data; None when absent, unusable or of another workload
    assumed(cfg) -> RunFacts                 no code imported or called
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from analysis.run_files import RunFileError, read_run_file
from analysis.tables import join
from orchestrator.rundir import storage
from orchestrator.config import SweepConfig, cell_knob_values
from workloads import knobs
from workloads.dataset_facts import DATASET_FACTS

FACTS_FILE = "facts.json"
FORMAT, VERSION = "landscape-run-facts", 1
ASSUMED_TRAIN_SIZE = 1000  # examples of a dataset whose size is not known without its code (ratios only matter)
MAX_INT = 10**12  # no size, shape entry or parameter count of a real run comes near this
MAX_ENTRIES = 10_000  # widths, shape entries, metric names


@dataclass(frozen=True)
class RunFacts:
    train_size: int  # examples of the full training set
    input_shape: tuple  # one example's shape
    num_classes: int
    parameters: dict = field(default_factory=dict)  # model width -> parameter count (empty: not known)
    added_metrics: tuple = ()  # names of the run's added metrics (the package's own and metrics.extra's)
    unresolved_metrics: tuple = ()  # metrics.extra entries whose metric names are not known (never imported)
    source: str = "measured"  # measured | recorded | assumed
    # Why no backend trains two members of the model as one (workloads/cohort_net.py resolve_backend, e.g. dropout
    # in its forward pass), so its cohorts have one member each (the plain backend); "" when they need not.
    one_member_cohorts: str = ""

    def params(self, width: int) -> float:
        """The parameter count at ``width``: measured or recorded, else scaled from the nearest known width as
        width squared (hidden layers dominate), else width squared (the cost model needs only ratios)."""
        if width in self.parameters:
            return float(self.parameters[width])
        if self.parameters:
            near = min(self.parameters, key=lambda w: abs(w - width))
            return self.parameters[near] * (width / near) ** 2
        return float(width) ** 2


def grid_widths(cfg: SweepConfig) -> list[int]:
    """The model widths of the grid's cells (what the knobs set), sorted."""
    widths = {int(knobs.applied(cell_knob_values(cfg, lv, tv))["model.width"])
              for lv in cfg.load.values for tv in cfg.temperature.values}
    return sorted(widths)


def measure(cfg: SweepConfig) -> RunFacts:
    """The facts of ``cfg``'s workload, by calling the code it names (a user's dataset function is called once
    per process, workloads.data caches it). For `run` and `resume` (after its notice) and `validate` only."""
    from orchestrator.config import workload_facts
    from workloads.metric_discovery import run_metrics
    from workloads.models import count_parameters, shape_model

    train, shape, classes = workload_facts(cfg.workload)
    parameters = {}
    for width in grid_widths(cfg):
        try:  # shapes only: no memory, no initialisation (ResNet18 k=128 is 45M params)
            parameters[width] = count_parameters(shape_model(cfg.workload.model, width=width, num_classes=classes,
                                                             input_shape=tuple(shape), **cfg.workload.model_args))
        except Exception:  # a cost estimate: a width that does not build is sized by params()
            continue
    added = tuple(spec.name for spec in run_metrics(cfg.metrics.extra).added)
    return RunFacts(int(train), tuple(int(d) for d in shape), int(classes), parameters, added,
                    one_member_cohorts=trains_one_member_per_cohort(cfg))


def trains_one_member_per_cohort(cfg: SweepConfig) -> str:
    """Why ``cfg``'s model trains one member per cohort, or "" when it need not: the engine's backend choice
    for two members of the grid's first cell fails where one member works (the plain backend), e.g. a model
    that draws random numbers in its forward pass (dropout). Any other failure is left to the jobs, which report
    it with the model's own error."""
    from orchestrator.planning.cells import cell_spec
    from workloads.cohort_net import resolve_backend

    cell = cell_spec(cfg, cfg.load.values[0], cfg.temperature.values[0])
    data = cell.data()
    model = cell.build_model(cfg.seeds[0], data)
    try:
        resolve_backend("auto", model, 2, data.train_x[:2])
        return ""
    except ValueError as exc:
        why = str(exc)
    try:
        return why if resolve_backend("auto", model, 1, data.train_x[:2]) == "plain" else ""
    except ValueError:
        return ""


def assumed(cfg: SweepConfig) -> RunFacts:
    """Facts without importing or calling anything the config names: a built-in dataset's known sizes (else
    ASSUMED_TRAIN_SIZE), width-squared parameter counts, the package's own added metrics (workloads/extra_metrics,
    the tool's code) and metrics.extra left unresolved."""
    from workloads.metric_discovery import package_metrics

    known = DATASET_FACTS.get(cfg.workload.dataset)
    train, shape, classes = (known.train_size, known.input_shape, known.num_classes) if known else \
        (ASSUMED_TRAIN_SIZE, (1,), 2)
    return RunFacts(train, tuple(shape), classes, {}, tuple(s.name for s in package_metrics()),
                    tuple(cfg.metrics.extra), source="assumed")


def facts_uri(run_dir: str) -> str:
    return join(run_dir, FACTS_FILE)


def to_json(facts: RunFacts, cfg: SweepConfig) -> bytes:
    doc = {"format": FORMAT, "version": VERSION, "dataset": cfg.workload.dataset, "model": cfg.workload.model,
           "train_size": facts.train_size, "input_shape": list(facts.input_shape), "num_classes": facts.num_classes,
           "parameters": {str(w): p for w, p in sorted(facts.parameters.items())},
           "added_metrics": list(facts.added_metrics)}
    return (json.dumps(doc, indent=1) + "\n").encode()


def record(run_dir: str, facts: RunFacts, cfg: SweepConfig) -> None:
    """Write ``facts`` (measured) to RUN_DIR/facts.json."""
    storage.write_bytes(facts_uri(run_dir), to_json(facts, cfg))


def recorded(run_dir: str, cfg: SweepConfig) -> RunFacts | None:
    """RUN_DIR/facts.json read back as data (read_run_file's checks, then every field's type and range), for
    ``cfg``'s workload; None when it is absent, unusable or recorded for another dataset or model."""
    try:
        doc = json.loads(read_run_file(facts_uri(run_dir), "json", root=None if storage.is_uri(run_dir) else run_dir))
    except (RunFileError, OSError, ValueError, RecursionError):
        return None
    return from_json(doc, cfg)


def from_json(doc, cfg: SweepConfig) -> RunFacts | None:
    """The RunFacts of a parsed facts.json, None unless every field is what ``to_json`` writes."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        return None
    if doc.get("dataset") != cfg.workload.dataset or doc.get("model") != cfg.workload.model:
        return None
    shape, params, metrics = doc.get("input_shape"), doc.get("parameters"), doc.get("added_metrics")
    if not (_count(doc.get("train_size")) and _count(doc.get("num_classes"))
            and isinstance(shape, list) and 0 < len(shape) <= 8 and all(_count(d) for d in shape)
            and isinstance(params, dict) and len(params) <= MAX_ENTRIES
            and all(isinstance(w, str) and w.isdigit() and _count(int(w)) and _count(p) for w, p in params.items())
            and isinstance(metrics, list) and len(metrics) <= MAX_ENTRIES
            and all(isinstance(m, str) and 0 < len(m) <= 200 for m in metrics)):
        return None
    return RunFacts(doc["train_size"], tuple(shape), doc["num_classes"], {int(w): p for w, p in params.items()},
                    tuple(metrics), source="recorded")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_INT


def for_reading(run_dir: str, cfg: SweepConfig) -> RunFacts:
    """What a read-only command uses: the recorded facts, else the assumed ones (never any code)."""
    return recorded(run_dir, cfg) or assumed(cfg)
