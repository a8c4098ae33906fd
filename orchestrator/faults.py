"""Fault injection: a TESTING hook, off unless the variable is set on the driver (tests/test_faults.py).

The pattern of Ray Tune's own restore tests: a job crashes while a marker file is absent and creates it,
so it crashes exactly once; without a marker it crashes on every attempt. The file holds JSON:
  {"crash": [{"key": JOB KEY, "mode": MODE, "marker": PATH (optional: crash once), ...}],
   "log": PATH (optional: one JSON line per job attempt that does work: key, pid, resumed_from epoch)}
MODE:
  "exit"   the worker process dies;  "raise"  the job raises
           (both when the job starts, or "at_epoch": N, after the training checkpoint of epoch N)
  "block"  the job waits, when it starts, until the file "until" exists (at most BLOCK_LIMIT_S), after
           creating the file "started" if given: a sweep that cannot finish before a test acts on it
  "enospc" | "erofs"   every write of the key's table parts (by its worker, or by the driver recording it)
           raises OSError(ENOSPC | EROFS): a full or read-only disk, without touching a real one

Production code calls only ``load``, ``log_attempt``, ``inject`` and ``writing``, which do nothing without a
fault file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time

from orchestrator import storage

FAULT_INJECT_ENV = "LANDSCAPE_FAULT_INJECT"
BLOCK_LIMIT_S = 600.0  # a blocked job gives up waiting eventually: a test that forgot its marker still ends
_WRITE_FAULTS = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}


def load(path: str | None) -> dict:
    """The faults of the file at ``path`` (FAULT_INJECT_ENV on the driver), or {} when there is none."""
    if not path:
        return {}
    with open(path) as f:
        return json.load(f)


def log_attempt(faults: dict, key: str, resumed_from) -> None:
    if faults.get("log"):
        with open(faults["log"], "a") as f:
            f.write(json.dumps({"key": key, "pid": os.getpid(), "resumed_from": resumed_from}) + "\n")


def inject(faults: dict, key: str, epoch: int | None = None) -> None:
    for fault in faults.get("crash", []):
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


def inject_write(faults: dict, key: str, uri: str) -> None:
    for fault in faults.get("crash", []):
        if fault.get("key") == key and fault.get("mode") in _WRITE_FAULTS:
            code = _WRITE_FAULTS[fault["mode"]]
            raise OSError(code, f"{os.strerror(code)} (injected)", uri)


@contextlib.contextmanager
def writing(uri: str, faults: dict | None = None, key: str | None = None):
    """Around a write into the run directory: a write error no retry fixes (full, read-only, no permission:
    storage.STORAGE_ERRNOS) becomes StorageFullError naming ``uri``, which stops the sweep."""
    try:
        if faults:
            inject_write(faults, key, uri)
        yield
    except OSError as exc:
        if storage.storage_problem(exc) is None:
            raise
        raise storage.StorageFullError(f"cannot write {uri}: {exc.strerror or os.strerror(exc.errno)}") from None
