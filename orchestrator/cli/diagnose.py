"""`landscape diagnose`: place a practitioner's own trained models on the taxonomy, without Ray and without a sweep.

    run_diagnosis(DiagnoseRequest) -> dict      the --json structure (DIAGNOSIS_SCHEMA); ``text`` renders it

The steps, each with the sweep's own code:
1. metric settings: the ``metrics`` section of a sweep config (``--config``; default the built-in ``demo``, whose
   curve and Hessian settings were chosen for the small models a CPU trains), with ``--set metrics.*`` on top,
   validated by orchestrator/config/ and turned into the workloads' settings by planning/cells.py cell_spec; which pairs
   are connected follows ``metrics.pairs`` (auto: all pairs up to 3 checkpoints, else a ring), the checkpoints
   numbered from 0 in the order given;
2. the data (``--data``) and the model (``--model`` with ``--width`` / ``--model-arg``), built-in or the user's
   code (workloads/diagnosis.py);
3. the checkpoints: state dicts saved with torch.save (loaded with ``weights_only=True``) or safetensors files;
   nothing in them is executed, and each must fit the model exactly (names and shapes);
4. per-model and per-pair measurements (workloads/diagnosis.py), then the placement (analysis/placement.py).

Every bad input raises DiagnoseError, whose message names the problem and the fix; the CLI prints it as one
``error:`` line (exit 2) before anything is measured.

The --json structure (``schema`` = DIAGNOSIS_SCHEMA):
    phase, phase_reason, meaning, confidence, confidence_note      the call (analysis.placement.Placement)
    decisions: [{transition, quantity, unit, mean, std, n, threshold, threshold_source, outcome,
                 standard_errors, confidence}]                     the numbers that decided it
    guidance: [str]                                                the paper's advice for the phase
    metrics: {name: {mean, std, n, unit}}; members: {models, models_ok, pairs, pairs_ok, complete, missing}
    rules: [{name, value, default, unit, doc}]                     the phase rules used (thresholds absolute)
    models: [{checkpoint, status, error, train_loss, ..., hessian_trace, num_params, metrics_seconds}]
    pairs: [{a, b, checkpoint_a, checkpoint_b, mode_connectivity, t_star, cka, cka_status, l2_distance, status,
             error, curve_epochs, curve_points, curve_t, curve_train_error, seconds}]
    workload: {model, width, model_args, dataset, data_root, data_seed, data_args, train_size, test_size,
               num_classes}
    settings: {source, metrics (the resolved metrics section), device, threads}; seconds; landscape_version
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.config import ConfigError

DIAGNOSIS_SCHEMA = "landscape.diagnose/1"
DEFAULT_METRICS_CONFIG = "demo"  # its curve (40 epochs at lr 0.2) connects the demo's MLPs; see its comments
# The config the metric settings are validated in: only its metrics section is the user's. Its dataset is the
# largest built-in that needs no files (50,000 training points) so that the sweep's check "curve batch <= the
# smallest training set" never refuses a setting the user's data allows; check_fits then checks the real data.
SCAFFOLD = {
    "name": "diagnose",
    "workload": {"dataset": "synthetic-cifar", "model": "mlp", "width": 1},
    "load": {"name": "width", "values": [1]},
    "temperature": {"name": "batch_size", "values": [1]},
    "training": {"epochs": 1},
}
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts often nest the weights
SAFETENSORS_SUFFIX = ".safetensors"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6


class DiagnoseError(ConfigError):
    """Bad input to `landscape diagnose`; the message names the problem and the fix."""


@dataclass(frozen=True)
class DiagnoseRequest:
    checkpoints: tuple[str, ...]
    model: str
    dataset: str
    width: int = 64
    model_args: dict = field(default_factory=dict)
    data_root: str | None = None
    data_seed: int = 0
    data_args: dict = field(default_factory=dict)
    config: str | None = None  # a sweep config (built-in name or YAML path) for the metric settings
    overrides: tuple[str, ...] = ()  # --set metrics.dotted.key=value
    rules: dict = field(default_factory=dict)  # --rule name=value (analysis.phases.PhaseRules)
    device: str = "auto"
    # torch's CPU threads while measuring. 1, as a sweep job with resources.cpu: 1: small models gain nothing from
    # more threads and can lose much (docs/benchmarks.md, "Measurements behind constants").
    threads: int = 1


@dataclass(frozen=True)
class MetricSettings:
    """The workloads' settings of a sweep's metrics section, for a group of ``n`` checkpoints."""

    hessian: object  # workloads.experiment.HessianSettings
    curve: object  # workloads.metrics.connectivity.CurveConfig
    cka_probes: int
    cka_probe_seed: int
    pairs: tuple  # ((a, b), ...) checkpoint indices
    source: str  # where they came from, for the report
    section: dict  # the resolved metrics section (config.yaml's form)
    cka_probe_maker: str = "mixup"  # workloads/metrics/probes.py
    cka_probe_pool: str = "train"


def metric_settings(config: str | None, overrides, n_checkpoints: int) -> MetricSettings:
    """The metric settings of ``config`` (default DEFAULT_METRICS_CONFIG) with ``--set metrics.*`` overrides."""
    from orchestrator.planning.cells import cell_spec
    from orchestrator.config import apply_overrides, parse_config, read_raw
    from orchestrator.config.loading import with_legacy_values

    for item in overrides:
        key = str(item).split("=", 1)[0].strip()
        if not key.startswith("metrics."):
            raise DiagnoseError(f"--set {key}: diagnose measures models that are trained already; only metrics.* "
                                f"settings apply (e.g. --set metrics.curve.epochs=20)")
    source = config or DEFAULT_METRICS_CONFIG
    raw, where = read_raw(source)
    section = with_legacy_values(raw).get("metrics") or {}
    scaffold = {**SCAFFOLD, "seeds": list(range(n_checkpoints)), "metrics": section}
    try:
        cfg = parse_config(apply_overrides(scaffold, overrides), check_data=False)
    except ConfigError as exc:
        raise DiagnoseError(f"{where}: {exc}" if config else str(exc)) from None
    cell = cell_spec(cfg, cfg.load.values[0], cfg.temperature.values[0])
    described = f"the metrics of {'the built-in config ' + source if source != where else where}"
    if overrides:
        described += " with " + ", ".join(overrides)
    return MetricSettings(cell.hessian, cell.curve, cell.cka.probes, cell.cka.probe_seed, tuple(cfg.seed_pairs()),
                          described, cfg.to_dict()["metrics"], cell.cka.probe_maker, cell.cka.probe_pool)


def check_fits(settings: MetricSettings, data) -> None:
    """The settings' sizes against the user's training set (the sweep checks them against its own data)."""
    n = data.train_size
    if settings.curve.batch_size > n:
        raise DiagnoseError(f"metrics.curve.batch_size {settings.curve.batch_size} is larger than the training set "
                            f"({n} examples; batches are never shrunk): --set metrics.curve.batch_size={n} or less")
    if n < 2:
        raise DiagnoseError(f"the training set has {n} example(s); the metrics need at least 2")


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: read without executing anything


def read_state_dict(path: str) -> dict:
    """The state dict (name -> tensor) in ``path``: torch.save's formats through ``torch.load(weights_only=True)``,
    or a safetensors file. A dict nesting it under one of STATE_DICT_KEYS is unwrapped. DiagnoseError otherwise."""
    import torch

    from orchestrator.rundir.storage import why_refused

    if not os.path.exists(path):
        raise DiagnoseError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise DiagnoseError(f"checkpoint {path} is a folder; give the state-dict file (.pt or .safetensors)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DiagnoseError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    if path.endswith(SAFETENSORS_SUFFIX) or _looks_like_safetensors(data):
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            state = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise DiagnoseError(f"checkpoint {path} is not a readable safetensors file "
                                f"({' '.join(str(exc).split())[:120]})") from None
    else:
        try:
            with warnings.catch_warnings():  # torch warns about a crafted file's pickle protocol before refusing it
                warnings.simplefilter("ignore")
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # refused globals, truncated, not a torch file: torch's own text is a page long
            raise DiagnoseError(f"checkpoint {path} cannot be loaded safely ({why_refused(exc)})") from None
    return _unwrap(state, path)


def _looks_like_safetensors(data: bytes) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON ("{...")."""
    if len(data) < 10 or data[:4] == _ZIP_MAGIC:
        return False
    size = int.from_bytes(data[:8], "little")
    return 2 <= size <= len(data) - 8 and data[8:9] == b"{"


def _unwrap(state, path: str) -> dict:
    import torch

    if isinstance(state, dict):
        nested = [k for k in STATE_DICT_KEYS if isinstance(state.get(k), dict)]
        if nested and not all(isinstance(v, torch.Tensor) for v in state.values()):
            state = state[nested[0]]
    if not isinstance(state, dict) or not state:
        raise DiagnoseError(f"checkpoint {path} holds a {type(state).__name__ if state != {} else 'empty dict'}, "
                            f"not a state dict (parameter names -> tensors); save it with "
                            f"torch.save(model.state_dict(), path)")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise DiagnoseError(f"checkpoint {path} is not a state dict: {', '.join(bad[:3])} "
                            f"{'is' if len(bad) == 1 else 'are'} not tensors; save it with "
                            f"torch.save(model.state_dict(), path)")
    return state


def fit_checkpoint(model, state: dict, path: str, described: str) -> None:
    """Load ``state`` into ``model`` when names and shapes match exactly; DiagnoseError saying what differs."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} is {found[k]} in the file, {expected[k]} in the model" for k in expected
              if k in found and found[k] != expected[k]]
    problems = []
    if shapes:
        problems.append(shapes[0] + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model are not in the file (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) in the file are not in the model (e.g. {unexpected[0]})")
    if problems:
        raise DiagnoseError(f"checkpoint {path} is not a {described}: {'; '.join(problems)}; pass the --model, "
                            f"--width and --model-arg it was trained with")
    model.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------------
# The diagnosis


def run_diagnosis(request: DiagnoseRequest, progress: Callable[[str], None] | None = None) -> dict:
    """Measure the checkpoints and place them; returns the --json structure (see the module docstring)."""
    import torch

    if request.threads < 1:
        raise DiagnoseError(f"--threads {request.threads}: give at least 1")
    before = torch.get_num_threads()
    torch.set_num_threads(int(request.threads))
    try:
        return _diagnose(request, progress)
    finally:
        torch.set_num_threads(before)


def _diagnose(request: DiagnoseRequest, progress: Callable[[str], None] | None) -> dict:
    from analysis.phases import PhaseRules, rules_for_mc_unit
    from analysis.placement import json_ready, place_group
    from analysis.schemas import landscape_version
    from workloads.settings import MC_ON

    started = time.perf_counter()
    say = progress or (lambda text: None)
    paths = list(request.checkpoints)
    if len(paths) < 2:
        raise DiagnoseError(f"{len(paths)} checkpoint given; the taxonomy compares independently trained models "
                            f"(mode connectivity, CKA): give two or more checkpoints of one architecture, trained "
                            f"with different seeds")
    try:
        rules = PhaseRules.from_mapping(request.rules)
    except ValueError as exc:
        raise DiagnoseError(f"--rule: {exc}") from None
    settings = metric_settings(request.config, request.overrides, len(paths))
    _check_distinct(paths)

    from workloads.diagnosis import build_named_model, load_named_dataset, measure_model, measure_pair, resolve_device
    from workloads.metrics.probes import make_probes, probe_pool

    try:
        device = resolve_device(request.device)
        data = load_named_dataset(request.dataset, root=request.data_root, seed=request.data_seed,
                                  dataset_args=request.data_args)
    except (LookupError, ValueError, TypeError, OSError) as exc:
        raise DiagnoseError(_one_line(exc)) from None
    check_fits(settings, data)
    described = _describe_model(request)
    states = [read_state_dict(p) for p in paths]
    models = []
    for path, state in zip(paths, states):
        try:
            model = build_named_model(request.model, width=request.width, num_classes=data.num_classes,
                                      input_shape=data.input_shape, model_args=request.model_args)
        except (LookupError, ValueError, TypeError) as exc:
            raise DiagnoseError(_one_line(exc)) from None
        fit_checkpoint(model, state, path, described)
        models.append(model.to(device).eval())

    data_dev = data.to(device)
    model_rows = []
    for i, (path, model) in enumerate(zip(paths, models)):
        say(f"model {i + 1}/{len(models)}: {path}")
        model_rows.append({"checkpoint": path, **measure_model(model, data_dev, settings.hessian)})
    try:
        probes = make_probes(settings.cka_probe_maker, probe_pool(data_dev, settings.cka_probe_pool),
                             settings.cka_probes, settings.cka_probe_seed)
    except (LookupError, ValueError) as exc:
        raise DiagnoseError(_one_line(exc)) from None
    curve = _on_device(settings.curve, device)
    pair_rows = []
    for a, b in settings.pairs:
        if model_rows[a]["status"] != "ok" or model_rows[b]["status"] != "ok":
            continue  # a model with non-finite weights has no curve; the members line says it is missing
        say(f"pair {a}-{b}: curve ({curve.epochs} epochs), CKA, L2")
        pair_rows.append({"seed_a": a, "seed_b": b, "checkpoint_a": paths[a], "checkpoint_b": paths[b],
                          **measure_pair(models[a], models[b], data_dev, probes, curve),
                          "mc_unit": MC_ON[settings.curve.mc_on], "cka_probe_maker": settings.cka_probe_maker,
                          "cka_probe_pool": settings.cka_probe_pool})

    # mc measured on the loss (metrics.curve.mc_on: loss) is in nats: judged against the threshold in nats.
    placement = place_group(model_rows, pair_rows, rules_for_mc_unit(rules, MC_ON[settings.curve.mc_on]))
    out = placement.to_dict()
    out.update(
        schema=DIAGNOSIS_SCHEMA,
        models=model_rows,
        pairs=[{"a": r.pop("seed_a"), "b": r.pop("seed_b"), **r} for r in (dict(r) for r in pair_rows)],
        workload={"model": request.model, "width": request.width, "model_args": dict(request.model_args),
                  "dataset": request.dataset, "data_root": request.data_root, "data_seed": request.data_seed,
                  "data_args": dict(request.data_args), "train_size": data.train_size,
                  "test_size": int(data.test_y.shape[0]), "num_classes": data.num_classes},
        settings={"source": settings.source, "metrics": settings.section, "device": device,
                  "threads": int(request.threads)},
        seconds=time.perf_counter() - started,
        landscape_version=landscape_version(),
    )
    return json_ready(out)


def _check_distinct(paths: list[str]) -> None:
    """The same file (or the same bytes) twice would be a pair of identical models: mc 0, CKA 1, L2 0."""
    seen: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue  # read_state_dict names the problem
        if digest in seen:
            raise DiagnoseError(f"checkpoints {seen[digest]} and {path} hold the same weights; the taxonomy compares "
                                f"independently trained models (different seeds)")
        seen[digest] = path


def _describe_model(request: DiagnoseRequest) -> str:
    args = "".join(f", {k}={v}" for k, v in sorted(request.model_args.items()))
    return f"{request.model} of width {request.width}{args}"


def _on_device(curve, device: str):
    import dataclasses

    return dataclasses.replace(curve, device=device)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def text(result: dict) -> str:
    """The diagnosis for a human: what was measured, then the placement (analysis.placement.placement_text)."""
    from analysis.placement import Decision, Placement, placement_text

    w, s = result["workload"], result["settings"]
    header = [
        f"landscape diagnose: {len(result['models'])} checkpoints of {w['model']} (width {w['width']}"
        + "".join(f", {k}={v}" for k, v in sorted(w["model_args"].items()))
        + f") on {w['dataset']} ({w['train_size']} training / {w['test_size']} test examples), {s['device']}, "
          f"{result['seconds']:.1f} s",
        f"  settings: {s['source']} (curve {s['metrics']['curve']['epochs']} epochs at lr {s['metrics']['curve']['lr']}, "
        f"{s['metrics']['curve']['points']} points; Hessian on {s['metrics']['hessian_samples']} training points; "
        f"{s['metrics']['cka_probes']} CKA probes)",
    ]
    for r in result["models"]:
        if r["status"] != "ok":
            header.append(f"  {r['checkpoint']}: {r['status']}: {r['error']}")
    for r in result["pairs"]:
        if r["status"] != "ok":
            header.append(f"  pair {r['checkpoint_a']} - {r['checkpoint_b']}: {r['status']}: {r['error']}")
    fields = {k: result[k] for k in ("phase", "phase_reason", "meaning", "confidence", "confidence_note", "guidance",
                                     "metrics", "members", "rules")}
    fields.update({k: result.get(k) for k in ("phase_confidence", "phase_runner_up")})  # older results lack them
    placement = Placement(decisions=[Decision(**d) for d in result["decisions"]], **fields)
    return placement_text(placement, header)
