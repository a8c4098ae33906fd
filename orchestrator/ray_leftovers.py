"""A local Ray left behind by a killed `landscape`: noting the local Ray a run starts, and stopping only what
is provably left of it (see the rules below); a watch on our own raylet.

When the driver that started a local Ray dies without shutting it down (SIGKILL, the OOM killer), Ray's
fate-sharing stops the raylet, the GCS and the workers within seconds, but its dashboard and runtime-env
agents wait for the dead GCS and linger for about a minute (measured, Ray 2.60). So `landscape` notes the
local Ray it starts in a LOCAL run directory, and the next run or resume of that directory stops whatever
is left of it.

The note is a file others may write (a shared folder), so it is evidence to check, never an order. A
process is stopped only when all of this holds:
  * the note is the run directory's own local file (never read from a URI), of this host, and the
    `landscape` process it names is dead;
  * its session folder is a real Ray session folder of this user: a session_<date>_<time>_<us>_<pid>
    folder directly under the Ray temp root this process uses ($RAY_TMPDIR, $TMPDIR or /tmp, then /ray),
    whose <pid> is the noted `landscape` (the process that started that Ray) and which holds Ray's
    per-node files named with the noted node id;
  * the process is this user's, is one of Ray's (its executable or script lies in the ray package, or its
    command line is a Ray worker's "ray::..."), and belongs to that session: its command line names the
    session folder (daemons), its environment carries RAY_NODE_ID=<node id> (agents), it is a retitled
    "ray::..." process holding files of the session folder open (agents overwrite their command line and
    environment with their title, but keep their logs there open), or it is a worker that the session's logs
    name (worker-*-<pid>.out) whose RAY_RAYLET_PID is the noted raylet.
"""

from __future__ import annotations

import os
import re
import sys

LOCAL_RAY_NOTE = ".local-ray.json"
MAX_NOTE_BYTES = 64 * 1024  # a note is ~300 bytes
_SESSION_NAME = re.compile(r"^session_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d+_(\d+)$")
_NODE_ID = re.compile(r"^[0-9a-f]{56}$")  # Ray's node ids: 28 bytes in hex


def remember_local_ray(run_dir: str, context) -> dict | None:
    """Note the local Ray just started by ``ray.init`` (its RayContext) in a local ``run_dir``; returns the note
    (None for a URI run dir: the note is read only from local run dirs)."""
    import json
    import socket

    from orchestrator import storage

    info = getattr(context, "address_info", None) or {}
    session_dir, node_id = info.get("session_dir"), info.get("node_id")
    if not session_dir or not node_id:
        return None
    raylet = [pid for pid, argv, _ in _processes() if argv[0].endswith("/raylet") and _names(argv, session_dir)]
    note = {"host": socket.gethostname(), "pid": os.getpid(), "session_dir": session_dir, "node_id": node_id,
            "raylet_pid": raylet[0] if raylet else None}
    if storage.is_uri(run_dir):
        return note
    try:
        storage.write_bytes(storage.join(run_dir, LOCAL_RAY_NOTE), json.dumps(note).encode())
    except OSError:
        pass  # only a convenience for after a crash: never a reason to stop a sweep
    return note


def forget_local_ray(run_dir: str) -> None:
    from orchestrator import storage

    if not storage.is_uri(run_dir):
        storage.delete(storage.join(run_dir, LOCAL_RAY_NOTE))


def stop_leftover_ray(run_dir: str) -> list[int]:
    """Kill what is left of a local Ray noted in ``run_dir`` by a `landscape` process that has died (see the
    rules above); returns the pids killed. Call it holding the run directory's lock (so that process is not
    running a sweep)."""
    import json
    import socket

    from orchestrator import storage

    if storage.is_uri(run_dir):
        return []  # never acted on from a bucket: a note there could come from anywhere
    path = os.path.join(run_dir, LOCAL_RAY_NOTE)
    try:
        with open(path, "rb") as f:
            note = json.loads(f.read(MAX_NOTE_BYTES + 1)[:MAX_NOTE_BYTES].decode())
    except (OSError, ValueError):
        return []
    if not isinstance(note, dict) or note.get("host") != socket.gethostname():
        return []  # another machine's Ray: not ours to see (its own next run there cleans it)
    if note.get("pid") != os.getpid() and _alive(note.get("pid")):
        return []  # its `landscape` still lives (shutting down): it stops its own Ray
    session = verified_session(note)
    killed = [] if session is None else kill_session_processes(session, note["node_id"], note.get("raylet_pid"))
    storage.delete(path)  # acted on, or not a note to act on: either way it is done
    return killed


def ray_temp_root() -> str:
    """Where this process's Ray keeps its sessions (as ray._common.utils.get_default_ray_temp_dir)."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return os.path.join(base or "/tmp", "ray")


def verified_session(note: dict) -> str | None:
    """The real path of the note's Ray session folder when it passes the checks above, else None."""
    session, node_id, pid = note.get("session_dir"), note.get("node_id"), note.get("pid")
    if not (isinstance(session, str) and isinstance(node_id, str) and _NODE_ID.match(node_id)
            and isinstance(pid, int) and not isinstance(pid, bool)):
        return None
    real = os.path.realpath(session)
    name = _SESSION_NAME.match(os.path.basename(real))
    if os.path.dirname(real) != os.path.realpath(ray_temp_root()) or not name or int(name.group(1)) != pid:
        return None
    try:
        if os.stat(real).st_uid != os.getuid() or not any(e.endswith(f"_{node_id}") for e in os.listdir(real)):
            return None
    except OSError:
        return None
    return real


def kill_session_processes(session: str, node_id: str, raylet_pid) -> list[int]:
    """SIGKILL every live process of this user that is one of Ray's and belongs to the Ray session in the
    folder ``session`` (a verified_session); returns their pids."""
    import signal

    logged = _logged_worker_pids(session)
    node_mark = f"RAY_NODE_ID={node_id}".encode()
    raylet_mark = f"RAY_RAYLET_PID={raylet_pid}".encode() if isinstance(raylet_pid, int) else None
    killed = []
    for pid, argv, env in _processes(with_env=True):
        if not _is_ray_process(argv):
            continue
        titled = argv[0].startswith("ray::")
        worker = titled and pid in logged and raylet_mark is not None and raylet_mark in env
        agent = titled and _holds_open_inside(pid, session)
        if _names(argv, session) or node_mark in env or worker or agent:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed


_WORKER_LOG = re.compile(r"^(?:worker-[0-9a-f]+-[0-9a-f]+-|python-core-worker-[0-9a-f]+_)(\d+)\.(?:out|err|log)$")


def _holds_open_inside(pid: int, folder: str) -> bool:
    """Whether process ``pid`` has a file inside ``folder`` open (its /proc/<pid>/fd links); False when that
    cannot be read."""
    inside = os.path.realpath(folder) + os.sep
    fds = f"/proc/{pid}/fd"
    try:
        return any(os.path.realpath(os.path.join(fds, fd)).startswith(inside) for fd in os.listdir(fds))
    except OSError:
        return False


def _logged_worker_pids(session: str) -> set[int]:
    """Pids of the workers a session's logs name (Ray logs each worker as worker-<id>-<job>-<pid>.out)."""
    try:
        names = os.listdir(os.path.join(session, "logs"))
    except OSError:
        return set()
    return {int(m.group(1)) for m in map(_WORKER_LOG.match, names) if m}


def _ray_package_dir() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("ray")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return os.path.realpath(locations[0]) if locations else None


def _is_ray_process(argv: list[str]) -> bool:
    """Whether a command line is one of Ray's: a Ray binary or a script of the ray package (daemons, agents),
    or a Ray worker (whose command line Ray rewrites to "ray::IDLE", "ray::ImplicitFunc.train", ...)."""
    if argv[0].startswith("ray::"):
        return True
    package = _ray_package_dir()
    if not package:
        return False
    inside = package.rstrip("/") + "/"
    return any(a.startswith("/") and os.path.realpath(a).startswith(inside) for a in argv[:3])


def _names(argv: list[str], folder: str) -> bool:
    """Whether a command line names ``folder`` or a path inside it (not merely a longer name)."""
    return re.search(re.escape(folder) + r"(?=/|$|\s|,|;)", " ".join(argv)) is not None


def _alive(pid) -> bool:
    """Whether ``pid`` runs (a zombie does not: in a container whose init reaps nothing, a killed process
    whose parent died stays a zombie)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _processes(with_env: bool = False):
    """(pid, argv, environment entries) of this user's other live processes; nothing where there is no /proc."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    uid = os.getuid()
    out = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue  # another user's
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            env = []
            if with_env:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if argv:
            out.append((pid, argv, env))
    return out


# ---------------------------------------------------------------------------------------------------------
# The raylet of our own local Ray
#
# When the raylet of the local Ray dies under a running sweep (killed, out of memory), Ray's core worker
# ends the driver process from C++ some seconds later (exit 1, no Python cleanup, a page of Tune tracebacks
# before it). The watch notices first and interrupts the main thread, so the command stops like Ctrl-C:
# one error line, the lock released, the rest of that Ray stopped, a resume hint.

RAYLET_POLL_S = 0.5


class RayletWatch:
    """Polls a raylet's pid from a daemon thread; when it is gone, sets ``died`` and raises KeyboardInterrupt
    in the main thread (``_thread.interrupt_main``)."""

    def __init__(self, raylet_pid: int):
        import threading

        self.raylet_pid = raylet_pid
        self.died = False
        self._stop = threading.Event()
        self._deciding = threading.Lock()  # stop() and a decision to interrupt never interleave
        self._thread = threading.Thread(target=self._watch, daemon=True, name="landscape-raylet-watch")
        self._thread.start()

    def _watch(self) -> None:
        import _thread

        while not self._stop.wait(RAYLET_POLL_S):
            with self._deciding:
                if not self._stop.is_set() and not _alive(self.raylet_pid):
                    self.died = True
                    _thread.interrupt_main()
                    return

    def stop(self) -> None:
        """Stop watching; once it returns no interrupt can follow (e.g. while the command shuts Ray down)."""
        with self._deciding:
            self._stop.set()
