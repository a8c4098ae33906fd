"""The CPU gallery: every gallery config run through the CLI, and docs/gallery.md written from the runs.

    python scripts/gallery.py [--only NAME ...] [--runs DIR] [--docs DIR] [--reuse] [--reduced] [--set KEY=VALUE ...]

For each config of GALLERY: `landscape run NAME --out RUNS/NAME` (a fresh run directory; with --reuse an
existing complete one is analysed again instead), timed; then its phase map and panels are copied to
DOCS/gallery/ and DOCS/gallery.md gets, per config, the date, the wall time, the machine's load while it ran,
the phase map as a text grid and as a picture, the panels and the table of the paper's claims
(RUN_DIR/analysis/claims.json). --set applies to every config. --reduced runs each config on the first and
last values of its two axes, 2 seeds, 2 epochs and a 1-epoch curve: a check of the pipeline (the tests run it),
not of the science.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass



@dataclass(frozen=True)
class Entry:
    """A gallery run: a config, the paper's figure it corresponds to, and that figure's headline: the claims (ids
    of analysis/claims.py) that the paper's own sentences about the figure make, quoted in ``words``. The headline
    holds when every one of its claims holds (p >= 0.9 over the seed resamplings of `landscape analyze`); it is
    unresolved when none fails and one is unresolved or not measured. A relaxed claim (``relaxation_of``) is never
    a headline claim. ``overrides`` (--set KEY=VALUE) make the figure's own setting where the config's default
    differs; a ``variant_of`` entry is reported beside the entry it varies, never in its place."""

    config: str
    figure: str
    headline: tuple[str, ...]
    words: str
    overrides: tuple[str, ...] = ()
    variant: str = ""  # a short name of what differs; the run is named CONFIG-VARIANT
    variant_of: str | None = None  # the entry (its name) whose headline this one is reported beside

    @property
    def name(self) -> str:
        return f"{self.config}-{self.variant}" if self.variant else self.config


# The headline of Fig. 2 (and of App. D.5, "analogous results to Figure 2").
FIG2_HEADLINE = ("all-phases-present", "sharp-phases-hot", "poor-phases-narrow", "iv-b-hotter-than-iv-a",
                 "best-in-iv-b")
FIG2_WORDS = ("there are two phase transitions (identified by different metrics) that separate each plot into four "
              "primary regions \u2026 CKA can be used to further divide Phase IV into Phase IV-A and Phase IV-B "
              "\u2026 Phase IV-B is precisely the region with globally nice landscapes, exhibiting the highest test "
              "accuracies")
# In the order of the paper. The words are the paper's (paper.md, sections 3.1-3.3 and App. D), quoted: "globally
# nice" is well connected AND similar (section 1), so "the best test accuracy ... globally nice and locally flat"
# is best-in-iv-b; the relaxation best-in-phase-iv (IV-A or IV-B) stays beside it in the claims table only.
GALLERY = [
    Entry("demo", "Fig. 2", FIG2_HEADLINE, FIG2_WORDS),
    Entry("cpu-lr-decay", "Fig. 3", ("sharp-phases-hot", "poor-phases-narrow", "best-in-iv-b"),
          "we see that the four phases are still present, and the test accuracy is maximized when the loss "
          "landscape is globally nice and locally flat"),
    Entry("cpu-noisy-labels", "Fig. 4", ("best-in-iv-b", "dark-band-at-boundary", "sharp-beats-iii-on-noisy-labels"),
          "the loss landscape which is both globally nice and locally flat achieves the best test accuracy, shown "
          "in Phase IV-B. However, \u2026 a \u201cdark band\u201d arises between different learning phases "
          "\u2026 for small models with poor connectivity, we find that training to zero loss can harm test "
          "accuracy"),
    # Fig. 4 on the double-descent recipe (15% noise, no weight decay, constant lr, 300 epochs, lr as the
    # temperature: App. D.3), where a test-error peak at the interpolation threshold is known to exist; the same
    # figure and headline, reported beside cpu-noisy-labels, never in its place.
    Entry("cpu-double-descent", "Fig. 4", ("best-in-iv-b", "dark-band-at-boundary", "sharp-beats-iii-on-noisy-labels"),
          "the loss landscape which is both globally nice and locally flat achieves the best test accuracy, shown "
          "in Phase IV-B. However, \u2026 a \u201cdark band\u201d arises between different learning phases "
          "\u2026 for small models with poor connectivity, we find that training to zero loss can harm test "
          "accuracy", variant_of="cpu-noisy-labels"),
    Entry("cpu-weight-decay", "Fig. 5", ("best-in-iv-b",),
          "once again, the best test accuracy is obtained when the loss landscape is both globally nice and locally "
          "flat"),
    # The authors' CKA probes (mixup of the cell's own training inputs); the config's default, held-out test
    # inputs, is the variant below, reported beside it.
    Entry("cpu-data-size", "Fig. 6", ("cka-rises-with-data", "accuracy-rises-with-data"),
          "CKA precisely captures the relationship of increasing test accuracy with additional data",
          overrides=("metrics.cka_probe_pool=train", "metrics.cka_probe_maker=mixup"), variant="authors-probes"),
    Entry("cpu-data-size", "Fig. 6", ("cka-rises-with-data", "accuracy-rises-with-data"),
          "CKA precisely captures the relationship of increasing test accuracy with additional data",
          variant="held-out-probes", variant_of="cpu-data-size-authors-probes"),
    Entry("cpu-label-noise", "Fig. 7", ("mc-falls-with-label-noise", "cka-falls-with-label-noise",
                                         "trace-insensitive-to-label-noise"),
          "training with a large amount of noise does not significantly affect the Hessian \u2026 training with "
          "more noisy labels leads to more poorly-connected loss landscapes"),
    Entry("cpu-learning-rate", "App. D.5", FIG2_HEADLINE,
          "learning rate as an alternative temperature parameter, which produces analogous results to Figure 2"),
]
VERDICT = {True: "holds", False: "**does not hold**", None: "unresolved"}


def landscape_cmd() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "landscape")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "orchestrator.cli.main"]


def reduced_overrides(name: str) -> list[str]:
    """--set values that shrink a config to 2 x 2 cells x 2 seeds with short training (pipeline checks only)."""
    from orchestrator.config import load_config

    cfg = load_config(name, check_data=False)

    def ends(values) -> str:
        return "[" + ", ".join(repr(v) for v in (values[0], values[-1])) + "]"

    return [f"load.values={ends(cfg.load.values)}", f"temperature.values={ends(cfg.temperature.values)}",
            "seeds=[0, 1]", "training.epochs=2", "metrics.curve.epochs=1", "metrics.hessian_samples=128",
            "metrics.hessian_eigen_max_iter=10", "metrics.hessian_trace_max_probes=5", "metrics.cka_probes=64"]


RUN_RECORD = "gallery.json"  # in each run directory: how its `landscape run` went, for later --reuse


def run_config(name: str, run_dir: str, overrides: list[str], reuse: bool) -> dict:
    """Run (or, with ``reuse``, re-analyse) one config; returns what gallery.md reports about the run.

    A fresh run writes RUN_DIR/gallery.json (wall time, load, command, end time); --reuse reports that record,
    so that re-generating the page keeps each run's own time rather than the time of the re-analysis."""
    record_path = os.path.join(run_dir, RUN_RECORD)
    if reuse and os.path.exists(os.path.join(run_dir, "config.yaml")):
        cmd = landscape_cmd() + ["analyze", run_dir]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        if not os.path.exists(record_path):
            raise RuntimeError(f"{run_dir} has no {RUN_RECORD} (not made by this script); run it without --reuse")
        with open(record_path, encoding="utf-8") as fh:
            info = json.load(fh)
        return {**info, "run_dir": run_dir, "reused": True, "finished": dt.datetime.fromisoformat(info["finished"])}
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    cmd = landscape_cmd() + ["run", name, "--out", run_dir] + [a for kv in overrides for a in ("--set", kv)]
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    info = {"name": name, "wall_seconds": wall, "command": cmd[1:], "load_before": load_before,
            "load_after": os.getloadavg()[0], "finished": dt.datetime.now(dt.timezone.utc).isoformat()}
    with open(record_path, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    return {**info, "run_dir": run_dir, "reused": False, "finished": dt.datetime.fromisoformat(info["finished"])}


def load_note(info: dict) -> str:
    if info.get("load_before") is None:
        return "load average not recorded"
    return (f"1-minute load average {info['load_before']:.1f} before and {info['load_after']:.1f} after on this "
            "2-core machine (above 2: other work shared the cores, so the time is an upper bound)")


def figure_label(entry: Entry) -> str:
    """The figure, and for a variant which entry it is reported beside."""
    return f"{entry.figure}, variant beside {entry.variant_of}" if entry.variant_of else entry.figure


def claim_verdict(c: dict | None) -> str:
    """A claim's verdict in the gallery's words, with its p when resampled: "holds (p 0.97)", "unresolved (p 0.55)"."""
    if c is None or not c["applies"]:
        return "not measured"
    status = c.get("status") or (VERDICT[c["holds"]] if c["holds"] is not None else "not measured")
    if status == "does not hold":
        status = VERDICT[False]
    p = c.get("p_holds")
    return status + (f" (p {p:.2f})" if p is not None else "")


def claims_table(claims: list[dict]) -> str:
    rows = ["| claim | figure | verdict | evidence |", "|---|---|---|---|"]
    for c in sorted(claims, key=lambda c: not c["applies"]):
        if not c["applies"]:
            continue
        rows.append(f"| {c['claim']} | {c['figure']} | {claim_verdict(c)} | {c['summary']} |")
    return "\n".join(rows)


def headline_verdict(entry: Entry, claims: list[dict]) -> tuple[bool | None, str]:
    """(holds, the headline claims' verdicts in words), counted strictly: True only when every headline claim
    holds (analysis.claims: p >= 0.9 over the seed resamplings), False when one does not hold, None (unresolved)
    otherwise: a claim unresolved by seed noise or not measured."""
    by_id = {c["id"]: c for c in claims}
    verdicts = [by_id[cid]["holds"] if cid in by_id and by_id[cid]["applies"] else None for cid in entry.headline]
    holds = False if False in verdicts else (None if None in verdicts else True)
    words = ", ".join(f"{cid} {claim_verdict(by_id.get(cid))}" for cid in entry.headline)
    return holds, words


def headline_status(entry: Entry, claims: list[dict]) -> str:
    """The headline's verdict in plain words: "holds", "does not hold", "unresolved" (a claim is unresolved by seed
    noise) or "not measured" (no claim unresolved, one not measured)."""
    holds, _ = headline_verdict(entry, claims)
    if holds is not None:
        return "holds" if holds else "does not hold"
    by_id = {c["id"]: c for c in claims}
    shaky = any(by_id.get(cid, {}).get("status") == "unresolved" for cid in entry.headline)
    return "unresolved" if shaky else "not measured"


def section(info: dict, entry: Entry, claims: list[dict], docs_dir: str) -> str:
    """The Markdown of one config: how it ran, its headline, its phase map (text and picture), panels, claims."""
    import pandas as pd

    from analysis.plot_data import text_grid
    from orchestrator.config.run_config import load_run_config

    cfg = load_run_config(info["run_dir"])  # as run: with the overrides, if any
    analysis = os.path.join(info["run_dir"], "analysis")
    cells = pd.read_parquet(os.path.join(analysis, "cells.parquet"))
    images = os.path.join(docs_dir, "gallery")
    os.makedirs(images, exist_ok=True)
    pictures = {}
    for kind in ("phase_map", "panels"):
        target = os.path.join(images, f"{info['name']}_{kind}.png")
        shutil.copyfile(os.path.join(analysis, f"{kind}.png"), target)
        pictures[kind] = os.path.relpath(target, docs_dir)
    applies = [c for c in claims if c["applies"]]
    held = sum(1 for c in applies if c["holds"] is True)
    unresolved = sum(1 for c in applies if c.get("status") == "unresolved")
    how = "`landscape " + " ".join(info["command"]) + "`" + (", re-analysed later" if info["reused"] else "")
    holds, words = headline_verdict(entry, claims)
    return "\n".join([
        f"## {info['name']} ({figure_label(entry)})",
        "",
        cfg.description.strip(),
        "",
        *([f"Set for the figure: `{' '.join(entry.overrides)}`.", ""] if entry.overrides else []),
        f"The figure's headline, in the paper's words: \u201c{entry.words}\u201d. Checked as {words}: the headline "
        f"**{headline_status(entry, claims)}** (counted strictly: every claim must hold at p >= 0.9 over the seed "
        "resamplings).",
        "",
        f"Run {info['finished']:%Y-%m-%d %H:%M} UTC: {len(cfg.model_keys())} models, {len(cfg.pair_keys())} pairs, "
        f"**{info['wall_seconds'] / 60:.1f} min** wall ({how}); {load_note(info)}. "
        f"Claims that apply: **{held} of {len(applies)} hold**, {unresolved} unresolved by seed noise.",
        "",
        "```",
        text_grid(cells, "phase"),
        "```",
        "",
        f"![{info['name']} phase map]({pictures['phase_map']})",
        "",
        f"![{info['name']} panels]({pictures['panels']})",
        "",
        claims_table(claims),
        "",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="configs to run (default: all of GALLERY)")
    parser.add_argument("--runs", default="runs/gallery", help="folder of the run directories")
    parser.add_argument("--docs", default="docs", help="folder of gallery.md and gallery/")
    parser.add_argument("--reuse", action="store_true", help="re-analyse existing run directories instead of running")
    parser.add_argument("--reduced", action="store_true", help="2 x 2 cells, 2 seeds, 2 epochs: a pipeline check")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    chosen = [e for e in GALLERY if not args.only or e.config in args.only or e.name in args.only]
    unknown = set(args.only or ()) - {e.config for e in GALLERY} - {e.name for e in GALLERY}
    if unknown:
        parser.error(f"not gallery configs: {sorted(unknown)}; choose from {[e.name for e in GALLERY]}")
    parts, summary = [], ["| config | figure | headline claims | headline | wall |", "|---|---|---|---|---|"]
    for entry in chosen:
        overrides = (reduced_overrides(entry.config) if args.reduced else []) + list(entry.overrides) + args.overrides
        info = {**run_config(entry.config, os.path.join(args.runs, entry.name), overrides, args.reuse),
                "name": entry.name}
        with open(os.path.join(info["run_dir"], "analysis", "claims.json"), encoding="utf-8") as fh:
            claims = json.load(fh)
        status = headline_status(entry, claims)
        print(f"{entry.name}: {info['wall_seconds']:.0f} s, headline {status}", flush=True)
        shown = f"**{status}**" if status == "does not hold" else status
        summary.append(f"| {entry.name} | {figure_label(entry)} | {', '.join(entry.headline)} | {shown} | "
                       f"{info['wall_seconds'] / 60:.1f} min |")
        parts.append(section(info, entry, claims, args.docs))
    today = dt.date.today().isoformat()
    head = [
        "# The CPU gallery",
        "",
        f"Generated {today} by `python scripts/gallery.py` from runs made that day on this project's 2-core CPU "
        "VM. Each section: the config, how long `landscape run` took, its phase map (text and picture; hot end "
        "on top), the metric panels, and the paper's claims that apply to its knobs as `landscape analyze` checked "
        "them (RUN_DIR/analysis/claims.json; thresholds in analysis/claims.py). Each config's comment says which "
        "claims of its figure it is meant to show and which it does not; the pilots behind the settings are in "
        "docs/science.md.",
        "",
    ]
    head += ["Each figure's headline (the claims the paper's own sentences about it make; scripts/gallery.py, "
             "GALLERY), counted strictly: it holds when every one of its claims holds at p >= 0.9 over the seed "
             "resamplings of `landscape analyze`, does not hold when one fails (p <= 0.1), and is unresolved "
             "otherwise. A relaxed claim (best-in-phase-iv) is never a headline claim; a variant is reported beside "
             "its figure's entry, never in its place.", "", *summary, ""]
    if args.reduced:
        head += ["**Reduced runs** (--reduced: 2 x 2 cells, 2 seeds, 2 epochs): a pipeline check, not the science.", ""]
    if args.overrides:
        head += [f"Overrides applied to every config: `{' '.join(args.overrides)}`.", ""]
    os.makedirs(args.docs, exist_ok=True)
    with open(os.path.join(args.docs, "gallery.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(head + parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
