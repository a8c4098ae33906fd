"""The ``landscape`` command line.

    landscape run [CONFIG] [--out RUN_DIR] [--set k=v ...] [--address HOST:PORT]
    landscape resume RUN_DIR [--set k=v ...] [--address HOST:PORT] [--log LOGGER] [--code-dir DIR]
    landscape validate CONFIG [--set k=v ...] [--address HOST:PORT]
    landscape plot RUN_DIR --cell KNOB=VALUE,KNOB=VALUE
    landscape configs
    landscape status RUN_DIR [--quick]
    landscape analyze RUN_DIR [--rule k=v ...]
    landscape compare RUN_A RUN_B [--rule k=v ...] [--rule-a k=v ...] [--rule-b k=v ...] [--out DIR] [--json]
    landscape import-reference ARCHIVE --out RUN_DIR
    landscape diagnose CHECKPOINT CHECKPOINT... --model NAME --data NAME [--width W] [--json] ...

Bad input (config, run directory, arguments) gives one line ``error: ...`` and exit status 2, never a
traceback. A sweep that ends without every result (jobs failed, keys missing, the run directory cannot be
written, the local Ray died) exits 1 and says what is missing and how to continue; Ctrl-C exits 130,
SIGTERM 143, both with the `landscape resume` line (or, before the run directory was set up, the word that
nothing was done), from the moment the command starts (orchestrator/driver/interrupts.py). Ray, torch and the analysis are imported only by the
commands that need them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import click

from orchestrator.driver.analysis_step import analyse_during_sweep, echo_analysis, run_config_hash
from orchestrator.config import ConfigError
from orchestrator.driver.execute import echo_resources, execute, shutdown_ray
from orchestrator.cli.exits import EXIT_INCOMPLETE, StoppedExit, fail
from orchestrator.driver.sweep_errors import InputError, SweepIncomplete, SweepInterrupted, SweepStopped, user_errors


# ---------------------------------------------------------------------------------------------------------


SWEEP_COMMANDS = ("run", "resume")
STOPPING_NOTE = b"\nstopping (Ray is shut down first; a second Ctrl-C is ignored) ...\n"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="landscape")
@click.pass_context
def main(ctx):
    """Map loss landscapes of neural networks (Yang et al., NeurIPS 2021) with sweeps on Ray."""
    if threading.current_thread() is not threading.main_thread():
        return
    if ctx.invoked_subcommand in SWEEP_COMMANDS:
        # Ctrl-C and SIGTERM (kill, a scheduler's timeout) stop a sweep cleanly: Ray shut down, the resume line.
        # Deferred to safe points from here on, before the config, torch or Ray is loaded: a KeyboardInterrupt
        # inside ray.init was lost, or crashed the exit (orchestrator/driver/interrupts.py). Restored at the end.
        from orchestrator.driver import interrupts

        ctx.with_resource(interrupts.stop_signals(note=STOPPING_NOTE))
    else:
        # SIGTERM ends the other commands like Ctrl-C (KeyboardInterrupt), with no Ray to stop.
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
        fail(exc)
    from orchestrator.config import config_warnings

    seeds = f"{len(cfg.seeds)} seed" + ("s" if len(cfg.seeds) != 1 else "")
    click.echo(f"ok: {cfg.name}: {len(cfg.model_keys())} models ({cfg.load.name} x {cfg.temperature.name} x "
               f"{seeds}), {len(cfg.pair_keys())} pairs; config hash {cfg.config_hash()}")
    for warning in config_warnings(cfg):
        click.echo(f"warning: {warning}", err=True)
    if cfg.adaptive_search:
        from orchestrator.driver.adaptive_sweep import first_wave

        wave, settings = first_wave(cfg), cfg.adaptive_settings()
        most = (f"the grid's {len(cfg.model_keys())} models" if settings.budget_models is None else
                f"budget_models {settings.budget_models} (the grid has {len(cfg.model_keys())})")
        click.echo(f"  search: adaptive: the first wave trains {wave.models} models ({len(wave.cells)} coarse cells at "
                   f"{settings.start_seeds} seeds); later waves depend on its results, so the total lies between "
                   f"{wave.models} and {most}")
    problem = missing_data_root(cfg)
    if problem:
        click.echo(f"  note: workload.data_root: {problem}; a local run needs it here, a cluster on its nodes")
    from orchestrator.planning.cohorts import describe_cohorts, for_the_model
    from orchestrator.planning.run_facts import trains_one_member_per_cohort

    if not problem:  # the model is built on the config's data: without it the jobs find out
        try:
            cfg, note = for_the_model(cfg, trains_one_member_per_cohort(cfg))
        except Exception as exc:  # the model's or dataset's own error: reported, the rest of the check goes on
            note = f"could not build the model to choose its cohort backend ({type(exc).__name__}: {exc})"
        if note:
            click.echo(f"  note: {note}")
    if not address:  # with a cluster, after its resources: the GPU share decides the cohorts' sizes
        click.echo(f"  {describe_cohorts(cfg, cfg.model_keys(), cfg.pair_keys())}")
    on_gpus = cfg.with_gpus_available(True)  # resources.gpu: auto, on a cluster with GPUs
    if any(on_gpus.trial_gpu(lv) for lv in cfg.load.values):
        from orchestrator.planning.estimate import estimate_gpu_hours

        try:
            estimate = estimate_gpu_hours(cfg)
        except ConfigError as exc:  # a measurement file that cannot be used (estimate.RatesFileError)
            fail(exc)
        if not cfg.gpu_is_auto:
            click.echo(f"  cost: {estimate.summary()} (orchestrator/planning/estimate.py)")
        elif estimate.gpu_hours >= 1:  # a small auto sweep (demo, smoke) is not worth a cost line
            click.echo(f"  cost if the cluster has GPUs (resources.gpu: auto): {estimate.summary()} "
                       f"(orchestrator/planning/estimate.py)")
    if address:
        from orchestrator.cluster import ray_env
        from orchestrator.cluster.resources import autoscaler_node_types, check_resources
        from orchestrator.driver.tune_adapters import concurrent_slots

        try:
            ray_env.init_ray(address)
            capacity = check_resources(cfg, node_types=autoscaler_node_types())
        except ConfigError as exc:
            fail(exc)
        finally:
            shutdown_ray()
        echo_resources(cfg, capacity)
        cfg = cfg.with_gpus_available(bool(capacity["cluster"]["gpu_available"]))  # as `run` decides it
        click.echo(f"  {describe_cohorts(cfg, cfg.model_keys(), cfg.pair_keys(), concurrent_slots(cfg, capacity))}")


LOG_HELP = ("Also send every job's epochs and results to Tune's logger for this tool: tensorboard (event files "
            "in RUN_DIR/tune), wandb, mlflow, json or csv (Tune's files per trial, what tune.ExperimentAnalysis "
            "reads; json is on by default); repeatable; adds to the config's logging list.")


@main.command()
@click.argument("config", required=False, default="demo")
@click.option("--out", "out", default=None, metavar="RUN_DIR",
              help="Run directory (path or URI); default: run.storage of the config, else runs/<name>-<time>.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--address", default=None, metavar="HOST:PORT", help=ADDRESS_HELP)
@click.option("--no-analysis", is_flag=True, help="Skip the analysis after the sweep.")
@click.option("--log", "log", multiple=True, metavar="LOGGER", help=LOG_HELP)
def run(config, out, overrides, address, no_analysis, log):
    """Run the sweep CONFIG (a built-in name or a YAML file; default: the built-in demo)."""
    from orchestrator.config.run_config import config_to_run, default_run_dir

    try:
        cfg = config_to_run(config, overrides, address, log)
    except ConfigError as exc:
        fail(exc)
    _execute(cfg, out or default_run_dir(cfg), address=address, analysis=not no_analysis, resuming=False)


CODE_DIR_HELP = ("A folder to import the run's own code from (its module:function references), e.g. --code-dir . "
                 "for the folder you are in; repeatable. resume never imports from the working directory or the run "
                 "directory unless named here (else: PYTHONPATH and installed packages).")
RESUME_LOG_HELP = (LOG_HELP + " Loggers of the run's config that send data off this machine (wandb, mlflow to a "
                   "server) are used only when named here again.")


@main.command()
@click.argument("run_dir")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help=SET_HELP + " Grid values and seeds may grow; training and metric settings must not change.")
@click.option("--address", default=None, metavar="HOST:PORT", help=ADDRESS_HELP)
@click.option("--no-analysis", is_flag=True, help="Skip the analysis after the sweep.")
@click.option("--log", "log", multiple=True, metavar="LOGGER", help=RESUME_LOG_HELP)
@click.option("--code-dir", "code_dirs", multiple=True, metavar="DIR", help=CODE_DIR_HELP)
def resume(run_dir, overrides, address, no_analysis, log, code_dirs):
    """Continue the sweep in RUN_DIR: only missing, failed or broken results are computed.

    RUN_DIR/config.yaml is read as data first; before importing any code it names, resume prints which modules
    it will import and from where (they come from the run directory's config, which its last writer chose)."""
    from orchestrator.config.run_config import config_to_resume
    from orchestrator.rundir.storage import normalise_run_dir
    from workloads.plugins import code_from

    try:
        run_dir = normalise_run_dir(run_dir)
    except user_errors() as exc:  # a run directory name that cannot mean one place
        fail(exc)
    missing = [d for d in code_dirs if not os.path.isdir(d)]
    if missing:
        fail(ConfigError(f"--code-dir {missing[0]}: no such folder"))
    with code_from(code_dirs):  # users' code only from there (and PYTHONPATH), also in the sweep's workers
        try:
            cfg = config_to_resume(run_dir, overrides, address, log, notice=click.echo)
        except ConfigError as exc:
            fail(exc)
        _execute(cfg, run_dir, address=address, analysis=not no_analysis, resuming=True)


def _execute(cfg, run_dir: str, **how) -> None:
    """execute() with its endings as the command's: bad input `error: ...` (exit 2), an incomplete sweep its
    message (exit 1), a stopped one `error: ...` (exit 1), Ctrl-C / SIGTERM the resume line (exit 130 / 143)."""
    try:
        execute(cfg, run_dir, **how)
    except InputError as exc:
        fail(exc)
    except SweepStopped as exc:
        if exc.ray_lost:
            # Ray's and Tune's exit handlers talk to the Ray that is gone and would hang the process forever
            # (measured: Tune's registry cleanup waits on the dead GCS): the lock is released, the rest of
            # that Ray is stopped, so end here without them.
            StoppedExit(str(exc)).show()
            _exit_now(EXIT_INCOMPLETE)
        raise StoppedExit(str(exc)) from None
    except SweepIncomplete as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INCOMPLETE)
    except SweepInterrupted as exc:
        click.echo(f"\n{exc}", err=True)
        # Ray is shut down and the lock released; the interpreter's finalisation, with threads of Ray's and
        # gRPC's C++ libraries still about, is what crashed an interrupted start-up (exit 139): skip it.
        _exit_now(128 + exc.signal)


def _exit_now(code: int) -> None:
    """End the process with ``code`` now, without exit handlers or finalisation (after flushing our output)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# ---------------------------------------------------------------------------------------------------------


@main.command()
@click.argument("run_dir")
@click.option("--quick", is_flag=True,
              help="Do not read and hash every weights file (a flipped bit is then found only when it is loaded).")
@click.option("--json", "as_json", is_flag=True, help="Print the same facts as one JSON object (every key listed).")
def status(run_dir, quick, as_json):
    """Per stage: what is done, diverged, failed and missing in RUN_DIR (exit 1 when jobs failed or finished
    weights are missing or damaged)."""
    from orchestrator.cli.status import run_status_report
    from workloads.plugins import PluginError, refusing_user_code

    try:
        with refusing_user_code("landscape status"):  # reads the run as data (orchestrator/config/run_config.py)
            text, problem, data = run_status_report(run_dir, verify_weights=not quick)
    except (PluginError, *user_errors()) as exc:
        fail(exc)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str) if as_json else text)
    if problem:
        click.echo(f"problem: {problem}", err=True)
        sys.exit(EXIT_INCOMPLETE)


@main.command()
@click.argument("run_dir")
@click.option("--rule", "rules", multiple=True, metavar="KEY=VALUE",
              help="Override a phase-labelling threshold, e.g. mc_threshold=0.5 (value parsed as YAML). Repeatable.")
@click.option("--out", "--out-dir", "out_dir", default=None, metavar="DIR",
              help="Folder or URI for figures and report (default RUN_DIR/analysis, on the run's own storage).")
@click.option("--bootstrap", "bootstrap_draws", default=200, show_default=True, type=click.IntRange(min=0),
              help="Seed resamplings behind each claim's p and each label's confidence (0: off).")
def analyze(run_dir, rules, out_dir, bootstrap_draws):
    """Phase diagram, heatmaps and report of RUN_DIR."""
    parsed = _key_values("--rule", rules)
    try:
        from analysis import api
    except ImportError as exc:
        fail(ConfigError(f"the analysis package is not available ({exc})"))
    previous = _previous_labels(run_dir, out_dir)  # read before the analysis replaces them
    # Rows of other settings are left out, as status/resume do; a config that cannot be read is said after the
    # analysis (an analysis that fails is then one error line, not a warning and an error).
    config_hash, note = run_config_hash(run_dir)
    from workloads.plugins import refusing_user_code

    try:
        with refusing_user_code("landscape analyze"):  # the tables and the saved config, as data
            result = analyse_during_sweep(run_dir, lambda: api.analyze_run(  # a live sweep: no advice to resume
                run_dir, rules=parsed or None, out_dir=out_dir,
                pairs_expected=_pairs_expected(run_dir), config_hash=config_hash, bootstrap_draws=bootstrap_draws))
    except (ValueError, LookupError, OSError, *user_errors()) as exc:
        fail(exc)
    if note:
        click.echo(f"warning: {note}", err=True)
    echo_analysis(result, run_dir)
    _echo_label_changes(previous, result.cells)


# --- landscape compare, and what `analyze` changed against the labels it replaced (analysis/compare.py) -------

COMPARE_OUT_DEFAULT = "."


def _previous_labels(run_dir: str, out_dir: str | None):
    """(where, the labelled cells an earlier analysis left in the folder `analyze` writes) or None."""
    from analysis.compare import read_labels
    from analysis.tables import join

    folder = out_dir if out_dir is not None else join(run_dir, "analysis")
    cells = read_labels(folder, root=run_dir if out_dir is None and "://" not in run_dir else None)
    return None if cells is None else (join(folder, "cells.parquet"), cells)


def _echo_label_changes(previous, cells) -> None:
    if previous is None:
        return
    from analysis.compare import label_changes

    where, before = previous
    click.echo(f"  phases before → after (against the labels it replaced, {where}): "
               f"{label_changes(before, cells).text()}")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


@main.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--rule", "rules", multiple=True, metavar="KEY=VALUE",
              help="A phase rule for both runs, e.g. mc_threshold=2. Repeatable.")
@click.option("--rule-a", "rules_a", multiple=True, metavar="KEY=VALUE",
              help="A phase rule for A only (over --rule). Repeatable.")
@click.option("--rule-b", "rules_b", multiple=True, metavar="KEY=VALUE",
              help="A phase rule for B only (over --rule), e.g. `compare RUN RUN --rule-b mc_threshold=2`.")
@click.option("--out", "out", default=COMPARE_OUT_DEFAULT, show_default=True, metavar="DIR",
              help="Local folder for the figure compare.png (never inside RUN_B, which is only read).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON (for scripts).")
@click.option("--bootstrap", "bootstrap_draws", default=200, show_default=True, type=click.IntRange(min=0),
              help="Seed resamplings per run behind each claim's p (0: none, faster; claims then carry no p).")
def compare(run_a, run_b, rules, rules_a, rules_b, out, as_json, bootstrap_draws):
    """Compare the phase labels of RUN_A and RUN_B (run directories, or one run with other --rule-b rules):
    phase counts, the cells that changed and what decided them, claims, config differences, and compare.png."""

    shared = _key_values("--rule", rules)
    side_a = {**shared, **_key_values("--rule-a", rules_a)}
    side_b = {**shared, **_key_values("--rule-b", rules_b)}
    if "://" in out:
        fail(ConfigError(f"--out {out}: the figure is written to a local folder; pass a local path"))
    if "://" not in run_b and _inside(out, run_b):
        fail(ConfigError(f"--out {out} lies inside RUN_B {run_b}, which compare only reads; pass another folder"))
    try:
        from analysis.compare import compare_runs
        from analysis.compare_report import comparison_json, comparison_text
        from analysis.compare_plot import save_comparison_maps
    except ImportError as exc:
        fail(ConfigError(f"the analysis package is not available ({exc})"))
    hashes = []
    for run in (run_a, run_b):  # rows of other settings are left out, as analyze does
        config_hash, note = run_config_hash(run)
        if note:
            click.echo(f"warning: {run}: {note}", err=True)
        hashes.append(config_hash)
    try:
        result = compare_runs(run_a, run_b, rules_a=side_a or None, rules_b=side_b or None,
                              config_hash_a=hashes[0], config_hash_b=hashes[1], bootstrap_draws=bootstrap_draws)
        figures = save_comparison_maps(result, out)
    except (ValueError, LookupError, OSError, *user_errors()) as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps({**comparison_json(result), "figures": figures}, indent=2, ensure_ascii=False,
                              allow_nan=False))
        return
    click.echo(comparison_text(result))
    for path in figures:
        click.echo(f"phase maps: {path}")


@main.command()
@click.argument("run_dir")
@click.option("--cell", "cell", required=True, metavar="KNOB=VALUE,KNOB=VALUE",
              help="The cell to draw, by its load and temperature values, e.g. width=64,batch_size=16.")
@click.option("--out", "--out-dir", "out_dir", default=None, metavar="DIR", help="Folder or URI for the PNG (default RUN_DIR/analysis).")
def plot(run_dir, cell, out_dir):
    """Training curves of one cell of RUN_DIR (train loss and test accuracy per epoch, one line per seed)."""
    from analysis.cell_plot import plot_cell
    from workloads.plugins import refusing_user_code

    try:
        with refusing_user_code("landscape plot"):  # the tables, as data
            path = plot_cell(run_dir, cell, out_dir=out_dir)
    except (ValueError, LookupError, OSError, *user_errors()) as exc:
        fail(exc)
    click.echo(path)


def _pairs_expected(run_dir: str) -> bool | None:
    """Whether the run's saved config connects any seed pairs (None when it has no readable config.yaml),
    from the YAML alone: validating the config would import torch for nothing."""
    from orchestrator.config import seed_pairs
    from orchestrator.config.run_config import read_run_config_raw

    try:
        raw = read_run_config_raw(run_dir)  # checked: a regular file of at most 1 MiB
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
        fail(ConfigError(f"the analysis package is not available ({exc})"))
    import pickle

    try:
        result = api.import_reference(archive, out)
    except (ValueError, LookupError, OSError, EOFError, pickle.UnpicklingError, *user_errors()) as exc:
        fail(exc)
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
            fail(ConfigError(f"{option} {item!r}: expected KEY=VALUE"))
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            fail(ConfigError(f"{option} {item!r}: the value is not valid YAML"))
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

    from orchestrator.cli.diagnose import DiagnoseRequest, run_diagnosis, text

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
        fail(exc)
    click.echo(json.dumps(result, indent=2, allow_nan=False) if as_json else text(result))


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    main()
