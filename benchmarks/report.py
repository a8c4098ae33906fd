"""What writing report.html costs inside `landscape analyze`, next to drawing the figures, in one process.

    python benchmarks/report.py [--repeats R] [--demo-wall-seconds S] [--released ARCHIVE]

Runs ``analysis.api.analyze_run`` R times (default 5) on a demo-sized run (tests/analysis_synthetic.py: 16
cells x 3 seeds, every table the demo writes) and, when the authors' released archive is there, on its 210
cells. Inside each call it times, by wrapping the functions analyze_run calls (nothing else changes):
  figures  save_phase_map + save_panels + save_curves (matplotlib, PNG and PDF)
  report   render_report (building report.html: panels, table, claims, provenance) + writing it
and prints the medians, report / figures, report / analyze, and report as a share of the demo's wall time
(``--demo-wall-seconds``, default 122 s: `landscape run demo` on the idle 2-core VM, docs/benchmarks.md).
The old and the new report cannot run side by side in one process (one analysis/report.py), so the figure
step, which did not change, is the yardstick: compare the printed ratio before and after a change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import analysis.api as api  # noqa: E402
from tests.analysis_synthetic import write_synthetic_run  # noqa: E402

DEFAULT_ARCHIVE = "/work/shared/reference/taxonomy-released/results.tar.gz"
# `landscape run demo` wall time on the idle 2-core VM (docs/benchmarks.md: 122 s with the default cohorts).
DEMO_WALL_SECONDS = 122.0
STEPS = {"figures": ("save_phase_map", "save_panels", "save_curves"), "report": ("render_report", "_write_text")}


def timed_analysis(run_dir: str, out_dir: str) -> dict[str, float]:
    """Seconds of one analyze_run: total, and per step of STEPS (the functions are wrapped for this call only)."""
    spent: dict[str, float] = defaultdict(float)
    originals = {}
    for step, names in STEPS.items():
        for name in names:
            original = getattr(api, name)
            originals[name] = original

            def wrapper(*args, _original=original, _step=step, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    spent[_step] += time.perf_counter() - start

            setattr(api, name, wrapper)
    try:
        start = time.perf_counter()
        api.analyze_run(run_dir, out_dir=out_dir)
        spent["analyze"] = time.perf_counter() - start
    finally:
        for name, original in originals.items():
            setattr(api, name, original)
    return dict(spent)


def report_case(label: str, run_dir: str, repeats: int, demo_wall: float) -> None:
    runs = []
    for k in range(repeats):
        with tempfile.TemporaryDirectory(prefix="landscape-report-bench-") as out:
            runs.append(timed_analysis(run_dir, out))
    med = {key: statistics.median(r[key] for r in runs) for key in ("analyze", "figures", "report")}
    html_size = None
    with tempfile.TemporaryDirectory(prefix="landscape-report-bench-") as out:
        api.analyze_run(run_dir, out_dir=out)
        html_size = os.path.getsize(os.path.join(out, "report.html"))
    print(f"\n{label} (median of {repeats}):")
    print(f"  analyze_run   {med['analyze']:7.3f} s")
    print(f"  figures       {med['figures']:7.3f} s")
    print(f"  report        {med['report']:7.3f} s   (report.html {html_size / 1e3:.0f} kB)")
    print(f"  report / figures {med['report'] / med['figures']:.3f}; report / analyze_run "
          f"{med['report'] / med['analyze']:.3f}; report / demo wall ({demo_wall:.0f} s) "
          f"{med['report'] / demo_wall:.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--demo-wall-seconds", type=float, default=DEMO_WALL_SECONDS)
    parser.add_argument("--released", default=DEFAULT_ARCHIVE, help="the authors' results.tar.gz ('' to skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="landscape-report-bench-run-") as tmp:
        demo = os.path.join(tmp, "demo")
        write_synthetic_run(demo)
        report_case("demo-sized run (16 cells, tests/analysis_synthetic.py)", demo, args.repeats,
                    args.demo_wall_seconds)
        if args.released and os.path.exists(args.released):
            released = os.path.join(tmp, "released")
            api.import_reference(args.released, released)
            report_case("the authors' released results (210 cells)", released, max(1, args.repeats // 2),
                        args.demo_wall_seconds)


if __name__ == "__main__":
    main()
