"""Ctrl-C during the start-up of `landscape run` (config loading, planning, Ray starting, Tune setting up) ends
like a Ctrl-C during the sweep: exit 130, the right next step, no traceback, nothing of its Ray left.

Before orchestrator/driver/interrupts.py, SIGINT at 0.5 to 15 s into `landscape run smoke` on a busy 2-core machine
gave click's "Aborted!" (exit 1, no resume line) in 9 of 13 tries, once a sweep that ran to its end (the
KeyboardInterrupt was swallowed inside ray.init), and a user saw segfaults (exit 139) in 3 of 11.

Each case sends one SIGINT at a moment of start-up chosen by something the test can observe (the command's
handlers in place, the run's config.yaml written, the run's record of its local Ray written before ray.init,
the line printed once Ray is up), or a fixed delay after the handlers are in place. Whichever step the command
is in then, the assertions are the same; none is on timing. One job of the sweep is blocked by the fault hook,
so the sweep cannot end on its own before the signal, however fast the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.helpers import hygienic_env, landscape_cmd, ray_processes_of, write_block_faults

BLOCKED = "width=8__batch_size=256__seed=0"  # a model job of smoke that never finishes (the fault hook's "block")


def handlers_in_place(pid: int) -> bool:
    """The command's own SIGTERM handler is installed (/proc/PID/status SigCgt): `landscape run` installs it
    with its SIGINT one, at the start of the command (orchestrator/cli/main.py main), and Python does not catch
    SIGTERM by itself."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def _text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# (name, the condition the signal waits for, seconds after it)
MOMENTS = [
    ("handlers", lambda pid, run_dir, out: handlers_in_place(pid), 0.0),
    ("handlers+1s", lambda pid, run_dir, out: handlers_in_place(pid), 1.0),
    ("handlers+3s", lambda pid, run_dir, out: handlers_in_place(pid), 3.0),
    ("config-written", lambda pid, run_dir, out: os.path.exists(os.path.join(run_dir, "config.yaml")), 0.0),
    ("ray-starting", lambda pid, run_dir, out: _ray_record(run_dir) is not None, 0.0),
    ("ray-up", lambda pid, run_dir, out: "cohorts (" in _text(out), 0.0),
]


def _ray_record(run_dir: str):
    from orchestrator.cluster.ray_leftovers import read_record

    return read_record(run_dir)  # written just before ray.init, with the mark its processes will carry


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("name,ready,delay", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_ctrl_c_at_any_moment_of_start_up_exits_130_with_the_next_step(short_tmp, ray_tmpdir, name, ready, delay):
    from orchestrator.rundir.runlock import lock_holder

    run_dir = os.path.join(short_tmp, "run")
    out_path, err_path = os.path.join(short_tmp, "out.txt"), os.path.join(short_tmp, "err.txt")
    faults = write_block_faults(short_tmp, [BLOCKED])
    env = hygienic_env(ray_tmpdir, LANDSCAPE_FAULT_INJECT=faults)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis"],
                                stdout=out, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 240
        while not ready(proc.pid, run_dir, out_path):
            assert proc.poll() is None, (proc.returncode, _text(out_path), _text(err_path))
            assert time.monotonic() < deadline, f"{name}: the moment never came"
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
        stdout, stderr = _text(out_path), _text(err_path)
        assert proc.returncode == 130, (name, proc.returncode, stdout, stderr)
        for junk in ("Traceback", "Aborted", "Exception ignored"):
            assert junk not in stdout + stderr, (name, stdout, stderr)
        if os.path.exists(os.path.join(run_dir, "config.yaml")):  # `resume` can continue it: say so
            assert f"continue with: landscape resume {run_dir}" in stderr, stderr
        else:  # `resume` would refuse a folder without config.yaml: the same command starts it again
            assert "before the sweep started: nothing was done" in stderr and "landscape resume" not in stderr, stderr
        assert lock_holder(run_dir) is None
        deadline = time.monotonic() + 30  # the CLI shuts its Ray down; its last processes take a moment to go
        while ray_processes_of(ray_tmpdir) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ray_processes_of(ray_tmpdir), ray_processes_of(ray_tmpdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for line in ray_processes_of(ray_tmpdir):  # only this test's private Ray (its RAY_TMPDIR): a failed run's
            try:
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
            except OSError:
                pass
