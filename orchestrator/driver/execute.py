"""`landscape run` and `landscape resume` after their config is loaded: take the run directory's lock, make
the plan (assess the run directory, repair what it found), start (or join) Ray, run the sweep, report what is
done, analyse; stop cleanly on signals.

Shared by the command line and the Python API (landscape/): :func:`execute` prints through orchestrator.driver.console
(which the API captures) and ends badly only by raising the exceptions of orchestrator/driver/sweep_errors.py, which
the command line turns into its messages and exit statuses.
"""

from __future__ import annotations

import signal
import sys

from orchestrator.driver.analysis_step import run_analysis
from orchestrator.config import ConfigError
from orchestrator.driver.console import echo, progress_stream
from orchestrator.driver.sweep_errors import user_errors
from orchestrator.driver.sweep_errors import InputError, SweepIncomplete, SweepInterrupted, SweepStopped


def execute(cfg, run_dir: str, *, address, analysis: bool, resuming: bool):
    """Run (or resume) the sweep ``cfg`` into ``run_dir``. Ctrl-C and SIGTERM, from the command's start (or
    from this call's, for the Python API), raise SweepInterrupted at the next safe point
    (orchestrator/driver/interrupts.py), after the Ray this started is shut down and the run lock released."""
    from orchestrator.driver import interrupts

    where = {"run_dir": run_dir, "resumable": resuming}  # what the interrupted message can say
    with interrupts.stop_signals() as stop:
        try:
            _execute(cfg, run_dir, address=address, analysis=analysis, resuming=resuming, stop=stop, where=where)
        except KeyboardInterrupt as exc:
            raise SweepInterrupted(where["run_dir"], stop.signum or signal.SIGINT,
                                   resumable=where["resumable"]) from exc


def _execute(cfg, run_dir: str, *, address, analysis: bool, resuming: bool, stop, where: dict):
    import dataclasses

    from orchestrator.cluster import ray_leftovers

    from orchestrator.planning import run_facts

    from orchestrator.rundir import runlock, storage
    from orchestrator.planning.cohorts import for_the_model
    from orchestrator.config import config_warnings
    from orchestrator.planning.plan import assess, repair

    stop.check()  # a Ctrl-C while the config loaded: nothing is done yet
    try:
        run_dir = storage.normalise_run_dir(run_dir)  # a name that cannot mean one place: refused before any work
    except storage.RunDirError as exc:
        raise _input_error(exc) from exc
    where["run_dir"] = run_dir
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, storage=run_dir))
    errors = user_errors()
    lock = runlock.RunLock(run_dir)
    try:
        try:
            if not resuming:
                _check_out_dir(cfg, run_dir)  # before the lock: taking it creates the folder and RUN_DIR/.lock
            lock.acquire()
            leftover = ray_leftovers.stop_leftover_ray(run_dir)  # of an earlier `landscape` here that was killed
            _check_saved_config(cfg, run_dir, resuming)
            plan = repair(run_dir, assess(cfg, run_dir, facts=run_facts.measure(cfg)))  # PlanError before Ray starts
            if cfg.adaptive_search:  # what is left is the current wave's, derived from the tables
                from orchestrator.driver import adaptive_sweep

                derived = adaptive_sweep.replay(cfg, plan)
                adaptive_sweep.write_waves(cfg, run_dir, derived)
                plan = adaptive_sweep.restrict(cfg, plan, derived)
            storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
            where["resumable"] = True  # `landscape resume RUN_DIR` reads that config.yaml
            run_facts.record(run_dir, plan.facts, cfg)  # what status reads instead of running the config's code
            cfg, one_member_note = for_the_model(cfg, plan.facts.one_member_cohorts)  # as printed, as run
            info, run_info_note = storage.ensure_run_info(run_dir, cfg.name)
            plan = dataclasses.replace(plan, repaired=plan.repaired + ((run_info_note,) if run_info_note else ()))
        except errors as exc:
            raise _input_error(exc) from exc
        except OSError as exc:
            raise InputError(f"cannot use run directory {run_dir}: {exc.strerror or exc}") from exc

        echo(f"landscape {cfg.name}: {'adaptive search over a grid of ' if cfg.adaptive_search else ''}"
             f"{len(cfg.model_keys())} models, {len(cfg.pair_keys())} pairs -> {run_dir}")
        for warning in config_warnings(cfg):
            echo(f"warning: {warning}", err=True)
        if one_member_note:
            echo(f"  note: {one_member_note}")
        if leftover:
            echo(f"  note: stopped {len(leftover)} process(es) left by the local Ray of an earlier, killed run")
        for line in plan.describe(resuming=resuming):
            echo(line)
        stop.check()
        summary, stopped, ray_lost = _sweep(cfg, run_dir, plan, info, address, stop)
        final = summary.plan_after if summary else plan  # made from the tables after the last round
        if stopped is None:
            with stop.immediately():  # Ray is shut down by now: the analysis may be cut anywhere
                _report_and_analyse(cfg, run_dir, final, summary, analysis)
    finally:
        lock.release()  # idempotent; also on errors (a second command in this process must find it free)
    if stopped is not None:
        # ray_lost: the local Ray died; its exit handlers would hang the process (the CLI ends with os._exit).
        raise SweepStopped(f"{stopped}; everything finished is kept: continue with `landscape resume {run_dir}`",
                           run_dir, ray_lost=ray_lost)
    if not final.complete:
        raise SweepIncomplete(_incomplete_message(cfg, run_dir, final), run_dir)


def _input_error(exc: Exception) -> InputError:
    """The user error ``exc`` (config, run directory, plan, tables) as one line."""
    return InputError(" ".join(str(exc).split()))


def _sweep(cfg, run_dir: str, plan, info: dict, address, stop):
    """Start (or join) Ray and run the sweep's missing jobs. Returns (SweepSummary, or None when nothing was
    to do; why the sweep had to stop, or None; whether the local Ray died under it). KeyboardInterrupt
    (Ctrl-C, SIGTERM, raised at a safe point by ``stop``, orchestrator/driver/interrupts.py) propagates, after the
    Ray started here is shut down."""
    from orchestrator.cluster import ray_env, ray_leftovers, shipping
    from orchestrator.rundir import storage
    from orchestrator.cluster.resources import autoscaler_node_types, check_resources

    if plan.complete:
        echo("  nothing to do")
        return None, None, False
    errors = user_errors()
    local_ray = note = watch = None
    try:
        try:
            local_env = {}
            if not ray_env.joins_cluster(address):
                # Marked, and recorded privately before it starts: if we are killed, the next run or resume
                # of this run dir stops what is left of it, and only that (orchestrator/cluster/ray_leftovers.py).
                mark = ray_leftovers.new_mark()
                note = ray_leftovers.remember_local_ray(run_dir, mark)
                local_env = {ray_leftovers.MARK_VARIABLE: mark}
            local_ray = ray_env.init_ray(address, object_store_mb=cfg.run.object_store_mb, local_env=local_env,
                                         runtime_env=shipping.runtime_env(cfg))  # the user's modules
            stop.install()  # ray.init installed its own SIGTERM handler (it ends in "*** SIGTERM received ***")
            if local_ray is not None and note is not None:
                note = ray_leftovers.remember_local_ray(run_dir, note["mark"], local_ray)
                if note and note.get("raylet_pid"):
                    watch = ray_leftovers.RayletWatch(note["raylet_pid"])
            stop.check()  # a Ctrl-C while Ray started: acted on now that it can be shut down cleanly
            node_types = autoscaler_node_types() if ray_env.joins_cluster(address) else []
            resources = check_resources(cfg, node_types=node_types)
        except errors as exc:
            raise _input_error(exc) from exc
        # resources.gpu: auto decided once, for this cluster: the cohorts printed below are the ones that run.
        cfg = cfg.with_gpus_available(bool(resources["cluster"]["gpu_available"]))
        echo_resources(cfg, resources)
        from orchestrator.planning.cohorts import describe_cohorts

        from orchestrator.driver.tune_adapters import concurrent_slots

        slots = concurrent_slots(cfg, resources)
        echo(f"  {describe_cohorts(cfg, plan.models_todo, plan.pairs_todo, slots)}")
        if resources["cluster"]["nodes"] + len(node_types) > 1 and not storage.is_uri(run_dir):
            echo(f"  note: {run_dir} is a local path on a multi-node cluster: every node must see it "
                 f"(a shared mount), else use a URI such as s3://BUCKET/PATH")
        from orchestrator.driver.progress import make_progress
        from orchestrator.driver.sweep import run_sweep

        try:
            if cfg.adaptive_search:
                from orchestrator.driver.adaptive_sweep import run_adaptive

                summary = run_adaptive(cfg, run_dir, run_id=info["run_id"], resources=resources,
                                       progress=make_progress(progress_stream()), plan=plan, echo=echo)
            else:
                summary = run_sweep(cfg, run_dir, run_id=info["run_id"], resources=resources,
                                    progress=make_progress(progress_stream()), plan=plan)
        except storage.StorageFullError as exc:
            return None, str(exc), False
        stop.check()  # a signal during the sweep's last step: the user asked to stop, and is told so
        return summary, None, False
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
            ray_leftovers.stop_marked_ray(note)
        else:
            shutdown_ray()
        if note is not None:
            ray_leftovers.forget_local_ray(run_dir)


def _report_and_analyse(cfg, run_dir: str, final, summary, analysis: bool) -> None:
    """The end of a run: what is done, failed rows, the GPU warning and the analysis, from the tables as the
    final plan read them (each table once), while the run lock is still held."""
    models, pairs = final.scans["models"].frame, final.scans["pairs"].frame
    failed = _failed_rows({"models": models, "pairs": pairs})
    _warn_gpu_without_cuda(models)
    took = f" in {summary.seconds:.1f} s" if summary else ""
    if cfg.adaptive_search:  # the policy's keys, not the grid's: untrained cells are not missing results
        echo(f"sweep finished{took}: {len(final.tables['models'].expected)} of the grid's {len(cfg.model_keys())} "
             f"models and {len(final.tables['pairs'].expected)} of its {len(cfg.pair_keys())} pairs chosen by the "
             f"adaptive search, {final.tables['models'].count('ok') + final.tables['models'].count('diverged')} "
             f"models done; waves in {run_dir}/adaptive, tables in {run_dir}/tables")
    else:
        echo(f"sweep finished{took}: {len(final.models_done)}/{len(cfg.model_keys())} models, "
             f"{len(final.pairs_done)}/{len(cfg.pair_keys())} pairs done; tables in {run_dir}/tables")
    if analysis and final.models_done:
        run_analysis(run_dir, scans=final.scans, pairs_expected=bool(cfg.pair_keys()))
    if failed:
        echo(f"{len(failed)} job(s) failed (e.g. {failed[0]}); see `landscape status {run_dir}`", err=True)


def _incomplete_message(cfg, run_dir: str, final) -> str:
    """What is missing at the end of a sweep, in one line."""
    from orchestrator.planning.jobs import mkey, pkey

    models = [mkey(cfg, *k) for k in final.models_todo]
    pairs = [pkey(cfg, *k) for k in final.pairs_todo]
    measures = [mkey(cfg, *k) for k in final.models_to_measure]
    parts = [f"{len(models)} model(s)" if models else "", f"{len(pairs)} pair(s)" if pairs else "",
             f"the added metrics of {len(measures)} finished model(s)" if measures else ""]
    example = (models or pairs or measures)[0]
    return (f"sweep incomplete: {' and '.join(p for p in parts if p)} not done (failed or never finished), "
            f"e.g. {example}; see `landscape status {run_dir}`, then `landscape resume {run_dir}` to compute them")


def _check_out_dir(cfg, run_dir: str) -> None:
    """`run --out DIR`: DIR must be missing, empty, or a run of this config (which `run` then continues).

    Anything else is somebody's folder: writing config.yaml, run.json and the analysis there would overwrite
    their files, and a repair would move their Parquet files aside.
    """
    from orchestrator.rundir import storage
    from orchestrator.cluster.ray_leftovers import LOCAL_RAY_NOTE
    from orchestrator.config.run_config import load_run_config

    fs_kind = _path_kind(run_dir)
    if fs_kind == "missing":
        return
    if fs_kind == "file":
        raise ConfigError(f"--out {run_dir} is a file, not a folder; choose another --out")
    # What a `landscape` starting there at this moment may have made already: its lock, its Ray note, the
    # temporary file of a write under way.
    entries = [e for e in storage.list_entries(run_dir)
               if e not in (".lock", ".lock-holder.json", LOCAL_RAY_NOTE) and not storage.is_temporary_name(e)]
    if not entries:
        return
    what = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
    advice = f"continue a run there with `landscape resume {run_dir}`, or choose another --out"
    if "config.yaml" not in entries:
        # Not a run: `resume` there would fail too (it needs a config.yaml), so it is not offered.
        raise ConfigError(f"--out {run_dir} is not empty ({what}) and is not a landscape run; choose another --out "
                          f"(a new or empty folder)")
    try:
        saved = load_run_config(run_dir)  # as data: nothing it names is imported (orchestrator/config/run_config.py)
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
    from orchestrator.config.run_config import saved_config_or_none

    saved = saved_config_or_none(run_dir)  # as data: nothing it names is imported
    if saved is None:
        return  # none, or not readable: the tables' config hashes still guard the results
    if _without_budget(saved) != _without_budget(cfg):
        raise ConfigError(
            f"{run_dir} was run with search: {saved.search}{' and other adaptive settings' if saved.search == cfg.search else ''}"
            f"; a run keeps its search (its waves are derived from its settings): only adaptive.budget_models may "
            f"change; use a new --out directory for another search")
    if saved.config_hash() != cfg.config_hash():
        diff = _science_diff(saved.science_dict(), cfg.science_dict())
        raise ConfigError(
            f"{run_dir} was run with other training/metric settings ({diff}); use a new --out directory, "
            f"or change only grid values, seeds and resources"
        )


def _without_budget(cfg) -> tuple:
    """The search mode and its settings less the budget (which a resume may raise or lower)."""
    if not cfg.adaptive_search:
        return (cfg.search, None)
    settings = cfg.adaptive_settings().to_dict()
    settings.pop("budget_models")
    return (cfg.search, settings)


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


def _warn_gpu_without_cuda(models) -> None:
    """Trials that Ray gave a GPU but that found no CUDA ran on the CPU (job_io.job_device): say so."""
    fallback = models["device"].dropna().str.startswith("cpu (")
    if fallback.any():
        echo(f"warning: {int(fallback.sum())} model(s) were given a GPU by Ray but CUDA was not available "
             f"in the worker, so they trained on the CPU (see the device column)", err=True)


def echo_resources(cfg, capacity: dict) -> None:
    from orchestrator.cluster.resources import describe_capacity

    for line in describe_capacity(cfg, capacity):
        echo(f"  {line}")


def shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


