"""A local Ray left behind by a killed `landscape`: marking the local Ray a run starts, and stopping only what
is provably left of it (see the rules below); a watch on our own raylet.

When the driver that started a local Ray dies without shutting it down (SIGKILL, the OOM killer), Ray's
fate-sharing stops the raylet, the GCS and the workers within seconds, but its dashboard and runtime-env
agents wait for the dead GCS and linger for about a minute (measured, Ray 2.60). So the next run or resume
of that run directory stops whatever is left of it.

Run directories are shared (a group folder): whoever can write one must not be able to make `landscape`
stop a process. So nothing read from the run directory decides what is stopped (an old version's
RUN_DIR/.local-ray.json is deleted unread). Instead:
  * before it starts its local Ray, `landscape` draws a random mark (128 bits) and starts Ray with it in the
    environment (LANDSCAPE_RAY_MARK): every daemon, agent and worker of that Ray inherits it, and shows it in
    /proc/PID/environ, which only this user (and root) can read;
  * it writes the mark, its pid and the Ray session folder to a record that only this user can write,
    outside the run directory: $XDG_CACHE_HOME/landscape/local-ray/<hash of host and run dir>.json (a folder
    of mode 0700 that we own; no record is trusted from anywhere else);
  * a later run or resume of the same run directory reads that record; when the `landscape` it names is dead,
    it stops the processes of this user that are Ray's (a Ray binary or script, or a "ray::..." title) AND
    carry the mark in their environment, or are retitled "ray::..." processes holding files of the recorded
    session folder open (Ray's agents and busy workers overwrite their command line and environment with
    their title, but keep their logs there open). A Ray started by anyone else carries no such mark and keeps
    no file of that session open: it is never touched.
"""

from __future__ import annotations

import os
import re

MARK_VARIABLE = "LANDSCAPE_RAY_MARK"
LOCAL_RAY_NOTE = ".local-ray.json"  # what older versions wrote into the run dir: deleted, never read
MAX_RECORD_BYTES = 64 * 1024  # a record is ~400 bytes
_SESSION_NAME = re.compile(r"^session_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d+_(\d+)$")
_MARK = re.compile(r"^[0-9a-f]{32}$")


def new_mark() -> str:
    """A fresh random mark for the local Ray about to be started (see the module docstring)."""
    import secrets

    return secrets.token_hex(16)


def private_dir(create: bool = False) -> str | None:
    """This user's folder for the records ($XDG_CACHE_HOME or ~/.cache, then landscape/local-ray), or None when
    it is missing (and not ``create``d) or anyone else could write it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "landscape", "local-ray")
    if create:
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            st = os.lstat(folder)
            if st.st_uid == os.getuid() and not os.path.islink(folder) and st.st_mode & 0o077:
                os.chmod(folder, 0o700)  # ours, but made with a looser umask (or by hand): make it private
        except OSError:
            return None
    return folder if _private(folder, want_dir=True) else None


def record_path(run_dir: str, create_dir: bool = False) -> str | None:
    """Where the record of ``run_dir``'s local Ray is kept (None: no private folder)."""
    import hashlib
    import socket

    folder = private_dir(create=create_dir)
    if folder is None:
        return None
    name = hashlib.sha256(f"{socket.gethostname()}\n{_run_dir_key(run_dir)}".encode()).hexdigest()[:40]
    return os.path.join(folder, f"{name}.json")


def remember_local_ray(run_dir: str, mark: str, context=None) -> dict | None:
    """Record the local Ray of ``run_dir`` marked ``mark``: before ``ray.init`` (``context`` None: only the mark
    and this process are known yet, which is enough to stop its marked processes), and again with what the
    RayContext says (session folder, raylet pid). Returns the record (None when it could not be written: the
    leftovers of a killed run then stay until Ray's agents give up on their own)."""
    import json
    import socket

    info = getattr(context, "address_info", None) or {}
    session_dir = info.get("session_dir")
    raylet = None
    if session_dir:
        found = [pid for pid, argv, _ in _processes() if argv[0].endswith("/raylet") and _names(argv, session_dir)]
        raylet = found[0] if found else None
    record = {"host": socket.gethostname(), "run_dir": _run_dir_key(run_dir), "pid": os.getpid(), "mark": mark,
              "session_dir": session_dir, "raylet_pid": raylet}
    path = record_path(run_dir, create_dir=True)
    if path is None:
        return record
    try:
        from workloads.atomic import write_bytes_atomically

        write_bytes_atomically(path, json.dumps(record).encode())
        os.chmod(path, 0o600)
    except OSError:
        pass  # only a convenience for after a crash: never a reason to stop a sweep
    return record


def forget_local_ray(run_dir: str) -> None:
    path = record_path(run_dir)
    if path is not None:
        try:
            os.remove(path)
        except OSError:
            pass


def read_record(run_dir: str) -> dict | None:
    """The record of ``run_dir``'s local Ray (this host's, this user's private file), or None."""
    import json
    import socket

    path = record_path(run_dir)
    if path is None or not _private(path, want_dir=False):
        return None
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read(MAX_RECORD_BYTES + 1)[:MAX_RECORD_BYTES].decode())
    except (OSError, ValueError):
        return None
    ok = (isinstance(record, dict) and record.get("host") == socket.gethostname()
          and record.get("run_dir") == _run_dir_key(run_dir) and isinstance(record.get("mark"), str)
          and _MARK.match(record["mark"]) and _is_pid(record.get("pid")))
    return record if ok else None


def stop_leftover_ray(run_dir: str) -> list[int]:
    """Kill what is left of the local Ray that a `landscape` of ``run_dir`` started and that has died (see the
    rules above); returns the pids killed. Call it holding the run directory's lock (so no `landscape` is
    running a sweep there)."""
    from orchestrator.rundir import storage

    if not storage.is_uri(run_dir):
        storage.delete(storage.join(run_dir, LOCAL_RAY_NOTE))  # an old version's note: anyone could have written it
    record = read_record(run_dir)
    if record is None:
        return []
    if record["pid"] != os.getpid() and _alive(record["pid"]):
        return []  # its `landscape` still lives (shutting down): it stops its own Ray
    killed = stop_marked_ray(record)
    forget_local_ray(run_dir)
    return killed


def stop_marked_ray(record: dict) -> list[int]:
    """SIGKILL every live process of this user that is one of Ray's and belongs to the recorded local Ray: it
    carries the record's mark in its environment, or it is a retitled "ray::..." process holding files of the
    recorded session folder open. Returns their pids."""
    import signal

    mark = f"{MARK_VARIABLE}={record['mark']}".encode()
    session = own_session(record)
    killed = []
    for pid, argv, env in _processes(with_env=True):
        if not _is_ray_process(argv):
            continue
        retitled = argv[0].startswith("ray::") and session is not None and _holds_open_inside(pid, session)
        if mark in env or retitled:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed


def own_session(record: dict) -> str | None:
    """The real path of the record's Ray session folder when it is one: a session_<date>_<time>_<us>_<pid>
    folder of this user whose <pid> is the recorded `landscape` (which started that Ray); else None."""
    session = record.get("session_dir")
    if not isinstance(session, str):
        return None
    real = os.path.realpath(session)
    name = _SESSION_NAME.match(os.path.basename(real))
    if not name or int(name.group(1)) != record.get("pid"):
        return None
    try:
        return real if os.stat(real).st_uid == os.getuid() else None
    except OSError:
        return None


def _run_dir_key(run_dir: str) -> str:
    """One name per run directory: the real path of a local one, a URI as given (normalised by the caller)."""
    from orchestrator.rundir import storage

    return str(run_dir) if storage.is_uri(run_dir) else os.path.realpath(run_dir)


def _private(path: str, want_dir: bool) -> bool:
    """Whether ``path`` (not a link) is a folder / regular file of this user that nobody else may write."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
    return kind_ok and st.st_uid == os.getuid() and not st.st_mode & 0o022


def _is_pid(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _holds_open_inside(pid: int, folder: str) -> bool:
    """Whether process ``pid`` has a file inside ``folder`` open (its /proc/<pid>/fd links); False when that
    cannot be read."""
    inside = os.path.realpath(folder) + os.sep
    fds = f"/proc/{pid}/fd"
    try:
        return any(os.path.realpath(os.path.join(fds, fd)).startswith(inside) for fd in os.listdir(fds))
    except OSError:
        return False


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
    in the main thread (orchestrator/driver/interrupts.py interrupt_now: at once, not at the next safe point, as the
    main thread may be waiting on the dead Ray)."""

    def __init__(self, raylet_pid: int):
        import threading

        self.raylet_pid = raylet_pid
        self.died = False
        self._stop = threading.Event()
        self._deciding = threading.Lock()  # stop() and a decision to interrupt never interleave
        self._thread = threading.Thread(target=self._watch, daemon=True, name="landscape-raylet-watch")
        self._thread.start()

    def _watch(self) -> None:
        from orchestrator.driver import interrupts

        while not self._stop.wait(RAYLET_POLL_S):
            with self._deciding:
                if not self._stop.is_set() and not _alive(self.raylet_pid):
                    self.died = True
                    interrupts.interrupt_now()
                    return

    def stop(self) -> None:
        """Stop watching; once it returns no interrupt can follow (e.g. while the command shuts Ray down)."""
        with self._deciding:
            self._stop.set()
