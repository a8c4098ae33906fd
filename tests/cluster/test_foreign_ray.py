"""A `ray start` cluster of the same user on the machine is nobody's business of `landscape`'s.

Two things went wrong with one (issue #18):
  * the private local Ray of `landscape run` joined the cluster it found through the shared Ray temp dir
    ($RAY_TMPDIR) and failed with Ray's traceback ("num_cpus and num_gpus must not be provided");
  * a forged RUN_DIR/.local-ray.json naming that cluster's session (its starting `ray start` has exited, so
    "the noted pid is dead" held) made `resume` kill the whole cluster as "leftovers of a killed run".
Here a real loopback-only `ray start` head (tests/raycluster.py) runs in the very RAY_TMPDIR that `landscape`
uses, a run directory holds the most convincing forged note there is, and then `landscape run smoke` and
`landscape resume` both succeed on their own Ray while every process of the cluster lives on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.helpers import hygienic_env, landscape_cmd
from tests.raycluster import LoopbackCluster


def started_at(pid: int) -> str | None:
    """The start time of a live (not zombie) process ``pid`` (/proc/PID/stat field 22), or None: the same pid
    with the same start time is the same process (a command line is no proof: Ray's agents retitle theirs)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else fields[19].decode()


def dead_of(processes: dict[int, str]) -> list[int]:
    """The pids of ``processes`` (pid -> start time) that no longer run."""
    return [pid for pid, start in processes.items() if started_at(pid) != start]


def forge_note(run_dir: str, session: str) -> None:
    """The note an older `landscape` wrote, naming the foreign cluster's session, its node id (from the
    session's per-node file names) and the `ray start` process that made it (dead: its pid is in the name)."""
    import socket

    node_ids = {m.group(1) for m in map(re.compile(r"_([0-9a-f]{56})$").search, os.listdir(session)) if m}
    assert node_ids, os.listdir(session)
    starter = int(os.path.basename(session).rsplit("_", 1)[1])
    with open(os.path.join(run_dir, ".local-ray.json"), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": starter, "session_dir": session,
                   "node_id": sorted(node_ids)[0], "raylet_pid": None}, f)


@pytest.mark.ray
@pytest.mark.slow
def test_a_foreign_ray_start_cluster_is_neither_joined_nor_stopped(short_tmp):
    cluster = LoopbackCluster()
    ray_tmpdir = cluster.temp_dir  # what `landscape` gets as RAY_TMPDIR: its sessions go to RAY_TMPDIR/ray ...
    cluster.temp_dir = os.path.join(ray_tmpdir, "ray")  # ... where the `ray start` head keeps its session too
    os.makedirs(cluster.temp_dir)
    run_dir = os.path.join(short_tmp, "run")
    os.makedirs(run_dir)
    env = hygienic_env(ray_tmpdir, XDG_CACHE_HOME=os.path.join(short_tmp, "cache"))
    try:
        with cluster:
            cluster.start_head(num_cpus=1)
            foreign = {pid: started_at(pid) for pid in cluster.processes()}
            assert foreign, "the `ray start` head started no process"
            sessions = {n for n in os.listdir(cluster.temp_dir) if n.startswith("session_2")}
            assert len(sessions) == 1, sessions
            session = os.path.join(cluster.temp_dir, sessions.pop())
            forge_note(run_dir, session)

            ran = subprocess.run(landscape_cmd() + ["run", "smoke", "--out", run_dir, "--no-analysis"],
                                 capture_output=True, text=True, env=env, timeout=600)
            assert ran.returncode == 0, (ran.stdout[-3000:], ran.stderr[-3000:])
            assert "Traceback" not in ran.stdout + ran.stderr
            assert "8/8 models, 4/4 pairs done" in ran.stdout, ran.stdout
            assert "stopped" not in ran.stdout, ran.stdout
            # It ran on a Ray of its own: a second session in the same temp dir, ours untouched.
            assert len([n for n in os.listdir(cluster.temp_dir) if n.startswith("session_2")]) == 2
            assert not dead_of(foreign), dead_of(foreign)
            assert not os.path.exists(os.path.join(run_dir, ".local-ray.json"))  # deleted unread

            forge_note(run_dir, session)  # again, on a finished run: `resume` plans, finds nothing to do
            resumed = subprocess.run(landscape_cmd() + ["resume", run_dir, "--no-analysis"], capture_output=True,
                                     text=True, env=env, timeout=300)
            assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
            assert "nothing to do" in resumed.stdout and "stopped" not in resumed.stdout, resumed.stdout
            assert not dead_of(foreign), dead_of(foreign)
    finally:
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
