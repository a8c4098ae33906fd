"""Starting or joining Ray safely, and checking that the cluster can run the sweep before any trial.

Facts this is built around (Ray 2.60, measured on this project's machine):
* by default Ray listens on the machine's network address; exposed Ray ports allow remote code execution.
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps a single-node cluster on 127.0.0.1.
* ``address="auto"`` joins any cluster running on the machine: we never pass it; a cluster is joined only
  when the user names it (``--address`` or ``RAY_ADDRESS``).
* the default object store is 30% of RAM (7 GiB here); trained weights travel through the run directory,
  not the object store, so a small one is enough.
* a trial asking for a GPU on a CPU-only cluster pends forever with only a warning: check first.
* a cluster from Ray's launcher (cluster.yaml) may have no worker yet: its autoscaler starts them when
  trials ask for their resources. The head keeps the launcher's config (with the node types' resources
  filled in) at ~/ray_bootstrap_config.yaml; the check counts the workers it may start.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys

from orchestrator.config import ConfigError, SweepConfig

# Environment defaults applied before Ray is imported by a command (a user's own setting wins).
HYGIENE_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # single node on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's console reporter is replaced by ours
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard logs per trial: the tables are ours
    "RAY_DEDUP_LOGS": "0",
    # Ray starts workers at nice 15 so its own daemons stay responsive; our workers ARE the workload, and at
    # nice 15 they lose the CPU to any other process (measured: 25% of a core each next to two busy
    # processes). The job server of Ray sets 0 for the same reason.
    "RAY_worker_niceness": "0",
    # Tune's own Ctrl-C handler ends fit() quietly and returns as if finished; we want KeyboardInterrupt, so
    # the command stops (the tables already hold everything finished) and tells how to resume.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "1000",
}


def apply_hygiene_env() -> None:
    for key, value in HYGIENE_ENV.items():
        os.environ.setdefault(key, value)


def quiet_ray_loggers() -> None:
    """Ray Tune logs INFO lines and result-fetch warnings of its own; the progress view replaces them.

    Tune's controller also logs every failed trial attempt with its traceback at ERROR level (a page per
    dead worker): the progress view reports each failure in one line, the failed rows keep the error, and
    Tune's error file in RUN_DIR/tune keeps the traceback, so those go too.
    """
    for name in ("ray", "ray.tune", "ray.train", "ray.air", "ray._private", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.tune.execution.tune_controller").setLevel(logging.CRITICAL)


def init_ray(address: str | None = None, *, object_store_mb: int = 256, num_cpus: int | None = None,
             num_gpus: int | None = None):
    """Start a local Ray (default) or join the cluster at ``address`` / ``RAY_ADDRESS``; returns the context."""
    apply_hygiene_env()
    import ray

    quiet_ray_loggers()
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=_log_to_driver(),
                  configure_logging=True)
    if address:
        if address == "auto":
            raise ConfigError(
                "--address auto would join whichever Ray cluster runs on this machine; give HOST:PORT explicitly"
            )
        try:
            return ray.init(address=address, **{k: v for k, v in common.items() if k != "include_dashboard"})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}") from None
    kwargs = dict(
        num_cpus=num_cpus if num_cpus is not None else (os.cpu_count() or 1),
        object_store_memory=int(object_store_mb) * 1024 * 1024,
        **common,
    )
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    return ray.init(**kwargs)


def _log_to_driver() -> bool:
    return os.environ.get("LANDSCAPE_WORKER_LOGS", "0") == "1"


# ---------------------------------------------------------------------------------------------------------
# A local Ray left behind by a killed `landscape`
#
# When the driver that started a local Ray dies without shutting it down (SIGKILL, the OOM killer), Ray's
# fate-sharing stops the raylet, the GCS and the workers within seconds, but its dashboard and runtime-env
# agents wait for the dead GCS and linger for about a minute (measured, Ray 2.60). So `landscape` notes the
# local Ray it starts in a LOCAL run directory, and the next run or resume of that directory stops whatever
# is left of it.
#
# The note is a file others may write (a shared folder), so it is evidence to check, never an order. A
# process is stopped only when all of this holds:
#   * the note is the run directory's own local file (never read from a URI), of this host, and the
#     `landscape` process it names is dead;
#   * its session folder is a real Ray session folder of this user: a session_<date>_<time>_<us>_<pid>
#     folder directly under the Ray temp root this process uses ($RAY_TMPDIR, $TMPDIR or /tmp, then /ray),
#     whose <pid> is the noted `landscape` (the process that started that Ray) and which holds Ray's
#     per-node files named with the noted node id;
#   * the process is this user's, is one of Ray's (its executable or script lies in the ray package, or its
#     command line is a Ray worker's "ray::..."), and belongs to that session: its command line names the
#     session folder (daemons), its environment carries RAY_NODE_ID=<node id> (agents), or it is a worker
#     that the session's logs name (worker-*-<pid>.out) whose RAY_RAYLET_PID is the noted raylet.

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
        worker = argv[0].startswith("ray::") and pid in logged and raylet_mark is not None and raylet_mark in env
        if _names(argv, session) or node_mark in env or worker:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return killed


_WORKER_LOG = re.compile(r"^(?:worker-[0-9a-f]+-[0-9a-f]+-|python-core-worker-[0-9a-f]+_)(\d+)\.(?:out|err|log)$")


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


# ---------------------------------------------------------------------------------------------------------
# Resource check


def node_resources() -> list[dict]:
    """Per alive node: {"node_id", "address", "cpu", "gpu"} of its total resources."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive", False):
            continue
        res = n.get("Resources", {})
        out.append({"node_id": n.get("NodeID"), "address": n.get("NodeManagerAddress"),
                    "cpu": float(res.get("CPU", 0.0)), "gpu": float(res.get("GPU", 0.0))})
    return out


def fits_on_node(request: dict, node: dict) -> int:
    """How many jobs asking ``request`` ({"cpu", "gpu"}) fit on ``node`` at once."""
    counts = []
    for res in ("cpu", "gpu"):
        want = float(request.get(res, 0.0))
        if want > 0:
            counts.append(math.floor(node[res] / want + 1e-9))
    return min(counts) if counts else 0


AUTOSCALING_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the launcher config on the head


def autoscaler_node_types(path: str | None = None) -> list[dict]:
    """Worker node types the cluster's autoscaler may start, from the launcher config on the head.

    Returns [{"name", "cpu", "gpu", "count", "cluster_max_workers"}] with count = the most workers of that
    type (capped by the cluster's max_workers, which also caps all types together); [] when there is no such file (a cluster started by hand, a laptop).
    ``path`` defaults to $LANDSCAPE_AUTOSCALING_CONFIG, else ~/ray_bootstrap_config.yaml.
    """
    import yaml

    path = os.path.expanduser(path or os.environ.get("LANDSCAPE_AUTOSCALING_CONFIG") or AUTOSCALING_CONFIG)
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}  # the launcher writes JSON, which YAML reads
    except (OSError, yaml.YAMLError):
        return []
    cap = int(config.get("max_workers", 0) or 0)
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == config.get("head_node_type"):
            continue  # the head is running already: it is among the live nodes
        res = spec.get("resources") or {}
        count = min(int(spec.get("max_workers", cap) or 0), cap) if cap else int(spec.get("max_workers", 0) or 0)
        if count > 0:
            types.append({"name": name, "cpu": float(res.get("CPU", 0)), "gpu": float(res.get("GPU", 0)),
                          "count": count, "cluster_max_workers": cap or None})
    return types


def _at_most(request: dict, nodes: list[dict], node_types: list[dict]) -> int:
    """Jobs at once once the autoscaler has started its workers: the live nodes, plus the best node types
    up to the cluster's worker cap (a bound, for the user's planning)."""
    total = sum(fits_on_node(request, n) for n in nodes)
    caps = [t["cluster_max_workers"] for t in node_types if t.get("cluster_max_workers")]
    left = min(caps) if caps else sum(t["count"] for t in node_types)
    for t in sorted(node_types, key=lambda t: -fits_on_node(request, t)):
        take = min(t["count"], left)
        total += take * fits_on_node(request, t)
        left -= take
    return total


def check_resources(cfg: SweepConfig, nodes: list[dict] | None = None,
                    node_types: list[dict] | None = None) -> dict:
    """Fail fast when the cluster cannot run a job of the sweep; returns a plan for the user.

    Returns {"cluster": {"cpu", "gpu", "nodes"}, "trials_at_once": {load value: n}, "pairs_at_once": {...},
    "trials_at_most": {...}, "pairs_at_most": {...}, "requests": {load value: {"trial": {cpu, gpu}, "pair":
    ...}}, "max_concurrent", "autoscaler": [node types], "gpu_auto"}. ``resources.gpu: auto`` is decided
    here: GPUs when a live node or an autoscaler node type has one (cfg.with_gpus_available). A job runs on
    one node, so it must fit the largest node, live or one the autoscaler may start (``node_types``, see
    autoscaler_node_types). *_at_once counts the live nodes, *_at_most adds every worker the autoscaler may
    start.
    """
    if nodes is None:
        nodes = node_resources()
    node_types = list(node_types or [])
    candidates = nodes + node_types
    total_cpu = sum(n["cpu"] for n in nodes)
    total_gpu = sum(n["gpu"] for n in nodes)
    any_gpu = total_gpu > 0 or any(t["gpu"] > 0 for t in node_types)
    plan = {"cluster": {"cpu": total_cpu, "gpu": total_gpu, "nodes": len(nodes), "gpu_available": any_gpu},
            "trials_at_once": {}, "pairs_at_once": {}, "trials_at_most": {}, "pairs_at_most": {}, "requests": {},
            "max_concurrent": cfg.run.max_concurrent, "autoscaler": node_types, "gpu_auto": cfg.gpu_is_auto}
    cfg = cfg.with_gpus_available(any_gpu)  # resources.gpu: auto -> GPUs when the cluster has any
    for lv in cfg.load.values:
        plan["requests"][lv] = {"trial": cfg.trial_resources(lv), "pair": cfg.pair_resources(lv)}
        for kind, request in (("trial", cfg.trial_resources(lv)), ("pair", cfg.pair_resources(lv))):
            field = "resources.gpu" if kind == "trial" else "resources.pair_gpu"
            if kind == "trial" and plan["gpu_auto"] and float(lv) not in {float(k) for k in cfg.resources.gpu_by_load}:
                field = "resources.auto_gpu_share"  # what decided this request
            if request["gpu"] > 0 and not any_gpu:
                raise ConfigError(
                    f"{field}: each {kind} at {cfg.load.name}={lv} asks for {request['gpu']:g} GPU but the Ray "
                    f"cluster has no GPU (CPUs: {total_cpu:g}); it would wait forever. Run on a cluster with "
                    f"GPUs, or set --set resources.gpu=auto (GPUs only where the cluster has them; the default)"
                )
            best = max((fits_on_node(request, n) for n in candidates), default=0)
            if best == 0:
                biggest = max(candidates, key=lambda n: (n["gpu"], n["cpu"]), default={"cpu": 0, "gpu": 0})
                cpu_field = "resources.cpu" if kind == "trial" else "resources.pair_cpu"
                raise ConfigError(
                    f"{cpu_field if request['cpu'] > biggest['cpu'] else field}: a {kind} at "
                    f"{cfg.load.name}={lv} asks for {request['cpu']:g} CPU and {request['gpu']:g} GPU, more "
                    f"than any node has (largest: {biggest['cpu']:g} CPU, {biggest['gpu']:g} GPU); lower the request"
                )
            at_once = sum(fits_on_node(request, n) for n in nodes)
            plan["trials_at_once" if kind == "trial" else "pairs_at_once"][lv] = at_once
            plan["trials_at_most" if kind == "trial" else "pairs_at_most"][lv] = _at_most(
                request, nodes, node_types)
    return plan


def describe_plan(cfg: SweepConfig, plan: dict) -> list[str]:
    """Lines for the user: the cluster, and how many trials and pair jobs run at once, by load group.

    Loads with the same request are grouped: "trials at once: 4 at width 4, 8, 16 (1 CPU + 0.25 GPU each);
    1 at width 64 (1 CPU + 1 GPU each)".
    """
    c = plan["cluster"]
    lines = [f"cluster: {c['nodes']} node(s), {c['cpu']:g} CPU, {c['gpu']:g} GPU"]
    for t in plan.get("autoscaler") or []:
        lines.append(f"  autoscaler may add: up to {t['count']} x {t['name']} ({t['cpu']:g} CPU, {t['gpu']:g} GPU)")
    if plan.get("gpu_auto"):
        if c.get("gpu_available"):
            lines.append(f"GPUs: auto -> the cluster has GPUs: {cfg.resources.auto_gpu_share:g} GPU per trial "
                         f"(resources.auto_gpu_share) unless resources.gpu_by_load says otherwise")
        else:
            lines.append("GPUs: auto -> CPU-only cluster: every job runs on CPUs")
    cap = plan.get("max_concurrent")
    for kind, noun in (("trial", "trials"), ("pair", "pair jobs")):
        groups: dict = {}
        for lv in cfg.load.values:
            req = plan["requests"][lv][kind]
            now = plan[f"{kind}s_at_once"][lv]
            most = plan[f"{kind}s_at_most"][lv]
            groups.setdefault((req["cpu"], req["gpu"], now, most), []).append(lv)
        parts = []
        for (cpu, gpu, now, most), loads in groups.items():
            each = f"{cpu:g} CPU" + (f" + {gpu:g} GPU" if gpu else "")
            count = min(now, cap) if cap else now
            text = f"{count} at {cfg.load.name} {', '.join(f'{v:g}' for v in loads)} ({each} each"
            if most > now:
                text += f"; up to {min(most, cap) if cap else most} once the autoscaler has started its workers"
            parts.append(text + ")")
        lines.append(f"{noun} at once: " + "; ".join(parts))
    if cap:
        lines.append(f"(run.max_concurrent = {cap} caps the jobs at once)")
    return lines
