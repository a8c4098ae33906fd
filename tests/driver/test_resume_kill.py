"""A sweep survives a driver killed outright (SIGKILL: a crash, an OOM kill, a lost laptop lid), and
`landscape resume` finishes it with nothing lost and nothing done twice.

The real console script runs the built-in `smoke` sweep (with periodic training checkpoints) on a private
local Ray; once some models are in the tables the driver alone gets SIGKILL (no handler runs: not the
Ctrl-C path of tests/cli/test_cli.py), and `landscape resume` follows at once, as a user would. Then:
  * the lock died with the driver, so the resume runs, and finishes the sweep;
  * Ray's fate-sharing stops the killed driver's raylet, GCS and workers within seconds, but its dashboard
    and runtime-env agents may linger for about a minute (often, not always: measured): the resume stops
    what is left (its private record names the marked Ray of the killed run: ray_leftovers.py) and says so;
  * every expected key is in each table exactly once, all ok;
  * every part and weights file that existed at the kill has the same bytes and the same inode afterwards
    (not recomputed, not even rewritten);
  * no training checkpoint is left, and no process of either Ray remains (found by the private RAY_TMPDIR
    in their command line or environment: Ray rewrites the command line of workers and agents).
The rule that decides which processes a resume may stop is tested without Ray below: only those of the
Ray marked and recorded by the killed `landscape` for this run directory, and only when it is dead.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from analysis.tables import RunTables
from orchestrator.rundir.runlock import RunLock, lock_holder
from orchestrator.rundir.storage import RunDirError
from tests.helpers import hygienic_env, landscape_cmd, ray_processes_of

def wait_until_gone(ray_tmpdir: str, timeout: float = 45) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := ray_processes_of(ray_tmpdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def files_of(run_dir: str) -> dict[str, tuple]:
    """Relative path -> (sha256, inode) of every table part and weights file."""
    out = {}
    for sub in ("tables/models", "tables/pairs", "tables/curves", "models"):
        folder = os.path.join(run_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name.startswith("."):
                continue  # a temporary file of an atomic write
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[f"{sub}/{name}"] = (digest, os.stat(path).st_ino)
            except FileNotFoundError:
                continue
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_sigkill_of_the_driver_then_resume(short_tmp, ray_tmpdir):
    run_dir = os.path.join(short_tmp, "run")
    env = hygienic_env(ray_tmpdir)
    overrides = ["--set", "training.checkpoint_every=1"]
    log = open(os.path.join(short_tmp, "run.log"), "w")
    driver = subprocess.Popen(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis", *overrides],
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    tables = RunTables(run_dir)
    try:
        deadline = time.monotonic() + 180
        while len(tables.part_keys("models")) < 2:
            assert driver.poll() is None, open(log.name).read()
            assert time.monotonic() < deadline, "no model finished in time"
            time.sleep(0.1)
        at_kill = files_of(run_dir)
        # While it runs, another run or resume of the directory is refused (the lock `landscape` takes;
        # tests/cli/test_cli.py shows the refusal through the CLI, too slow to start here before the end).
        with pytest.raises(RunDirError, match="in use by another landscape process"):
            RunLock(run_dir).acquire()
        os.kill(driver.pid, signal.SIGKILL)  # the driver only, as a crash would: not its process group
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    assert driver.returncode == -signal.SIGKILL
    assert lock_holder(run_dir) is None  # an flock dies with its process: no stale lock to clear by hand
    leftovers = ray_processes_of(ray_tmpdir)  # how many depends on timing: see the module docstring
    models_at_kill = tables.part_keys("models")
    pairs_at_kill = tables.part_keys("pairs")
    assert len(models_at_kill) < 8 or len(pairs_at_kill) < 4, "the kill came after the sweep had finished"
    checkpoints = os.path.join(run_dir, "checkpoints")
    left_checkpoints = [n for n in os.listdir(checkpoints) if n.endswith(".pt")] if os.path.isdir(checkpoints) else []

    started = time.monotonic()
    resumed = subprocess.run(landscape_cmd() + ["resume", run_dir, "--no-analysis"], capture_output=True, text=True,
                             env=env, timeout=240)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert "8/8 models, 4/4 pairs done" in resumed.stdout, resumed.stdout
    stopped = "left by the local Ray of an earlier, killed run" in resumed.stdout
    resume_seconds = time.monotonic() - started

    # Every key exactly once in every table, all ok.
    models, pairs, curves = tables.read("models"), tables.read("pairs"), tables.read("curves")
    assert len(models) == 8 and not models.duplicated(["load_value", "temperature_value", "seed"]).any()
    assert len(pairs) == 4 and not pairs.duplicated(["load_value", "temperature_value", "seed_a", "seed_b"]).any()
    assert len(curves) == 4 * 5 and not curves.duplicated(["load_value", "temperature_value", "t"]).any()
    assert (models.status == "ok").all() and (pairs.status == "ok").all()
    assert models.run_id.nunique() == 1 and (models.epochs_completed == 3).all()

    # What was finished at the kill is untouched: same bytes, same file (never rewritten).
    after = files_of(run_dir)
    changed = sorted(path for path, stamp in at_kill.items() if after.get(path) != stamp)
    assert not changed, changed
    # Only the rest was computed by the resume.
    assert len(after) == 8 + 4 + 4 + 8 and len(at_kill) < len(after)
    # A checkpoint left by the kill was consumed, none is left.
    assert not [n for n in os.listdir(checkpoints) if n.endswith(".pt")] if os.path.isdir(checkpoints) else True
    print(f"killed with {len(models_at_kill)} models / {len(pairs_at_kill)} pairs done and "
          f"{len(left_checkpoints)} checkpoint(s); {len(leftovers)} Ray process(es) left at the kill "
          f"({'stopped by' if stopped else 'gone before'} the resume); resume took {resume_seconds:.0f} s")

    # Nothing of either Ray is left (the resume's own Ray is shut down as it ends). Ray's dashboard and
    # runtime-env agents exit on their own about a minute after their GCS is gone (seen on a loaded CI
    # machine after the resume's ray.shutdown()), hence the grace period; they must not outlive it.
    assert not wait_until_gone(ray_tmpdir, timeout=90), ray_processes_of(ray_tmpdir)


def test_a_resume_stops_only_the_marked_ray_of_a_dead_landscape(tmp_path, monkeypatch):
    """stop_leftover_ray kills the processes of the local Ray recorded for this run dir in this user's private
    record, and nothing else: Ray's processes carrying the record's mark in their environment, and retitled
    "ray::..." processes holding files of the recorded session folder open. Nothing read from the (shared) run
    dir counts: a forged .local-ray.json naming every process, a record of another run dir, a record anyone
    else could have written, or a live `landscape` touch nothing."""
    import json

    from orchestrator.cluster import ray_leftovers
    from orchestrator.cluster.ray_leftovers import LOCAL_RAY_NOTE, MARK_VARIABLE, new_mark, record_path, stop_leftover_ray

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that is certainly dead: the killed `landscape`
    session = tmp_path / "raytmp" / "ray" / f"session_2026-01-01_00-00-00_000000_{gone.pid}"
    other_session = tmp_path / "raytmp" / "ray" / "session_2026-01-01_00-00-00_000000_1"
    for folder in (session, other_session):
        (folder / "logs").mkdir(parents=True)
        (folder / "logs" / "agent.log").write_text("")
    # Ray's package, as the checks see it: scripts inside it are Ray's processes.
    package = tmp_path / "site-packages" / "ray"
    package.mkdir(parents=True)
    (package / "daemon.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(ray_leftovers, "_ray_package_dir", lambda: str(package))
    mark, other_mark = new_mark(), new_mark()

    def start(argv, executable=sys.executable, **env):
        return subprocess.Popen(argv, executable=executable, env={**os.environ, **env}, start_new_session=True)

    def holding(title, folder):  # a retitled agent keeping its log open (its environment is overwritten)
        code = "import sys, time\nf = open(sys.argv[1])\ntime.sleep(60)\n"
        return start([title, "-c", code, str(folder / "logs" / "agent.log")])

    ray_script = str(package / "daemon.py")
    sleep = ["-c", "import time; time.sleep(60)"]
    ours = [
        start([sys.executable, ray_script, f"--session-dir={session}"], **{MARK_VARIABLE: mark}),  # a daemon
        start(["ray::IDLE", *sleep], **{MARK_VARIABLE: mark}),  # a worker
        holding("ray::DashboardAgent", session),  # an agent
    ]
    others = [
        start([sys.executable, ray_script, f"--session-dir={session}"]),  # names the session: no mark
        start([sys.executable, ray_script], **{MARK_VARIABLE: other_mark}),  # another landscape's Ray
        start([sys.executable, *sleep], **{MARK_VARIABLE: mark}),  # marked, but not one of Ray's processes
        start(["ray::IDLE", *sleep]),  # a worker of another Ray
        holding("ray::DashboardAgent", other_session),  # an agent of another session
        holding("python3", session),  # holds the session's files, not retitled by Ray
    ]
    for agent in (ours[2], others[4], others[5]):  # wait until each holds its file open
        deadline = time.monotonic() + 60
        while not ray_leftovers._holds_open_inside(agent.pid, str(tmp_path / "raytmp")):
            assert agent.poll() is None and time.monotonic() < deadline, "the agent never opened its log"
            time.sleep(0.05)
    record = {"host": __import__("socket").gethostname(), "run_dir": os.path.realpath(run_dir), "pid": gone.pid,
              "mark": mark, "session_dir": str(session), "raylet_pid": None}

    def with_record(where=None, mode=0o600, **changes):
        path = where or record_path(str(run_dir), create_dir=True)
        with open(path, "w") as f:
            f.write(json.dumps({**record, **changes}))
        os.chmod(path, mode)
        return stop_leftover_ray(str(run_dir))

    try:
        # A forged note in the run dir, whatever it says, is deleted unread.
        assert with_record(where=run_dir / LOCAL_RAY_NOTE) == [] and not (run_dir / LOCAL_RAY_NOTE).exists()
        live = start([sys.executable, *sleep])
        assert with_record(pid=live.pid) == []  # its `landscape` is alive (shutting down, say): nothing is touched
        live.kill()
        live.wait()
        for forged in ({"run_dir": str(tmp_path)}, {"host": "elsewhere"}, {"mark": "/usr"}, {"pid": "1"}):
            assert with_record(**forged) == [], forged
        assert with_record(mode=0o666) == []  # a record anyone could have written
        path = record_path(str(run_dir))
        os.chmod(os.path.dirname(path), 0o777)  # in a folder anyone could write
        assert with_record(where=path) == []
        os.chmod(os.path.dirname(path), 0o700)
        assert stop_leftover_ray("s3://bucket/run") == []  # no record for it
        assert all(p.poll() is None for p in ours + others)
        # The real record of a dead `landscape`: exactly its Ray's processes go, and the record with them.
        assert sorted(with_record()) == sorted(p.pid for p in ours)
        assert all(p.wait(timeout=10) == -signal.SIGKILL for p in ours)
        assert all(p.poll() is None for p in others)
        assert not os.path.exists(path)
        assert stop_leftover_ray(str(run_dir)) == []
    finally:
        for p in ours + others:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.ray
def test_the_checks_accept_a_real_ray_of_a_killed_driver(short_tmp, ray_tmpdir, monkeypatch):
    """The other side of the rule above, on a real local Ray started as `landscape` starts it (marked, recorded
    privately): once its driver is SIGKILLed, stop_leftover_ray stops exactly that Ray's processes (found
    independently by its private RAY_TMPDIR), whatever fate-sharing had not stopped yet."""
    from orchestrator.cluster.ray_leftovers import read_record, stop_leftover_ray

    run_dir = os.path.join(short_tmp, "run")
    os.makedirs(run_dir)
    driver_code = (
        "import sys, time\n"
        "from orchestrator.cluster import ray_env, ray_leftovers\n"
        "mark = ray_leftovers.new_mark()\n"
        "ray_leftovers.remember_local_ray(sys.argv[1], mark)\n"
        "context = ray_env.init_ray(object_store_mb=100, num_cpus=1, local_env={ray_leftovers.MARK_VARIABLE: mark})\n"
        "ray_leftovers.remember_local_ray(sys.argv[1], mark, context)\n"
        "time.sleep(300)\n"
    )
    cache = os.path.join(short_tmp, "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    env = hygienic_env(ray_tmpdir, XDG_CACHE_HOME=cache)
    driver = subprocess.Popen([sys.executable, "-c", driver_code, run_dir], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (read_record(run_dir) or {}).get("session_dir"):
            assert driver.poll() is None and time.monotonic() < deadline, "the driver never recorded its Ray"
            time.sleep(0.2)
        real_kill, victims = os.kill, {}

        real_tmp = os.path.realpath(ray_tmpdir)

        def kill(pid, sig):  # what each process was, independently of the checks, the moment it is killed:
            if sig == signal.SIGKILL:  # as helpers.ray_processes_of, daemons name the tmpdir on their command
                with open(f"/proc/{pid}/cmdline", "rb") as f:  # line, workers inherit it in their environment
                    named = ray_tmpdir.encode() in f.read().replace(b"\0", b" ")
                with open(f"/proc/{pid}/environ", "rb") as f:
                    inherited = f"RAY_TMPDIR={ray_tmpdir}".encode() in f.read().split(b"\0")
                # Ray's agents retitle themselves ("ray::DashboardAgent"), which overwrites both, but they hold
                # their logs open in the session folder. Under load they are often still alive when the leftovers
                # are stopped; idle, fate-sharing has usually ended them already.
                fds = f"/proc/{pid}/fd"
                logs = any(os.path.realpath(os.path.join(fds, fd)).startswith(real_tmp + os.sep)
                           for fd in os.listdir(fds))
                victims[pid] = named or inherited or logs
            return real_kill(pid, sig)

        try:
            assert ray_processes_of(ray_tmpdir), "no Ray process to find"
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
            os.kill = kill
            killed = stop_leftover_ray(run_dir)
        finally:
            os.kill = real_kill
        assert sorted(victims) == sorted(killed) and all(victims.values()), victims
        assert read_record(run_dir) is None
        assert not wait_until_gone(ray_tmpdir, timeout=30), ray_processes_of(ray_tmpdir)
        print(f"{len(killed)} process(es) of the killed driver's Ray stopped by stop_leftover_ray")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
