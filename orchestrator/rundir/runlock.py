"""An exclusive lock on a run directory, so two sweeps never write one run (see RunLock)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

import filelock

from orchestrator.rundir import storage
from orchestrator.rundir.storage import RunDirError

# A lock on an object store is a lease: a small JSON object the holder renews; one not renewed for
# LEASE_SECONDS is abandoned (its process died without releasing it). The lease is long against clock skew
# between machines (the renewal time is the holder's clock) and against a slow store.
LEASE_SECONDS = 300.0
RENEW_SECONDS = 30.0


def _read_lease(uri: str, attempts: int = 5) -> dict | None:
    """The lease document, or None when there is none (or it stays unreadable).

    A read that overlaps a renewal can be torn on an object store (the reader learns the size, then the
    object is replaced by one of another length before the bytes arrive), so an unreadable lease is read
    again a few times before it counts as absent: a live lease must never look free.
    """
    for attempt in range(attempts):
        try:
            lease = json.loads(storage.read_bytes(uri).decode())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            time.sleep(0.05 * (attempt + 1))
            continue
        return lease if isinstance(lease, dict) else None
    return None


def _lease_is_live(lease: dict | None, now: float | None = None) -> bool:
    if not lease:
        return False
    try:
        renewed = float(lease.get("renewed", 0))
    except (TypeError, ValueError):
        return False
    return (now if now is not None else time.time()) - renewed < LEASE_SECONDS


def _describe_lease(lease: dict) -> str:
    age = max(0.0, time.time() - float(lease.get("renewed", 0)))
    return f"pid {lease.get('pid')} on {lease.get('host')} since {lease.get('since')}, renewed {age:.0f} s ago"


def _file_lock(run_dir: str) -> filelock.FileLock:
    """The local run dir's lock: an flock on RUN_DIR/.lock (the OS releases it when its process dies).

    Non-blocking (timeout=0: a held lock raises filelock.Timeout at once). Not a singleton and not thread-local:
    each instance has its own descriptor, so a second instance in the same process (lock_holder's probe, a
    second RunLock) is refused like another process would be, and a lock taken in one thread can be released
    in another. filelock opens the file with O_NOFOLLOW, so a symlink planted at RUN_DIR/.lock is refused
    (ELOOP), never followed to a file elsewhere.
    """
    return filelock.FileLock(os.path.join(run_dir, ".lock"), timeout=0, thread_local=False, is_singleton=False)


def _holder_path(run_dir: str) -> str:
    # Beside the lock file, not in it: filelock may truncate the lock file when it opens it, probes included.
    return os.path.join(run_dir, ".lock-holder.json")


def _read_holder(run_dir: str) -> str:
    """"pid N since ..." of the lock's holder, or "" when its record is missing or unreadable (a holder writes it
    just after taking the lock; read through storage's checks: a regular file, no symlink, bounded)."""
    try:
        holder = json.loads(storage.read_bytes(_holder_path(run_dir)).decode())
        return f"pid {int(holder['pid'])} since {str(holder['since'])[:40]}"
    except (OSError, ValueError, TypeError, KeyError):
        return ""


def _unusable_lock_file(run_dir: str, exc: OSError) -> str:
    path = os.path.join(run_dir, ".lock")
    if os.path.islink(path):
        return f"{path} is a symlink, which a run directory's lock never is; delete it, then run again"
    return f"cannot take the lock {path}: {exc.strerror or exc}; check that the run directory is writable"


class RunLock:
    """An exclusive lock on a run dir, so two sweeps never write one run.

    A local run dir gets an flock on ``RUN_DIR/.lock`` through filelock (released by the OS when the process
    dies), its holder's pid and start in ``RUN_DIR/.lock-holder.json`` (deleted on release). A URI run
    dir (s3://...) gets a lease: ``RUN_DIR/.lock`` holds the holder's pid, host and last renewal, renewed
    every RENEW_SECONDS by a thread; another process refuses the run dir while the lease is live and takes
    it over once it is LEASE_SECONDS old. Object stores have no atomic create here, so two processes
    starting within the same instant could both win (the read-back below narrows that window); the tables
    stay consistent anyway (every part is written whole), only work would be done twice.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self._file_lock: filelock.FileLock | None = None
        self._token = None
        self._stop = None
        self._thread = None

    @property
    def _lease_uri(self) -> str:
        return storage.join(self.run_dir, ".lock")

    def _acquire_lease(self) -> "RunLock":
        current = _read_lease(self._lease_uri)
        if _lease_is_live(current):
            raise RunDirError(
                f"run directory {self.run_dir} is in use by another landscape process ({_describe_lease(current)}); "
                f"wait for it to finish or stop it, then `landscape resume {self.run_dir}`. If that process is "
                f"gone, its lease expires {LEASE_SECONDS:.0f} s after its last renewal (or delete {self._lease_uri})"
            )
        token = uuid.uuid4().hex
        lease = {"token": token, "pid": os.getpid(), "host": socket.gethostname(),
                 "since": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC", "renewed": time.time()}
        storage.write_bytes(self._lease_uri, json.dumps(lease).encode())
        back = _read_lease(self._lease_uri)
        if not back or back.get("token") != token:
            raise RunDirError(f"run directory {self.run_dir} was taken by another landscape process "
                              f"({_describe_lease(back) if back else 'unknown'}) at the same moment; try again later")
        self._token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, args=(lease, self._stop), daemon=True,
                                        name="landscape-run-lease")
        self._thread.start()
        return self

    def _renew(self, lease: dict, stop: threading.Event) -> None:
        while not stop.wait(RENEW_SECONDS):
            try:
                storage.write_bytes(self._lease_uri, json.dumps({**lease, "renewed": time.time()}).encode())
            except Exception:  # a failed renewal is retried at the next beat; the lease has minutes of slack
                pass

    def _release_lease(self) -> None:
        if self._token is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        current = _read_lease(self._lease_uri)
        if current and current.get("token") == self._token:
            storage.delete(self._lease_uri)
        self._token = None

    def acquire(self) -> "RunLock":
        if storage.is_uri(self.run_dir):
            return self._acquire_lease()
        os.makedirs(self.run_dir, exist_ok=True)
        lock = _file_lock(self.run_dir)
        try:
            lock.acquire()
        except filelock.Timeout:
            holder = _read_holder(self.run_dir)
            raise RunDirError(
                f"run directory {self.run_dir} is in use by another landscape process"
                f"{' (' + holder + ')' if holder else ''}; wait for it to finish or stop it, "
                f"then `landscape resume {self.run_dir}`"
            ) from None
        except OSError as exc:
            raise RunDirError(_unusable_lock_file(self.run_dir, exc)) from exc
        try:
            # Written after taking the lock, so only the holder writes it; atomically (temp file + rename), so a
            # symlink planted at its name is replaced, never followed.
            since = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
            storage.write_bytes(_holder_path(self.run_dir), json.dumps({"pid": os.getpid(), "since": since}).encode())
        except BaseException:
            lock.release()
            raise
        self._file_lock = lock
        return self

    def release(self) -> None:
        self._release_lease()
        if self._file_lock is not None:
            try:
                os.remove(_holder_path(self.run_dir))  # while still holding: never another holder's record
            except OSError:
                pass
            self._file_lock.release()
            self._file_lock = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def lock_holder(run_dir: str) -> str | None:
    """Who holds the run dir's lock ("pid N since ..."), or None when nobody does."""
    if storage.is_uri(run_dir):
        lease = _read_lease(storage.join(run_dir, ".lock"))
        return _describe_lease(lease) if _lease_is_live(lease) else None
    if not os.path.lexists(os.path.join(run_dir, ".lock")):
        return None  # never locked here: the probe below must not create the file (status is read-only)
    probe = _file_lock(run_dir)  # a separate instance: its own descriptor, refused while anyone holds the lock
    try:
        probe.acquire()
    except filelock.Timeout:
        return _read_holder(run_dir) or "another process"
    except PermissionError:
        return None  # a run dir this user cannot write: the flock cannot be probed, and nobody can be told
    probe.release()
    return None
