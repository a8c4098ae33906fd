"""The local run dir's lock (orchestrator/rundir/runlock.py, an flock through filelock), without starting Ray.

* While one RunLock holds a run dir, a second RunLock (in this process or another) is refused at once with a
  message naming the holder and `landscape resume`, and lock_holder names the holder without taking the lock.
* Release frees it (and removes the holder record); a holder that dies frees it too (the OS drops its flock).
* A symlink planted at RUN_DIR/.lock or RUN_DIR/.lock-holder.json is never followed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.rundir.runlock import RunLock, lock_holder
from orchestrator.rundir.storage import RunDirError
from tests.helpers import REPO_ROOT

_REPO = REPO_ROOT


def _in_another_process(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": _REPO}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          **kwargs)


def test_a_held_run_dir_is_refused_and_its_holder_named(tmp_path):
    run_dir = str(tmp_path / "run")
    assert lock_holder(run_dir) is None
    assert not os.path.exists(run_dir)  # asking who holds it creates nothing
    lock = RunLock(run_dir).acquire()
    try:
        holder = lock_holder(run_dir)
        assert holder and holder.startswith(f"pid {os.getpid()} since "), holder
        assert lock_holder(run_dir) == holder  # the probe did not take the lock away
        with pytest.raises(RunDirError, match=f"in use by another landscape process \\(pid {os.getpid()} since .*"
                                              f"`landscape resume {run_dir}`"):
            RunLock(run_dir).acquire()
        other = _in_another_process(
            "import sys; from orchestrator.rundir.runlock import RunLock, lock_holder\n"
            f"print(lock_holder({run_dir!r}))\n"
            f"RunLock({run_dir!r}).acquire()\n")
        assert other.returncode != 0 and "in use by another landscape process" in other.stderr, other.stderr
        assert other.stdout.startswith(f"pid {os.getpid()} since "), other.stdout
    finally:
        lock.release()
    assert lock_holder(run_dir) is None
    assert sorted(os.listdir(run_dir)) == [".lock"]  # the holder's record went with the lock
    RunLock(run_dir).acquire().release()  # free again


def test_a_dead_holders_lock_is_free(tmp_path):
    run_dir = str(tmp_path / "run")
    dead = _in_another_process(
        "import os; from orchestrator.rundir.runlock import RunLock\n"
        f"RunLock({run_dir!r}).acquire()\n"
        "os._exit(0)  # no release: as a killed process\n")
    assert dead.returncode == 0, dead.stderr
    assert os.path.exists(os.path.join(run_dir, ".lock-holder.json"))  # its record outlives it ...
    assert lock_holder(run_dir) is None  # ... but the lock does not
    lock = RunLock(run_dir).acquire()
    try:
        assert lock_holder(run_dir).startswith(f"pid {os.getpid()} ")
    finally:
        lock.release()


def test_symlinks_in_place_of_the_lock_files_are_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(RunDirError, match=r"\.lock is a symlink"):
        RunLock(str(run_dir)).acquire()
    assert victim.read_text() == "precious"

    (run_dir / ".lock").unlink()
    (run_dir / ".lock-holder.json").symlink_to(victim)
    lock = RunLock(str(run_dir)).acquire()
    try:
        assert not (run_dir / ".lock-holder.json").is_symlink()  # replaced, not written through
        assert lock_holder(str(run_dir)).startswith(f"pid {os.getpid()} ")
    finally:
        lock.release()
    assert victim.read_text() == "precious"
