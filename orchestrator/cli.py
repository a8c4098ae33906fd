"""The ``landscape`` command line.

    landscape run [CONFIG] [--out RUN_DIR] [--set k=v ...] [--address HOST:PORT]
    landscape resume RUN_DIR [--set k=v ...] [--address HOST:PORT]
    landscape validate CONFIG [--set k=v ...] [--address HOST:PORT]
    landscape configs
    landscape status RUN_DIR
    landscape analyze RUN_DIR [--rule k=v ...]
    landscape import-reference ARCHIVE --out RUN_DIR
    landscape diagnose CHECKPOINT CHECKPOINT... --model NAME --data NAME [--width W] [--json] ...

Bad input (config, run directory, arguments) gives one line ``error: ...`` and exit status 2, never a
traceback. A sweep that ends without every result (jobs failed, keys missing, the run directory cannot be
written, the local Ray died) exits 1 and says what is missing and how to continue; Ctrl-C exits 130,
SIGTERM 143, both with the `landscape resume` line. Ray, torch and the analysis are imported only by the
commands that need them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from datetime import datetime

import click

from orchestrator.config import ConfigError

EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 1  # the sweep ended without every result: failed jobs, missing keys, a full disk, a dead Ray
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 128 + 15


class UserError(click.ClickException):
    """Printed as ``error: ...`` with exit status 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def _user_errors():
    from analysis.tables import TableError
    from orchestrator.storage import RunDirError
    from orchestrator.sweep import PlanError

    return (ConfigError, RunDirError, PlanError, TableError)


def _fail(exc: Exception):
    raise UserError(" ".join(str(exc).split()))


class SweepStopped(UserError):
    """The sweep could not go on (the run directory cannot be written, the local Ray died): ``error: ...``,
    exit status 1; what was finished is kept and `landscape resume` continues."""

    exit_code = EXIT_INCOMPLETE


# ---------------------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="landscape")
def main():
    """Map loss landscapes of neural networks (Yang et al., NeurIPS 2021) with sweeps on Ray."""
    # SIGTERM (kill, a scheduler's timeout) stops a sweep like Ctrl-C: Ray is shut down cleanly and the
    # command says how to resume, instead of dying with the local Ray cluster's processes left behind.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


SET_HELP = "Override a config field: dotted.key=value (value parsed as YAML), e.g. training.epochs=20. Repeatable."
ADDRESS_HELP = "Join the Ray cluster at HOST:PORT (default: RAY_ADDRESS, else a private local Ray)."


@main.command()
def configs():
    """List the built-in configs."""
    from orchestrator.config import builtin_names, describe_builtin

    rows = []
    for name in builtin_names():
        try:
            desc, models, pairs = describe_builtin(name)
        except ConfigError as exc:
            desc, models, pairs = f"(broken: {exc})", 0, 0
        rows.append((name, f"{models} models, {pairs} pairs", desc))
    width = max((len(r[0]) for r in rows), default=4)
    cwidth = max((len(r[1]) for r in rows), default=4)
    for name, count, desc in rows:
        click.echo(f"{name:<{width}}  {count:<{cwidth}}  {desc}")


@main.command()
@click.argument("config")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--address", default=None, metavar="HOST:PORT", help="Also check resources against this cluster.")
def validate(config, overrides, address):
    """Check CONFIG (a built-in name or a YAML file) without running anything."""
    from orchestrator.config import load_config, missing_data_root

    try:
        # The data folder is read by the nodes that run the trials: a missing one here is a note, not an error.
        cfg = load_config(config, overrides, check_data=False)
    except ConfigError as exc:
        _fail(exc)
    from orchestrator.config import config_warnings

    click.echo(f"ok: {cfg.name}: {len(cfg.model_keys())} models ({cfg.load.name} x {cfg.temperature.name} x "
               f"{len(cfg.seeds)} seeds), {len(cfg.pair_keys())} pairs; config hash {cfg.config_hash()}")
    for warning in config_warnings(cfg):
        click.echo(f"warning: {warning}", err=True)
    problem = missing_data_root(cfg)
    if problem:
        click.echo(f"  note: workload.data_root: {problem}; a local run needs it here, a cluster on its nodes")
    on_gpus = cfg.with_gpus_available(True)  # resources.gpu: auto, on a cluster with GPUs
    if any(on_gpus.trial_gpu(lv) for lv in cfg.load.values):
        from orchestrator.estimate import estimate_gpu_hours

        estimate = estimate_gpu_hours(cfg)
        if not cfg.gpu_is_auto:
            click.echo(f"  cost: {estimate.summary()} (orchestrator/estimate.py)")
        elif estimate.gpu_hours >= 1:  # a small auto sweep (demo, smoke) is not worth a cost line
            click.echo(f"  cost if the cluster has GPUs (resources.gpu: auto): {estimate.summary()} "
                       f"(orchestrator/estimate.py)")
    if address:
        from orchestrator import ray_env

        try:
            ray_env.init_ray(address)
            plan = ray_env.check_resources(cfg, node_types=ray_env.autoscaler_node_types())
        except ConfigError as exc:
            _fail(exc)
        finally:
            _shutdown_ray()
        _echo_resources(cfg, plan)


@main.command()
@click.argument("config", required=False, default="demo")
@click.option("--out", "out", default=None, metavar="RUN_DIR",
              help="Run directory (path or URI); default: run.storage of the config, else runs/<name>-<time>.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--address", default=None, metavar="HOST:PORT", help=ADDRESS_HELP)
@click.option("--no-analysis", is_flag=True, help="Skip the analysis after the sweep.")
def run(config, out, overrides, address, no_analysis):
    """Run the sweep CONFIG (a built-in name or a YAML file; default: the built-in demo)."""
    from orchestrator.config import load_config

    try:
        # A local run reads the data here; on a cluster the nodes that run the trials read it.
        cfg = load_config(config, overrides, check_data=not _joins_cluster(address))
    except ConfigError as exc:
        _fail(exc)
    run_dir = out or cfg.run.storage or os.path.join("runs", f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}")
    _execute(cfg, run_dir, address=address, analysis=not no_analysis, resuming=False)


@main.command()
@click.argument("run_dir")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help=SET_HELP + " Grid values and seeds may grow; training and metric settings must not change.")
@click.option("--address", default=None, metavar="HOST:PORT", help=ADDRESS_HELP)
@click.option("--no-analysis", is_flag=True, help="Skip the analysis after the sweep.")
def resume(run_dir, overrides, address, no_analysis):
    """Continue the sweep in RUN_DIR: only missing, failed or broken results are computed."""
    from orchestrator.config import apply_overrides, parse_config, parse_yaml
    from orchestrator.status import RUN_CONFIG_FIX
    from orchestrator.storage import config_uri, normalise_run_dir, read_bytes

    run_dir = normalise_run_dir(run_dir)
    try:
        data = read_bytes(config_uri(run_dir))
    except (FileNotFoundError, OSError):
        _fail(ConfigError(f"{run_dir} is not a run directory (no config.yaml); start one with `landscape run`"))
    try:
        raw = parse_yaml(data, config_uri(run_dir))  # a damaged file: ConfigError, never a traceback
    except ConfigError as exc:
        _fail(ConfigError(f"{exc}; {RUN_CONFIG_FIX}"))
    if raw is None:
        _fail(ConfigError(f"{config_uri(run_dir)} is empty; {RUN_CONFIG_FIX}"))
    try:
        if not isinstance(raw, dict):
            raise ConfigError(f"a sweep config is a YAML mapping (key: value), got {type(raw).__name__}")
        raw = apply_overrides(raw, overrides)
        if raw.get("run") is None or isinstance(raw["run"], dict):  # else parse_config names the problem
            raw["run"] = {**(raw.get("run") or {}), "storage": run_dir}
        cfg = parse_config(raw, check_data=not _joins_cluster(address))
    except ConfigError as exc:
        _fail(ConfigError(f"{config_uri(run_dir)}: {exc}"))
    _execute(cfg, run_dir, address=address, analysis=not no_analysis, resuming=True)


@contextlib.contextmanager
def _stop_signals(got: dict):
    """While a sweep runs: SIGINT and SIGTERM raise KeyboardInterrupt in the main thread ONCE (``got`` then
    says which); later ones are ignored while the command stops (a second Ctrl-C used to interrupt Ray's
    shutdown and print an atexit traceback). Yields a function that installs the handlers again: ray.init
    replaces SIGTERM's."""

    def handler(signum, frame):
        if not got:
            got["signal"] = signum
            raise KeyboardInterrupt

    def install():
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, handler)

    main_thread = threading.current_thread() is threading.main_thread()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    install()
    try:
        yield install
    finally:
        for sig, previous in before.items():
            signal.signal(sig, previous)


def _execute(cfg, run_dir: str, *, address, analysis: bool, resuming: bool):
    import dataclasses

    from orchestrator import ray_env, storage
    from orchestrator.config import config_warnings
    from orchestrator.sweep import make_plan

    run_dir = storage.normalise_run_dir(run_dir)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, storage=run_dir))
    errors = _user_errors()
    lock = storage.RunLock(run_dir)
    try:
        if not resuming:
            _check_out_dir(cfg, run_dir)  # before the lock: taking it creates the folder and RUN_DIR/.lock
        lock.acquire()
        leftover = ray_env.stop_leftover_ray(run_dir)  # of an earlier `landscape` here that was killed
        _check_saved_config(cfg, run_dir, resuming)
        plan = make_plan(cfg, run_dir)  # fails fast on incompatible rows, before Ray starts
        storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
        info, run_info_note = storage.ensure_run_info(run_dir, cfg.name)
    except errors as exc:
        lock.release()
        _fail(exc)
    except OSError as exc:
        lock.release()
        _fail(ConfigError(f"cannot use run directory {run_dir}: {exc.strerror or exc}"))

    click.echo(f"landscape {cfg.name}: {len(cfg.model_keys())} models, {len(cfg.pair_keys())} pairs -> {run_dir}")
    for warning in config_warnings(cfg):
        click.echo(f"warning: {warning}", err=True)
    if leftover:
        click.echo(f"  note: stopped {len(leftover)} process(es) left by the local Ray of an earlier, killed run")
    for note in plan.repaired + ([run_info_note] if run_info_note else []):
        click.echo(f"  repair: {note}")
    if resuming or plan.models_done or plan.pairs_done:
        click.echo(f"  already done: {len(plan.models_done)} models, {len(plan.pairs_done)} pairs; "
                   f"to do: {len(plan.models_todo)} models, {len(plan.pairs_todo)} pairs")
    got: dict = {}  # the signal that stopped the sweep
    try:
        with _stop_signals(got) as install_handlers:
            summary, stopped, ray_lost = _sweep(cfg, run_dir, plan, info, address, install_handlers)
            final = summary.plan_after if summary else plan  # made from the tables after the last round
            if stopped is None:
                _report_and_analyse(cfg, run_dir, final, summary, analysis)
    except KeyboardInterrupt:
        lock.release()
        name = "SIGTERM" if got.get("signal") == signal.SIGTERM else None
        click.echo(f"\ninterrupted{f' ({name})' if name else ''}; continue with: landscape resume {run_dir}", err=True)
        sys.exit(128 + int(got.get("signal") or signal.SIGINT))
    finally:
        lock.release()  # idempotent; also on errors (a second command in this process must find it free)
    if stopped is not None:
        message = f"{stopped}; everything finished is kept: continue with `landscape resume {run_dir}`"
        if ray_lost:
            # Ray's and Tune's exit handlers talk to the Ray that is gone and would hang the process forever
            # (measured: Tune's registry cleanup waits on the dead GCS): the lock is released, the rest of
            # that Ray is stopped, so end here without them.
            SweepStopped(message).show()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INCOMPLETE)
        raise SweepStopped(message)
    if not final.complete:
        click.echo(_incomplete_message(cfg, run_dir, final), err=True)
        sys.exit(EXIT_INCOMPLETE)


def _sweep(cfg, run_dir: str, plan, info: dict, address, install_handlers):
    """Start (or join) Ray and run the sweep's missing jobs. Returns (SweepSummary, or None when nothing was
    to do; why the sweep had to stop, or None; whether the local Ray died under it). KeyboardInterrupt
    (Ctrl-C, SIGTERM) propagates."""
    from orchestrator import ray_env, storage

    if plan.complete:
        click.echo("  nothing to do")
        return None, None, False
    errors = _user_errors()
    local_ray = note = watch = None
    try:
        try:
            local_ray = ray_env.init_ray(address, object_store_mb=cfg.run.object_store_mb)
            install_handlers()  # ray.init installed its own SIGTERM handler (it ends in "*** SIGTERM received ***")
            if local_ray is not None and not _joins_cluster(address):
                note = ray_env.remember_local_ray(run_dir, local_ray)  # for stop_leftover_ray if we are killed
                if note and note.get("raylet_pid"):
                    watch = ray_env.RayletWatch(note["raylet_pid"])
            node_types = ray_env.autoscaler_node_types() if _joins_cluster(address) else []
            resources = ray_env.check_resources(cfg, node_types=node_types)
        except errors as exc:
            _fail(exc)
        _echo_resources(cfg, resources)
        if resources["cluster"]["nodes"] + len(node_types) > 1 and not storage.is_uri(run_dir):
            click.echo(f"  note: {run_dir} is a local path on a multi-node cluster: every node must see it "
                       f"(a shared mount), else use a URI such as s3://BUCKET/PATH")
        from orchestrator.progress import make_progress
        from orchestrator.sweep import run_sweep

        try:
            return run_sweep(cfg, run_dir, run_id=info["run_id"], resources=resources, progress=make_progress(),
                             plan=plan), None, False
        except storage.StorageFullError as exc:
            return None, str(exc), False
    except KeyboardInterrupt:
        if watch is not None and watch.died:
            return None, (f"the local Ray stopped under the sweep: its raylet (pid {watch.raylet_pid}) died "
                          f"(killed, or out of memory)"), True
        raise
    finally:
        if watch is not None:
            watch.stop()
        if watch is not None and watch.died:
            # A Ray without its raylet cannot shut down cleanly (ray.shutdown waits on it): stop what is left
            # of our own session instead, and leave Ray's atexit nothing to wait for.
            session = ray_env.verified_session(note)
            if session:
                ray_env.kill_session_processes(session, note["node_id"], note.get("raylet_pid"))
        else:
            _shutdown_ray()
        if local_ray is not None and not _joins_cluster(address):
            ray_env.forget_local_ray(run_dir)


def _report_and_analyse(cfg, run_dir: str, final, summary, analysis: bool) -> None:
    """The end of a run: what is done, failed rows, the GPU warning and the analysis, from the tables as the
    final plan read them (each table once), while the run lock is still held."""
    models, pairs = final.scans["models"].frame, final.scans["pairs"].frame
    failed = _failed_rows({"models": models, "pairs": pairs})
    _warn_gpu_without_cuda(models)
    took = f" in {summary.seconds:.1f} s" if summary else ""
    click.echo(f"sweep finished{took}: {len(final.models_done)}/{len(cfg.model_keys())} models, "
               f"{len(final.pairs_done)}/{len(cfg.pair_keys())} pairs done; tables in {run_dir}/tables")
    if analysis and final.models_done:
        _run_analysis(run_dir, scans=final.scans, pairs_expected=bool(cfg.pair_keys()))
    if failed:
        click.echo(f"{len(failed)} job(s) failed (e.g. {failed[0]}); see `landscape status {run_dir}`", err=True)


def _incomplete_message(cfg, run_dir: str, final) -> str:
    """What is missing at the end of a sweep, in one line."""
    from orchestrator.sweep import mkey, pkey

    models = [mkey(cfg, *k) for k in final.models_todo]
    pairs = [pkey(cfg, *k) for k in final.pairs_todo]
    parts = [f"{len(models)} model(s)" if models else "", f"{len(pairs)} pair(s)" if pairs else ""]
    example = (models or pairs)[0]
    return (f"sweep incomplete: {' and '.join(p for p in parts if p)} not done (failed or never finished), "
            f"e.g. {example}; see `landscape status {run_dir}`, then `landscape resume {run_dir}` to compute them")


def _check_out_dir(cfg, run_dir: str) -> None:
    """`run --out DIR`: DIR must be missing, empty, or a run of this config (which `run` then continues).

    Anything else is somebody's folder: writing config.yaml, run.json and the analysis there would overwrite
    their files, and a repair would move their Parquet files aside.
    """
    from orchestrator import storage
    from orchestrator.config import parse_config, parse_yaml
    from orchestrator.ray_env import LOCAL_RAY_NOTE

    fs_kind = _path_kind(run_dir)
    if fs_kind == "missing":
        return
    if fs_kind == "file":
        raise ConfigError(f"--out {run_dir} is a file, not a folder; choose another --out")
    # What a `landscape` starting there at this moment may have made already: its lock, its Ray note, the
    # temporary file of a write under way.
    entries = [e for e in storage.list_entries(run_dir)
               if e not in (".lock", LOCAL_RAY_NOTE) and not storage.is_temporary_name(e)]
    if not entries:
        return
    what = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
    advice = f"continue a run there with `landscape resume {run_dir}`, or choose another --out"
    if "config.yaml" not in entries:
        raise ConfigError(f"--out {run_dir} is not empty ({what}) and is not a landscape run; {advice}")
    try:
        saved = parse_config(parse_yaml(storage.read_bytes(storage.config_uri(run_dir)), "config.yaml") or {},
                             check_data=False)
    except (ConfigError, OSError) as exc:
        raise ConfigError(f"--out {run_dir} holds a config.yaml that is not a readable sweep config "
                          f"({' '.join(str(exc).split())[:160]}); {advice}") from None
    if saved.name != cfg.name and saved.config_hash() != cfg.config_hash():
        raise ConfigError(f"--out {run_dir} is a run of another config ({saved.name!r}); {advice}")


def _path_kind(uri: str) -> str:
    import pyarrow.fs as pafs

    from analysis.tables import resolve

    fs, path = resolve(uri)
    kind = fs.get_file_info(path).type
    return {pafs.FileType.NotFound: "missing", pafs.FileType.File: "file"}.get(kind, "folder")


def _check_saved_config(cfg, run_dir: str, resuming: bool) -> None:
    """A run dir keeps its training and metric settings: a config changing them must use a new directory."""
    from orchestrator.config import parse_config, parse_yaml
    from orchestrator.storage import config_uri, read_bytes

    try:
        data = read_bytes(config_uri(run_dir))
    except (FileNotFoundError, OSError):
        return
    try:
        saved = parse_config(parse_yaml(data, config_uri(run_dir)) or {}, check_data=False)
    except ConfigError:
        return  # the tables' config hashes still guard the results
    if saved.config_hash() != cfg.config_hash():
        diff = _science_diff(saved.science_dict(), cfg.science_dict())
        raise ConfigError(
            f"{run_dir} was run with other training/metric settings ({diff}); use a new --out directory, "
            f"or change only grid values, seeds and resources"
        )


def _science_diff(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            d = _science_diff(va, vb, f"{prefix}{key}.")
            if d:
                return d
        elif va != vb:
            return f"{prefix}{key}: {va!r} in the run, {vb!r} now"
    return ""


def _failed_rows(frames: dict) -> list[str]:
    """One line per failed row of the models and pairs frames (as a plan's scans read them)."""
    out = []
    for table in ("models", "pairs"):
        df = frames[table]
        for row in df[df["status"] == "failed"].itertuples(index=False):
            out.append(f"{table[:-1]} {row.load_name}={row.load_value:g} {row.temperature_name}="
                       f"{row.temperature_value:g}: {row.error}")
    return out


def _joins_cluster(address) -> bool:
    return bool(address or os.environ.get("RAY_ADDRESS"))


def _warn_gpu_without_cuda(models) -> None:
    """Trials that Ray gave a GPU but that found no CUDA ran on the CPU (sweep._job_device): say so."""
    fallback = models["device"].dropna().str.startswith("cpu (")
    if fallback.any():
        click.echo(f"warning: {int(fallback.sum())} model(s) were given a GPU by Ray but CUDA was not available "
                   f"in the worker, so they trained on the CPU (see the device column)", err=True)


def _echo_resources(cfg, plan: dict) -> None:
    from orchestrator.ray_env import describe_plan

    for line in describe_plan(cfg, plan):
        click.echo(f"  {line}")


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _analysis_out_dir(run_dir: str, out_dir: str | None) -> str | None:
    """None (the analysis default: RUN_DIR/analysis on the run's own storage, URIs included), or the
    user's folder or URI."""
    return out_dir


def saved_rules(run_dir: str) -> tuple[dict, str | None]:
    """(the non-default phase rules of the analysis in RUN_DIR/analysis/phase_rules.json, a note for the
    user or None): what `landscape analyze --rule` chose, so that a later run or resume of the directory
    draws its analysis with the same rules instead of silently replacing it with the defaults."""
    import json

    from analysis.phases import PhaseRules
    from orchestrator import storage

    uri = storage.join(run_dir, "analysis", "phase_rules.json")
    try:
        saved = json.loads(storage.read_bytes(uri).decode())["rules"]
        rules = PhaseRules.from_mapping(saved)
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"{uri} cannot be used ({type(exc).__name__}): the analysis uses the default phase rules"
    chosen = {r["name"]: r["value"] for r in rules.describe() if r["value"] != r["default"]}
    if not chosen:
        return {}, None
    text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items())
    return chosen, (f"analysis with the phase rules of the earlier analysis ({text}; from {uri}); "
                    f"`landscape analyze {run_dir}` without --rule draws it with the defaults")


def _run_analysis(run_dir: str, *, scans: dict | None = None, pairs_expected: bool | None = None) -> None:
    try:
        from analysis import api
    except ImportError:
        click.echo("  (analysis package not available: skipped)")
        return
    rules, note = saved_rules(run_dir)
    if note:
        click.echo(f"  note: {note}")
    try:
        result = api.analyze_run(run_dir, rules=rules or None, out_dir=_analysis_out_dir(run_dir, None), scans=scans,
                                 pairs_expected=pairs_expected)
    except Exception as exc:  # the sweep's results are safe; analysis problems must not hide them
        click.echo(f"  analysis failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}; "
                   f"retry with `landscape analyze {run_dir}`", err=True)
        return
    _echo_analysis(result, run_dir)


def _echo_analysis(result, run_dir: str) -> None:
    """Where the phase diagram and the report are (analysis.api.AnalysisResult, or anything path-like)."""
    figures = getattr(result, "figures", None) or {}
    for name, files in sorted(figures.items()):
        if name.startswith("phase_map") and isinstance(files, dict) and files.get("png"):
            click.echo(f"  phase diagram: {files['png']}")
    report = getattr(result, "report_path", None)
    if report:
        click.echo(f"  report: {report}")
        if str(report).startswith("s3://"):
            out = getattr(result, "out_dir", None) or report.rsplit("/", 1)[0]
            click.echo(f"  (fetch with: aws s3 sync {out} ./analysis)")
    for warning in getattr(result, "warnings", None) or []:  # on stderr, like the sweep's own warnings
        click.echo(f"warning: {warning}", err=True)
    if not figures and not report:
        if isinstance(result, (str, os.PathLike)):
            click.echo(f"  analysis: {result}")
        else:
            click.echo(f"  analysis written under {run_dir}")


# ---------------------------------------------------------------------------------------------------------


@main.command()
@click.argument("run_dir")
def status(run_dir):
    """Per stage: what is done, diverged, failed and missing in RUN_DIR."""
    from orchestrator.status import run_status

    try:
        text = run_status(run_dir)
    except _user_errors() as exc:
        _fail(exc)
    click.echo(text)


@main.command()
@click.argument("run_dir")
@click.option("--rule", "rules", multiple=True, metavar="KEY=VALUE",
              help="Override a phase-labelling threshold, e.g. mc_threshold=0.5 (value parsed as YAML). Repeatable.")
@click.option("--out-dir", default=None, metavar="DIR",
              help="Folder or URI for figures and report (default RUN_DIR/analysis, on the run's own storage).")
def analyze(run_dir, rules, out_dir):
    """Phase diagram, heatmaps and report of RUN_DIR."""
    import yaml

    parsed = {}
    for item in rules:
        if "=" not in item:
            _fail(ConfigError(f"--rule {item!r}: expected KEY=VALUE"))
        k, v = item.split("=", 1)
        try:
            parsed[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            _fail(ConfigError(f"--rule {item!r}: the value is not valid YAML"))
    try:
        from analysis import api
    except ImportError as exc:
        _fail(ConfigError(f"the analysis package is not available ({exc})"))
    try:
        result = api.analyze_run(run_dir, rules=parsed or None, out_dir=_analysis_out_dir(run_dir, out_dir),
                                 pairs_expected=_pairs_expected(run_dir))
    except (ValueError, LookupError, OSError, *_user_errors()) as exc:
        _fail(exc)
    _echo_analysis(result, run_dir)


def _pairs_expected(run_dir: str) -> bool | None:
    """Whether the run's saved config connects any seed pairs (None when it has no readable config.yaml),
    from the YAML alone: validating the config would import torch for nothing."""
    from orchestrator.config import parse_yaml, seed_pairs
    from orchestrator.storage import config_uri, read_bytes

    try:
        raw = parse_yaml(read_bytes(config_uri(run_dir)), "config.yaml")
        return bool(seed_pairs((raw.get("metrics") or {}).get("pairs", "auto"), raw.get("seeds") or []))
    except Exception:  # no config (an imported reference), or not one we can read: unknown
        return None


@main.command(name="import-reference")
@click.argument("archive")
@click.option("--out", "out", required=True, metavar="RUN_DIR", help="Run directory to write the tables into.")
def import_reference(archive, out):
    """Import the authors' released results (ARCHIVE) as a run directory that `analyze` reads."""
    try:
        from analysis import api
    except ImportError as exc:
        _fail(ConfigError(f"the analysis package is not available ({exc})"))
    import pickle

    try:
        result = api.import_reference(archive, out)
    except (ValueError, LookupError, OSError, EOFError, pickle.UnpicklingError, *_user_errors()) as exc:
        _fail(exc)
    counts = ", ".join(f"{getattr(result, k)} {k.replace('_', ' ')}" for k in ("cells", "models", "pairs", "curve_points")
                       if isinstance(getattr(result, k, None), int))
    click.echo(f"imported {archive} -> {out}" + (f": {counts}" if counts else ""))
    for note in getattr(result, "notes", None) or []:
        click.echo(f"  note: {note}")
    click.echo(f"  next: landscape analyze {out}")


def _key_values(option: str, items) -> dict:
    """{key: value} of repeated ``--option key=value`` (values parsed as YAML: 3, 0.5, true, [1, 2])."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            _fail(ConfigError(f"{option} {item!r}: expected KEY=VALUE"))
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            _fail(ConfigError(f"{option} {item!r}: the value is not valid YAML"))
    return out


@main.command()
@click.argument("checkpoints", nargs=-1, metavar="CHECKPOINT CHECKPOINT...")
@click.option("--model", "model", required=True, metavar="NAME",
              help="The architecture: a built-in (mlp, cnn, resnet18, vgg11) or module:function of your own code.")
@click.option("--width", default=64, show_default=True, type=int, help="The model's width.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE", help="A model option, e.g. depth=2.")
@click.option("--data", "dataset", required=True, metavar="NAME",
              help="The training data: a built-in (mnist1d, digits, cifar10, ...) or module:function.")
@click.option("--data-root", default=None, metavar="DIR", help="Folder holding the dataset's files (image sets).")
@click.option("--data-seed", default=0, show_default=True, type=int, help="The seed passed to a dataset function.")
@click.option("--data-arg", "data_args", multiple=True, metavar="KEY=VALUE", help="An option of a dataset function.")
@click.option("--config", default=None, metavar="CONFIG",
              help="Take the metric settings of this sweep config (built-in name or YAML; default: demo).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a metric setting, e.g. metrics.curve.epochs=20. Repeatable.")
@click.option("--rule", "rules", multiple=True, metavar="KEY=VALUE",
              help="Override a phase rule, e.g. loss_threshold=0.05 or cka_threshold=0.8. Repeatable.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", default=1, show_default=True, type=int,
              help="CPU threads for torch (1 is fastest for small models, above all on a busy machine).")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as JSON (for scripts).")
def diagnose(checkpoints, model, width, model_args, dataset, data_root, data_seed, data_args, config, overrides,
             rules, device, threads, as_json):
    """Place your own trained models (two or more checkpoints of one architecture) on the taxonomy: which
    phase, from which numbers, how confidently, and the paper's guidance for it. No Ray, no sweep."""
    import json

    from orchestrator.diagnose import DiagnoseRequest, run_diagnosis, text

    request = DiagnoseRequest(
        checkpoints=tuple(checkpoints), model=model, dataset=dataset, width=width,
        model_args=_key_values("--model-arg", model_args), data_root=data_root, data_seed=data_seed,
        data_args=_key_values("--data-arg", data_args), config=config, overrides=tuple(overrides),
        rules=_key_values("--rule", rules), device=device, threads=threads,
    )
    # Progress on a terminal only: on a pipe stderr carries nothing but the one error line, if any.
    progress = (lambda line: click.echo(f"  {line}", err=True)) if sys.stderr.isatty() else None
    try:
        result = run_diagnosis(request, progress)
    except ConfigError as exc:  # DiagnoseError included
        _fail(exc)
    click.echo(json.dumps(result, indent=2, allow_nan=False) if as_json else text(result))


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    main()
