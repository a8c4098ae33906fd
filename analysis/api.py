"""The entry points the command line wraps: ``landscape analyze``, ``landscape plot`` and ``landscape
import-reference``.

    analyze_run(run_dir, *, rules=None, out_dir=None, color_ranges=None, ...) -> AnalysisResult
    label_run(run_dir, *, rules=None) -> LabelledRun       its cells and claims in memory, nothing written
    plot_cell(run_dir, cell, *, out_dir=None) -> str      one cell's training curves (PNG): analysis/cell_plot.py
    import_reference(archive, out, *, schedule=None) -> ReferenceImportSummary

``analyze_run`` reads the run's tables, aggregates the cells, labels the phases, checks the paper's claims
(analysis.claims), draws the figures and writes ``<out_dir>/cells.parquet``, ``<out_dir>/phase_rules.json``,
``<out_dir>/claims.json``, the figures (PNG and PDF; ``training.*``: the training curves of the representative
cells, when the run has a history table) and ``<out_dir>/report.html`` (``out_dir`` defaults to
``RUN_DIR/analysis``, on the run's own storage: a run on ``s3://bucket/run`` gets ``s3://bucket/run/analysis``; the files are made in a local temporary folder
and uploaded, since matplotlib and the report writer need local files). A run with several load or
temperature knobs gets one diagram per (load, temperature) pair; phases are labelled per diagram, since
the sharpness floor and the CKA split are relative to the diagram's cells. A run whose config.yaml says
``search: adaptive`` gets a row for every cell of its grid, the untrained ones interpolated and marked
(analysis/adaptive_cells.py); claims and guidance use its trained cells only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.adaptive_cells import AdaptiveSearch, adaptive_search, expected_by_cell, grid_cells, trained_only
from analysis.admission import admit, describe_left_out, describe_part
from analysis.aggregate import aggregate_cells
from analysis.bootstrap import DEFAULT_DRAWS, DEFAULT_SEED, labelled_draws, phase_confidence
from analysis.claims import RunFacts, evaluate_claims
from analysis.run_files import read_config
from analysis.guidance import Finding, practitioner_guidance
from analysis.phases import PhaseRules, label_phases, mc_unit, rules_for_mc_unit
from analysis.curve_data import curve_data, representative_cells
from analysis.plot_data import phase_map_data
from analysis.history_data import cell_history
from analysis.plots import figure_stem, panel_set, save_curves, save_panels, save_phase_map, save_training_curves
from analysis.reference import ReferenceImportSummary
from analysis.reference import import_reference as _import_reference
from analysis.report import DiagramSection, render_report
from analysis.run_files import read_run_file
from analysis.schemas import landscape_version
from analysis.tables import RunTables, TableScan, join, resolve
from workloads.atomic import write_atomically
from workloads.metric_specs import merged

__all__ = ["AnalysisResult", "LabelledRun", "analyze_run", "import_reference", "label_run"]


@dataclass
class AnalysisResult:
    """What ``analyze_run`` wrote and found."""

    run_dir: str
    out_dir: str
    cells_path: str
    report_path: str
    rules_path: str
    figures: dict[str, dict[str, str]]  # figure name -> {"png": path, "pdf": path}
    cells: pd.DataFrame  # labelled cells of every diagram
    rules: PhaseRules
    findings: dict[str, list[Finding]] = field(default_factory=dict)  # diagram name -> findings
    warnings: list[str] = field(default_factory=list)
    claims_path: str = ""
    claims: list[dict] = field(default_factory=list)  # analysis.claims records, each with its "diagram"


def import_reference(archive: str, out: str, *, schedule: str | None = None) -> ReferenceImportSummary:
    """Convert the authors' released archive (results.tar.gz or its extracted folder) into run directory ``out``."""
    return _import_reference(archive, out, schedule=schedule)


def _table_provenance(models: pd.DataFrame) -> dict:
    out = {}
    for col in ("run_id", "config_hash", "package_version", "library_versions"):
        if col in models:
            values = sorted({str(v) for v in models[col].dropna()})
            out[col] = values[0] if len(values) == 1 else values
    return out


def _write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    write_atomically(path, write)


def _write_parquet(df: pd.DataFrame, path: str) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    write_atomically(path, lambda tmp: pq.write_table(table, tmp))


def _diagram_name(load: str, temp: str, several: bool) -> str:
    return f"{load}__{temp}" if several else ""


def analyze_run(
    run_dir: str,
    *,
    rules: dict | PhaseRules | None = None,
    out_dir: str | None = None,
    color_ranges: dict | None = None,
    expected_seeds: list[int] | None = None,
    curve_cells: list[tuple[float, float]] | None = None,
    scans: dict[str, TableScan] | None = None,
    pairs_expected: bool | None = None,
    config_hash: str | None = None,
    bootstrap_draws: int = DEFAULT_DRAWS,
    bootstrap_seed: int = DEFAULT_SEED,
) -> AnalysisResult:
    """Analyse the run in ``run_dir`` (a local path or URI); see the module docstring for what is written.

    rules: phase-rule overrides (``{"mc_threshold": "0.5"}`` or a PhaseRules), see analysis.phases.
    out_dir: a local folder or a URI; default RUN_DIR/analysis (on the run's storage).
    color_ranges: per panel metric (lo, hi), "paper" or "data" (see analysis.plot_data).
    expected_seeds: seeds every cell should have; default: every seed seen in the run (an adaptive run: the
        config's seeds, a cell trained at the starting seeds expecting those only).
    curve_cells: (load_value, temperature_value) cells whose Bezier curves to draw; default one per phase.
    scans: {"models", "pairs", "curves"} -> analysis.tables.TableScan already read by the caller (a command
        reads each table once); default: read here.
    bootstrap_draws, bootstrap_seed: seed resamplings behind each label's ``phase_confidence`` and each claim's
        ``p_holds`` (analysis.bootstrap; 0 switches them off), and the seed of their random draws.
    pairs_expected: False when the run's config connects no seed pairs (one seed, or metrics.pairs: []),
        so that a run without pairs is not told to resume for them; None when unknown.
    config_hash: the hash of the run's config (its config.yaml), when the caller knows it: rows computed with
        other settings are left out, as `landscape status` lists and `resume` refuses them (analysis/admission.py
        says what else is left out: parts not holding their own key, cells that are not a run's). None: not
        checked (a run without a config, such as an imported reference, or a caller whose plan checked it).
    """
    phase_rules = rules if isinstance(rules, PhaseRules) else PhaseRules.from_mapping(rules)
    final_dir = out_dir if out_dir is not None else default_out_dir(run_dir)
    inputs = (phase_rules, color_ranges, expected_seeds, curve_cells, scans, pairs_expected, config_hash,
              (bootstrap_draws, bootstrap_seed))
    if "://" not in final_dir:
        return _analyze_into(run_dir, final_dir, final_dir, *inputs)
    staging = tempfile.mkdtemp(prefix="landscape-analysis-")
    try:
        result = _analyze_into(run_dir, staging, final_dir, *inputs)
        upload_dir(staging, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _relocated(result, staging, final_dir)


def upload_dir(local_dir: str, uri: str) -> None:
    """Copy every file of ``local_dir`` (flat) to the folder ``uri``; one PUT per file."""
    fs, base = resolve(uri)
    fs.create_dir(base, recursive=True)
    for name in sorted(os.listdir(local_dir)):
        path = os.path.join(local_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as src, fs.open_output_stream(f"{base}/{name}") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)


def _relocated(result: "AnalysisResult", local_dir: str, uri: str) -> "AnalysisResult":
    """The result with its paths under ``local_dir`` pointing into ``uri`` instead."""

    def move(path):
        return join(uri, os.path.relpath(path, local_dir)) if path else path

    figures = {name: {kind: move(p) for kind, p in files.items()} for name, files in result.figures.items()}
    return dataclasses.replace(result, out_dir=uri, cells_path=move(result.cells_path),
                               report_path=move(result.report_path), rules_path=move(result.rules_path),
                               claims_path=move(result.claims_path), figures=figures)


@dataclass
class LabelledRun:
    """What ``label_run`` computed, in memory: the labelled cells and checked claims of every diagram."""

    run_dir: str
    rules: PhaseRules
    cells: pd.DataFrame  # labelled cells of every diagram (as cells.parquet holds them)
    claims: list[dict]  # analysis.claims records, each with its "diagram"
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # the tables' run_id, config_hash, package_version, ...


def label_run(run_dir: str, *, rules: dict | PhaseRules | None = None, expected_seeds: list[int] | None = None,
              pairs_expected: bool | None = None, config_hash: str | None = None,
              bootstrap_draws: int = DEFAULT_DRAWS, bootstrap_seed: int = DEFAULT_SEED) -> LabelledRun:
    """The cells and claims ``analyze_run`` would write for ``run_dir`` with ``rules`` (the same seed
    resamplings), computed without writing anything (what `landscape compare` compares)."""
    phase_rules = rules if isinstance(rules, PhaseRules) else PhaseRules.from_mapping(rules)
    models, pairs, _, _, metrics, warnings = _read_inputs(run_dir, None, pairs_expected, config_hash,
                                                          labels_only=True)
    seeds = expected_seeds if expected_seeds is not None else sorted({int(s) for s in models["seed"].dropna()})
    search = _search(run_dir, expected_seeds, phase_rules, warnings)
    all_cells, claims = [], []
    for load, temp in _diagrams(models, pairs):
        cells, _, draws = _labelled_diagram(models, pairs, load, temp, seeds, metrics, phase_rules,
                                            (bootstrap_draws, bootstrap_seed), search)
        claims += [{"diagram": f"{load} × {temp}", **c} for c in _diagram_claims(cells, models, load, temp, draws)]
        all_cells.append(cells)
    return LabelledRun(run_dir, phase_rules, pd.concat(all_cells, ignore_index=True), claims, warnings,
                       _table_provenance(models))


def _diagrams(models: pd.DataFrame, pairs: pd.DataFrame) -> list[tuple[str, str]]:
    """The (load, temperature) knob pairs of the run: one phase diagram each."""
    return sorted(set(zip(models["load_name"], models["temperature_name"]))
                  | set(zip(pairs["load_name"], pairs["temperature_name"])))


def _of_diagram(df: pd.DataFrame, load: str, temp: str) -> pd.DataFrame:
    return df[(df["load_name"] == load) & (df["temperature_name"] == temp)]


def _search(run_dir: str, expected_seeds, phase_rules: PhaseRules, warnings: list[str]) -> AdaptiveSearch | None:
    """The adaptive search of the run's config.yaml (None: a grid run, or no readable config); a warning when
    it cannot be read (the run is then analysed as a grid) or its policy labelled by other rules."""
    config, _ = read_config(run_dir)  # an unreadable config.yaml is named by the report's own read of it
    try:
        search = adaptive_search(config, expected_seeds)
    except ValueError as exc:
        warnings.append(f"{exc}: the untrained cells are left out, not interpolated")
        return None
    if search is not None and search.settings.rules != phase_rules:
        warnings.append("the adaptive search chose its cells by the phase rules of its adaptive.rules, this analysis "
                        "labels them by other rules (--rule): trained cells may carry labels the policy did not see")
    return search


def _labelled_diagram(models, pairs, load, temp, seeds, metrics, phase_rules, bootstrap,
                      search: AdaptiveSearch | None = None) -> tuple:
    """(the labelled cells of diagram load x temp with their phase_confidence and phase_runner_up, the unit of
    its mode connectivity, (the labelled seed resamplings, why there are none)); bootstrap: (draws, seed).
    search: the run's adaptive search: every grid cell gets a row, the untrained ones interpolated
    (analysis.adaptive_cells)."""
    # mc in nats (metrics.curve.mc_on: loss) is judged against the rules' threshold in nats.
    diagram_models, diagram_pairs = _of_diagram(models, load, temp), _of_diagram(pairs, load, temp)
    unit = mc_unit(diagram_pairs)
    unit_rules = rules_for_mc_unit(phase_rules, unit)
    search = search if search is not None and search.covers(load, temp) else None
    if search is not None:
        seeds = search.full
    aggregated = aggregate_cells(diagram_models, diagram_pairs, expected_seeds=seeds, metrics=metrics,
                                 expected_by_cell=expected_by_cell(search, diagram_models, diagram_pairs))
    # Labelled as one table: an adaptive run's relative thresholds come from the whole filled grid.
    unlabelled = grid_cells(aggregated, search, diagram_models, diagram_pairs)
    cells = label_phases(unlabelled, unit_rules)
    # Seed noise: the same cells on resampled seeds, labelled by the same rules (analysis.bootstrap).
    draws = labelled_draws(diagram_models, diagram_pairs, unlabelled, unit_rules, draws=bootstrap[0],
                           seed=bootstrap[1], metrics=metrics)
    confidence, runner_up = phase_confidence(cells, draws[0])
    interpolated = cells["interpolated"].to_numpy(dtype=bool)  # no seeds: their confidence is not measured
    cells["phase_confidence"] = np.where(interpolated, np.nan, np.asarray(confidence, dtype=float))
    cells["phase_runner_up"] = pd.array([None if i else r for i, r in zip(interpolated, runner_up)], dtype="object")
    return cells, unit, draws


def _diagram_claims(cells: pd.DataFrame, models: pd.DataFrame, load: str, temp: str, draws: tuple) -> list[dict]:
    return evaluate_claims(cells, RunFacts.of(cells, _of_diagram(models, load, temp)), draws=draws[0],
                           no_draws=draws[1])


def _read_inputs(run_dir, scans, pairs_expected, config_hash, *, labels_only: bool = False):
    """(models, pairs, curves, history, metrics, warnings) of the run, unreadable parts and rows that are not
    the run's (analysis/admission.py) left out with a warning; ValueError when there is nothing to analyse.
    ``labels_only``: curves and history, which only the figures need, are not read (empty)."""
    tables = RunTables(run_dir)
    warnings: list[str] = []
    frames, unreadable, added, left_out = {"curves": pd.DataFrame()}, {}, [], {}
    own_key_only = has_config(run_dir)  # a run `landscape run` made: its rows count as `status` counts them
    for name in ("models", "pairs") if labels_only else ("models", "pairs", "curves"):
        scan = (scans or {}).get(name) or tables.scan(name)
        added.append(scan.metrics)
        unreadable[name] = bad = scan.unreadable
        admitted = admit(scan, own_key_only, config_hash)
        frames[name], left_out[name] = admitted.frame, admitted.left_out
        if bad:
            warnings.append(
                f"{len(bad)} unreadable part(s) of table {name} left out, e.g. {bad[0][0]} ({bad[0][1]}); "
                f"run `landscape resume {run_dir}` to recompute them"
            )
        warnings += describe_left_out(name, admitted.left_out, run_dir) + scan.notes
    models, pairs, curves = frames["models"], frames["pairs"], frames["curves"]
    # The built-in metrics and those the run added (their specs travel in the tables' field metadata).
    metrics = merged(*added)
    history = (pd.DataFrame() if labels_only
               else _read_history(tables, scans, run_dir, warnings, own_key_only, config_hash))
    _check_something_to_analyse(run_dir, tables, models, pairs, unreadable["models"], left_out["models"])
    if not pd.to_numeric(pairs["mode_connectivity"], errors="coerce").notna().any():
        if pairs_expected is False:
            warnings.append(
                "this run's config connects no seed pairs (one seed, or metrics.pairs: []), so there is no mode "
                "connectivity and no cell gets a phase; use at least two seeds to get phases"
            )
        else:
            warnings.append(
                "no pair has a mode connectivity, so no cell gets a phase (phases need the pairs' mode "
                f"connectivity); run `landscape resume {run_dir}` to compute the pairs (a config with "
                f"metrics.pairs: [] has none)"
            )
    return models, pairs, curves, history, metrics, warnings


def _analyze_into(run_dir, out_dir, shown_dir, phase_rules, color_ranges, expected_seeds, curve_cells, scans,
                  pairs_expected, config_hash, bootstrap):
    """analyze_run writing into the local folder ``out_dir``; ``shown_dir`` is where the report says they are."""
    # Everything is read and checked before the output folder is touched: a run with nothing to analyse must
    # neither leave an empty analysis/ behind nor replace a good earlier analysis with an empty one.
    models, pairs, curves, history, metrics, warnings = _read_inputs(run_dir, scans, pairs_expected, config_hash)
    _make_writable_dir(out_dir, shown_dir, run_dir)

    combos = _diagrams(models, pairs)
    several = len(combos) > 1
    seeds = expected_seeds if expected_seeds is not None else sorted({int(s) for s in models["seed"].dropna()})
    search = _search(run_dir, expected_seeds, phase_rules, warnings)
    all_cells, sections, figures, findings, claims = [], [], {}, {}, []
    for load, temp in combos:

        def pick(df):
            return df[(df["load_name"] == load) & (df["temperature_name"] == temp)]

        cells, unit, draws = _labelled_diagram(models, pairs, load, temp, seeds, metrics, phase_rules, bootstrap,
                                               search)
        suffix = _diagram_name(load, temp, several)
        stem = lambda base: figure_stem(out_dir, f"{base}__{suffix}" if suffix else base)
        # The numbers behind the panels, once: the PNG/PDF figures and the report's SVG draw the same objects.
        heatmaps, phase_map = panel_set(cells, color_ranges, metrics, unit), phase_map_data(cells)
        figs = {
            "phase_map": save_phase_map(cells, stem("phase_map"), data=phase_map),
            "panels": save_panels(cells, stem("panels"), heatmaps=heatmaps, phase_map=phase_map),
        }
        cell_curves = pick(curves)
        chosen = curve_cells if curve_cells is not None else representative_cells(cells, cell_curves)
        curve_figs = [curve_data(cell_curves, lv, tv, cells=cells, pairs=pick(pairs)) for lv, tv in chosen]
        curves_paths = save_curves(curve_figs, stem("curves"))
        if curves_paths:
            figs["curves"] = curves_paths
        trained = [h for h in (cell_history(pick(history), lv, tv, cells=cells)
                               for lv, tv in (curve_cells if curve_cells is not None
                                              else representative_cells(cells, pick(history)))) if h is not None]
        training_paths = save_training_curves(trained, stem("training"))
        if training_paths:
            figs["training"] = training_paths
        found = practitioner_guidance(trained_only(cells))  # advice from trained cells, as the claims
        name = suffix or f"{load}__{temp}"
        findings[name] = found
        checked = _diagram_claims(cells, models, load, temp, draws)
        claims += [{"diagram": f"{load} × {temp}", **c} for c in checked]
        figures.update({f"{k}__{suffix}" if suffix else k: v for k, v in figs.items()})
        sections.append(
            DiagramSection(
                title=f"{load} × {temp}",
                cells=cells,
                rules=phase_rules,
                findings=found,
                claims=checked,
                phase_map=phase_map,
                heatmaps=heatmaps,
                curves_png=figs.get("curves", {}).get("png"),
                training_png=figs.get("training", {}).get("png"),
                figure_files=figs,
                metrics=metrics,
                mc_unit=unit,
            )
        )
        all_cells.append(cells)

    cells = pd.concat(all_cells, ignore_index=True)
    cells_path = os.path.join(out_dir, "cells.parquet")
    _write_parquet(cells, cells_path)
    rules_path = os.path.join(out_dir, "phase_rules.json")
    _write_text(rules_path, json.dumps(
        {"rules": {r["name"]: r["value"] for r in phase_rules.describe()}, "derived": _derived_thresholds(cells)},
        indent=2,
    ))

    claims_path = os.path.join(out_dir, "claims.json")
    _write_text(claims_path, json.dumps(claims, indent=2, ensure_ascii=False, default=_json_number))

    provenance = {
        "tables": _table_provenance(models),
        "analysis": {"package_version": landscape_version(),
                     "rules_file": join(shown_dir, os.path.basename(rules_path)) if shown_dir != out_dir else rules_path},
    }
    source = _read_run_text(run_dir, "provenance.json", "json", warnings)
    if source is not None:
        try:
            provenance["source"] = json.loads(source)
        except json.JSONDecodeError:
            provenance["source"] = source
    title_run = provenance["tables"].get("run_id") or os.path.basename(os.path.normpath(run_dir))
    html_text = render_report(
        title=f"Loss-landscape phases: {title_run}",
        run_dir=run_dir,
        report_dir=out_dir,
        sections=sections,
        config_text=_read_run_text(run_dir, "config.yaml", "config", warnings),
        provenance=provenance,
        warnings=warnings,
    )
    report_path = os.path.join(out_dir, "report.html")
    _write_text(report_path, html_text)
    return AnalysisResult(
        run_dir, out_dir, cells_path, report_path, rules_path, figures, cells, phase_rules, findings, warnings,
        claims_path, claims,
    )


def _read_history(tables: RunTables, scans, run_dir: str, warnings: list[str], own_key_only: bool,
                  config_hash: str | None) -> pd.DataFrame:
    """The history table (empty for runs made before it existed), admitted as the results are (unreadable and
    left-out parts named in a warning)."""
    scan = (scans or {}).get("history") or tables.scan("history")
    if scan.unreadable:
        key, why = scan.unreadable[0]
        warnings.append(f"{len(scan.unreadable)} unreadable part(s) of table history left out of the training "
                        f"curves, e.g. {key} ({why})")
    admitted = admit(scan, own_key_only, config_hash)
    warnings += describe_left_out("history", admitted.left_out, run_dir)
    return admitted.frame


def default_out_dir(run_dir: str) -> str:
    """RUN_DIR/analysis, where the analysis is written by default; ValueError when it is a symbolic link (in a
    shared run directory it may point anywhere: the figures and the report would be written there)."""
    out = join(run_dir, "analysis")
    if "://" not in run_dir and os.path.islink(out):
        raise ValueError(f"{out} is a symbolic link: the analysis is written only into a real folder of the run "
                         f"(replace the link with a folder, or write elsewhere with --out DIR)")
    return out


def has_config(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a config.yaml (a file, a link or anything under that name), as `status` asks."""
    if "://" not in run_dir or run_dir.startswith("file://"):
        return os.path.lexists(os.path.join(run_dir.removeprefix("file://"), "config.yaml"))
    return exists(join(run_dir, "config.yaml"))


def _read_run_text(run_dir: str, name: str, kind: str, warnings: list[str]) -> str | None:
    """The text of the run's file ``name`` for the report, read as analysis/run_files.py checks it; None when
    it is missing or refused (a link, a device, too large: a warning names it; the report goes on without)."""
    try:
        return read_run_file(join(run_dir, name), kind, root=run_dir).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:  # RunFileError included
        warnings.append(f"{name} is left out of the report: {exc}")
        return None


def _json_number(value):
    """numpy scalars (and anything float-like) in claim evidence, as plain JSON numbers."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _check_something_to_analyse(run_dir, tables, models, pairs, bad_models, left_out_models) -> None:
    """Raise ValueError (naming the cause and the fix) when the run has no readable model rows."""
    if not models.empty:
        return
    if left_out_models:
        (part, why), = list(left_out_models.items())[:1]
        raise ValueError(
            f"{run_dir}: nothing to analyse: all {len(left_out_models)} readable part(s) of table models are left out "
            f"as not belonging to the run, e.g. {describe_part('models', part, why)}"
        )
    if bad_models:
        raise ValueError(
            f"{run_dir}: nothing to analyse: table models has {len(bad_models)} unreadable part(s) and no readable "
            f"one, e.g. {tables.part_uri('models', bad_models[0][0])} ({bad_models[0][1]}); "
            f"`landscape resume {run_dir}` recomputes unreadable parts, then analyse again"
        )
    if not exists(run_dir):
        raise ValueError(f"run directory {run_dir} does not exist; pass the folder `landscape run` wrote (its --out)")
    if pairs.empty:
        raise ValueError(
            f"{run_dir} has no models or pairs tables under {tables.tables_dir}: is it a run directory, "
            f"and has `landscape run` written results yet?"
        )
    raise ValueError(
        f"{run_dir}: nothing to analyse: no models in {tables.tables_dir}/models (only pairs); "
        f"run `landscape resume {run_dir}` to train them"
    )


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _make_writable_dir(out_dir: str, shown_dir: str, run_dir: str) -> None:
    """Create ``out_dir`` and make sure a file can be written in it, before any figure is drawn.

    A read-only run directory otherwise fails with a bare "[Errno 30] Read-only file system" halfway through.
    """
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise OSError(
            f"cannot write the analysis folder {shown_dir} ({exc.strerror or exc}); write it elsewhere with "
            f"`landscape analyze {run_dir} --out DIR`"
        ) from exc


def _derived_thresholds(cells: pd.DataFrame) -> dict:
    out = {}
    for (load, temp), g in cells.groupby(["load_name", "temperature_name"]):
        split = pd.to_numeric(g["cka_split"], errors="coerce").dropna()
        out[f"{load}__{temp}"] = {
            "sharpness_threshold_train_loss": float(g["sharpness_threshold"].iloc[0]),
            "cka_split": float(split.iloc[0]) if len(split) else None,
        }
    return out
