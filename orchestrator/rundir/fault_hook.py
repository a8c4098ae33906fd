"""Fault injection, for tests only: a no-op unless LANDSCAPE_FAULT_INJECT is set on the driver.

tests/driver/test_faults.py, test_corruption.py, test_cohort_sweep.py and test_api.py make the real job code crash,
stall or meet a full disk through it. It lives in the package, not in tests/, because the jobs run in Ray
worker processes that import the installed package only; the driver ships the fault file's path to them in
JobContext.faults. Production code touches it at these places only, each a no-op while nothing is armed:

    arm(path)                   run_sweep on the driver and run_job in each worker: load the fault file (None:
                                disarm)
    attempt(key, resumed_from)  a job starts work on ``key``: logged, then point(key)
    point(key, epoch=None)      a crash point: at the job's start, or after the training checkpoint of ``epoch``
    write_point(key)            just before a write of ``key``'s files, inside storage.writing(uri)

The fault file holds JSON. The pattern of Ray Tune's own restore tests: a job crashes while a marker file is
absent and creates it, so it crashes exactly once; without a marker it crashes on every attempt.
  {"crash": [{"key": JOB KEY, "mode": MODE, "marker": PATH (optional: crash once), ...}],
   "log": PATH (optional: one JSON line per job attempt that does work: key, pid, resumed_from epoch)}
MODE:
  "exit"   the worker process dies;  "raise"  the job raises
           (both when the job starts, or "at_epoch": N, after the training checkpoint of epoch N)
  "block"  the job waits, when it starts, until the file "until" exists (at most BLOCK_LIMIT_S), after
           creating the file "started" if given: a sweep that cannot finish before a test acts on it
  "enospc" | "erofs"   every write of the key's files (by its worker, or by the driver recording it) raises
           OSError(ENOSPC | EROFS): a full or read-only disk, without touching a real one
"""

from __future__ import annotations

import errno
import json
import os
import time

FAULT_INJECT_ENV = "LANDSCAPE_FAULT_INJECT"
BLOCK_LIMIT_S = 600.0  # a blocked job gives up waiting eventually: a test that forgot its marker still ends
_WRITE_FAULTS = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}

_armed: dict = {}  # this process's faults: set by arm(), {} (nothing happens) unless a test set FAULT_INJECT_ENV


def arm(path: str | None) -> None:
    """Load the faults of the file at ``path`` for this process; None (the variable unset) disarms."""
    global _armed
    if not path:
        _armed = {}
        return
    with open(path) as f:
        _armed = json.load(f)


def attempt(key: str, resumed_from: int | None = None) -> None:
    """A job starts work on ``key`` (from the checkpoint of epoch ``resumed_from``): logged, then point(key)."""
    if _armed.get("log"):
        with open(_armed["log"], "a") as f:
            f.write(json.dumps({"key": key, "pid": os.getpid(), "resumed_from": resumed_from}) + "\n")
    point(key)


def point(key: str, epoch: int | None = None) -> None:
    """The crash faults of ``key`` at this point: the job's start (``epoch`` None) or after epoch ``epoch``."""
    for fault in _armed.get("crash", []):
        if fault.get("key") != key or fault.get("at_epoch") != epoch or fault.get("mode") in _WRITE_FAULTS:
            continue
        if fault.get("mode") == "block":
            if fault.get("started"):
                open(fault["started"], "w").close()
            deadline = time.monotonic() + BLOCK_LIMIT_S
            while not os.path.exists(fault["until"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            continue
        marker = fault.get("marker")
        if marker:
            if os.path.exists(marker):
                continue
            open(marker, "w").close()
        if fault.get("mode") == "exit":
            os._exit(3)  # no cleanup, no exception: as if the worker was killed
        raise RuntimeError(f"injected fault in {key}" + (f" after epoch {epoch}" if epoch else ""))


def write_point(key: str) -> None:
    """A write of one of ``key``'s files is about to happen (inside storage.writing, which names the file): raise
    the OSError of its write fault, if any."""
    for fault in _armed.get("crash", []):
        if fault.get("key") == key and fault.get("mode") in _WRITE_FAULTS:
            code = _WRITE_FAULTS[fault["mode"]]
            raise OSError(code, f"{os.strerror(code)} (injected)")
