"""Live progress of a sweep: one redrawn status line on a terminal, one log line per finished job otherwise.

    models 12/72 done (ok 11, diverged 1, failed 0) · 2 running · 58 pending | pairs 3/72 ... | 1m32s elapsed, ETA 4m10s
"""

from __future__ import annotations

import shutil
import sys
import time

from orchestrator.state import KindCounts, SweepState

REDRAW_EVERY_S = 0.5  # terminal redraws at most this often


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def _kind_summary(name: str, c: KindCounts) -> str:
    return (f"{name} {c.finished}/{c.total} done (ok {c.ok + c.done_before}, diverged {c.diverged}, "
            f"failed {c.failed}) · {c.running} running · {c.pending} pending")


def _kind_compact(name: str, c: KindCounts) -> str:
    extra = [f"{c.running} running"] + ([f"{c.failed} failed"] if c.failed else [])
    return f"{name} {c.finished}/{c.total} ({', '.join(extra)})"


def status_line(state: SweepState, width: int | None = None) -> str:
    """The full status line, or a compact one when it would not fit ``width`` columns (ETA always kept)."""
    elapsed = time.monotonic() - state.started
    times = f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(state.eta_seconds())}"
    line = f"{_kind_summary('models', state.models)} | {_kind_summary('pairs', state.pairs)} | {times}"
    if width is None or len(line) <= width:
        return line
    line = f"{_kind_compact('models', state.models)} | {_kind_compact('pairs', state.pairs)} | {times}"
    return line if len(line) <= width else line[-width:]


def _event_line(kind: str, key: str, status: str, result: dict) -> str:
    detail = ""
    if status == "failed" or (result or {}).get("error"):
        detail = f" error: {(result or {}).get('error')}"
    elif kind == "model" and result.get("test_acc") is not None:
        detail = f" test_acc={result['test_acc']:.3f}"
    elif kind == "pair" and result.get("mode_connectivity") is not None:
        detail = f" mc={result['mode_connectivity']:+.2f}"
    took = result.get("wall_seconds") if result else None
    took_text = " (already done)" if result.get("skipped") else (f" in {format_seconds(took)}" if took else "")
    if not result.get("skipped") and result.get("cohort_size", 1) > 1 and result.get("cohort_seconds"):
        # A cohort trains its members together: the time is the cohort's, not this member's alone.
        took_text = f" in {format_seconds(result['cohort_seconds'])} (a cohort of {result['cohort_size']})"
    note = f" (note: {result['note']})" if result.get("note") else ""
    return f"{kind:5s} {key} {status}{took_text}{detail}{note}"


def make_progress(stream=None, tty: bool | None = None):
    """A factory (state, recorder) -> Tune Callback printing progress to ``stream`` (default stdout)."""
    from ray.tune import Callback

    stream = stream or sys.stdout
    if tty is None:
        tty = bool(getattr(stream, "isatty", lambda: False)())

    class Progress(Callback):
        def __init__(self, state: SweepState, recorder):
            self.state, self.recorder = state, recorder
            self._seen = 0
            self._last_draw = 0.0
            self._drawn = False

        def _flush_events(self) -> None:
            events = self.recorder.events
            while self._seen < len(events):
                kind, key, status, result = events[self._seen]
                self._seen += 1
                line = _event_line(kind, key, status, result or {})
                if tty:
                    # Finished jobs scroll above the status line; the status line is redrawn below them.
                    stream.write("\r\x1b[K" + line + "\n")
                else:
                    c = self.state.counts(kind)
                    stream.write(f"[{c.finished}/{c.total} {kind}s] {line}\n")
                self._drawn = False

        def _draw(self, force: bool = False) -> None:
            self._flush_events()
            if not tty:
                stream.flush()
                return
            now = time.monotonic()
            if not force and self._drawn and now - self._last_draw < REDRAW_EVERY_S:
                return
            width = shutil.get_terminal_size((160, 20)).columns
            stream.write("\r\x1b[K" + status_line(self.state, max(20, width - 1)))
            stream.flush()
            self._last_draw, self._drawn = now, True

        def on_step_end(self, iteration, trials, **info):
            self._draw()

        def on_trial_start(self, iteration, trials, trial, **info):
            self._draw()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._draw(force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._draw(force=True)

        def on_experiment_end(self, trials, **info):
            self._flush_events()
            if tty:
                stream.write("\r\x1b[K" + status_line(self.state) + "\n")
            else:
                stream.write(status_line(self.state) + "\n")
            stream.flush()

    return Progress
