"""Live progress of a sweep: a progress bar on a terminal (tqdm) with the finished jobs scrolling above it, one
log line per finished job otherwise (CI logs, pipes).

    [finished job lines...]
     17%|##        | 24/144 jobs · models 21/72 (2 running) | pairs 3/72 (0 running) | 1m32s elapsed, ETA 4m10s

The ETA is SweepState.eta_seconds (known from the running trials' first epoch reports on), counted down every
second between new estimates (state.EtaCountdown); tqdm's own ETA (finished jobs over time) is not shown: it
stands still between completions and ignores what the jobs cost.
"""

from __future__ import annotations

import shutil
import sys
import threading

from orchestrator.driver.state import EtaCountdown, KindCounts, SweepState

TICK_S = 1.0  # the bar is redrawn at least this often on a terminal (the ETA counts down)
STALE_S = 5.0  # no Tune callback for this long: the redraw thread ends (Tune's loop has gone; the next starts it)
BAR_FORMAT = "{percentage:3.0f}%|{bar:12}| {n_fmt}/{total_fmt} jobs · {desc}"
BAR_FIXED = 38  # columns of BAR_FORMAT around {desc} (up to 99999/99999 jobs)


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


def eta_text(seconds: float | None, work_left: bool) -> str:
    """"?" before anything is measured; "finishing" when the estimate has run out but jobs are left."""
    if seconds is not None and seconds <= 0 and work_left:
        return "finishing"
    return format_seconds(seconds)


def status_line(state: SweepState, width: int | None = None, countdown: EtaCountdown | None = None) -> str:
    """The full status line, or a compact one when it would not fit ``width`` columns (ETA always kept).
    ``countdown``: the ETA as shown live (counted down between estimates); None: estimated now."""
    now = state.clock()
    eta = countdown.read(state, now) if countdown is not None else state.eta_seconds(now)
    times = f"{format_seconds(now - state.started)} elapsed, ETA {eta_text(eta, state.work_left())}"
    return _fit((_kind_summary("models", state.models), _kind_summary("pairs", state.pairs)),
                (_kind_compact("models", state.models), _kind_compact("pairs", state.pairs)), times, width)


def _fit(full: tuple, compact: tuple, times: str, width: int | None) -> str:
    """The full line (models | pairs | times), else the compact one, else its end (the ETA is kept)."""
    line = f"{full[0]} | {full[1]} | {times}"
    if width is None or len(line) <= width:
        return line
    line = f"{compact[0]} | {compact[1]} | {times}"
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
            self.view = TerminalView(state, stream) if tty else None

        def _flush_events(self) -> None:
            events = self.recorder.events
            while self._seen < len(events):
                kind, key, status, result = events[self._seen]
                self._seen += 1
                line = _event_line(kind, key, status, result or {})
                if self.view is not None:
                    self.view.write(line)  # above the bar
                else:
                    c = self.state.counts(kind)
                    stream.write(f"[{c.finished}/{c.total} {kind}s] {line}\n")

        def _draw(self) -> None:
            self._flush_events()
            if self.view is None:
                stream.flush()
            else:
                self.view.update()

        def on_step_end(self, iteration, trials, **info):
            self._draw()

        def on_trial_start(self, iteration, trials, trial, **info):
            self._draw()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._draw()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._draw()

        def on_trial_error(self, iteration, trials, trial, **info):
            self._draw()

        def on_experiment_end(self, trials, **info):
            self._flush_events()
            self.close()
            stream.write(status_line(self.state) + "\n")
            stream.flush()

        def close(self) -> None:
            """Stop drawing (run_sweep calls it after each experiment, also one that raised); idempotent."""
            if self.view is not None:
                self.view.close()

    return Progress


class TerminalView:
    """The terminal side of the progress view: a tqdm bar over the sweep's jobs (models + pairs) whose text is
    the status line, redrawn by Tune's callbacks (on the driver's main thread) and by a daemon thread every
    TICK_S, so that the elapsed time and the ETA count on while Tune is quiet.

    Only the main thread reads the sweep state (its dicts change under Tune's callbacks): it computes the
    counts' text and the ETA estimate; the thread only counts the time down from them."""

    def __init__(self, state: SweepState, stream):
        self.state, self.stream = state, stream
        self.countdown = EtaCountdown()
        self._lock = threading.RLock()  # one drawer at a time: tqdm's line is shared
        self._bar = None
        self._counts = None  # (finished jobs, full summaries, compact ones, work left): update() reads them
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._touched = 0.0  # state.clock() of the last Tune callback

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks with the Tuner's state (never restored here): without the lock, thread
        and bar, which do not pickle."""
        return {"state": self.state, "stream": self.stream}

    def __setstate__(self, saved: dict) -> None:
        self.__init__(saved["state"], saved["stream"])

    def write(self, line: str) -> None:
        """A line above the bar (tqdm clears the bar, writes the line, draws the bar again)."""
        from tqdm import tqdm

        with self._lock:
            tqdm.write(line, file=self.stream)

    def update(self) -> None:
        """From a Tune callback: read the state, draw, and keep the redraw thread running."""
        s = self.state
        now = s.clock()
        self._touched = now
        with self._lock:
            self.countdown.update(s, now)
            self._counts = (s.models.finished + s.pairs.finished,
                            (_kind_summary("models", s.models), _kind_summary("pairs", s.pairs)),
                            (_kind_compact("models", s.models), _kind_compact("pairs", s.pairs)),
                            s.work_left())
            self.render(now)
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick, name="landscape-progress", daemon=True)
            self._thread.start()

    def render(self, now: float) -> None:
        """Draw the bar from what update() read, the ETA counted down to ``now``."""
        with self._lock:
            if self._counts is None:  # closed, or no callback yet
                return
            finished, full, compact, left = self._counts
            eta = eta_text(self.countdown.value(now), left)
            times = f"{format_seconds(now - self.state.started)} elapsed, ETA {eta}"
            # The size shutil finds (COLUMNS, the terminal, else 160 x 20): tqdm's own reads a terminal of size 0
            # (a pseudo-terminal nobody sized, as under `script`) as -1 rows, and then draws nothing.
            columns, rows = shutil.get_terminal_size((160, 20))
            text = _fit(full, compact, times, max(20, columns - 1 - BAR_FIXED))
            if self._bar is None:
                from tqdm import tqdm

                # Drawn only by render(): tqdm's own timing, rate and ETA are not used.
                self._bar = tqdm(total=self.state.models.total + self.state.pairs.total, initial=finished,
                                 desc=text, file=self.stream, bar_format=BAR_FORMAT, leave=False,
                                 ncols=columns - 1, nrows=max(2, rows), mininterval=0, miniters=0, smoothing=0)
                return
            self._bar.ncols, self._bar.nrows = columns - 1, max(2, rows)  # the terminal may have been resized
            self._bar.n = finished
            self._bar.set_description_str(text, refresh=False)
            self._bar.refresh()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            now = self.state.clock()
            if now - self._touched > STALE_S:
                return  # Tune's loop is not running (it ended in an exception, or blocks): draw nothing
            self.render(now)

    def close(self) -> None:
        """At the end of a Tune experiment: stop the thread and remove the bar (the final line follows)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self._counts = None
