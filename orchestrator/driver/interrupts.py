"""Ctrl-C and SIGTERM in `landscape run` / `resume` (and landscape.run / resume called in the main thread): the
first signal is remembered and acted on at the next safe point, never in the middle of starting or using Ray.

Why not simply let Python raise KeyboardInterrupt where the main thread happens to be: measured (Ray 2.60, a
busy 2-core machine, SIGINT at 0.5 to 15 s into `landscape run smoke`), a KeyboardInterrupt raised
  * before the command's own handler was installed (loading the config, planning) ended in click's
    "Aborted!", exit 1, and no resume line;
  * inside ray.init (while it forks Ray's daemons) was swallowed by an at-fork handler of `logging`
    ("Exception ignored in: _releaseLock"): the Ctrl-C was lost and the sweep ran to its end;
  * inside ray.init's gRPC start-up left threads that crashed the interpreter's finalisation (exit 139,
    reported by a user in 3 of 11 tries).
So from the start of the command (orchestrator/cli/main.py installs it before the config, torch or Ray is loaded)
the handler only records the signal; :func:`check` raises KeyboardInterrupt at the safe points: between the
steps of start-up, at every step of Tune's event loop (the sweep's stopper, orchestrator/driver/tune_adapters.py),
between rounds of a sweep. Where no Ray runs (the analysis at the end) :meth:`StopSignals.immediately` lets
the signal raise at once. Later signals are ignored while the command stops (a second Ctrl-C used to cut
Ray's shutdown). The command line then ends with ``os._exit`` (orchestrator/cli/main.py).

Before the command's handler is installed (Python's start and imports, well under a second) Python's own
handler applies: nothing has started then, and the process ends by SIGINT as any Python program does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_active: StopSignals | None = None  # the handlers in place, if any (one per process: signals are per process)


class StopSignals:
    """The state of the stop signals of one command (see the module docstring). ``signum``: the first signal
    received, or None. ``note``: bytes written to stderr when a signal is deferred (the command line says
    that it is stopping; the Python API prints nothing)."""

    def __init__(self, note: bytes | None = None):
        self.signum: int | None = None
        self.note = note
        self._immediate = False
        self._urgent = False
        self._previous: dict = {}

    def handler(self, signum, frame) -> None:
        if self._urgent:  # interrupt_now(): the main thread must leave a Ray call that waits on a dead Ray
            self._urgent = False
            raise KeyboardInterrupt
        if self.signum is not None:
            return  # already stopping: a second Ctrl-C must not cut Ray's shutdown
        self.signum = signum
        if self._immediate:
            raise KeyboardInterrupt
        if self.note:
            try:
                os.write(2, self.note)  # not print(): the main thread may be inside a write to sys.stderr
            except OSError:
                pass

    def check(self) -> None:
        """A safe point: raise KeyboardInterrupt if a stop signal came."""
        if self.signum is not None:
            raise KeyboardInterrupt

    def install(self) -> None:
        """Put the handler in place (again: ray.init installs a SIGTERM handler of its own)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; the Python API in another thread keeps its default
        for sig in STOP_SIGNALS:
            previous = signal.signal(sig, self.handler)
            if previous != self.handler:
                self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    @contextlib.contextmanager
    def immediately(self):
        """Within: a signal raises KeyboardInterrupt at once (for work without Ray, which has no safe points)."""
        self.check()
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False

    def urgent(self) -> None:
        """The next SIGINT (``_thread.interrupt_main``) raises at once, whatever came before, and is not taken
        for the user's Ctrl-C."""
        self._urgent = True


@contextlib.contextmanager
def stop_signals(note: bytes | None = None):
    """The StopSignals in place, installing one (and restoring the handlers before it afterwards) when none is."""
    global _active
    if _active is not None:
        yield _active
        return
    stop = StopSignals(note)
    stop.install()
    _active = stop
    try:
        yield stop
    finally:
        _active = None
        stop.restore()


def check() -> None:
    """A safe point of whatever runs under the command's handler (nothing when none is installed)."""
    if _active is not None:
        _active.check()


def interrupt_now() -> None:
    """From another thread: raise KeyboardInterrupt in the main thread at once (orchestrator/cluster/ray_leftovers.py:
    the local Ray died and the main thread may wait on it forever)."""
    import _thread

    if _active is not None:
        _active.urgent()
    _thread.interrupt_main()
