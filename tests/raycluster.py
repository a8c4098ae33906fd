"""A real Ray cluster of `ray start` nodes on this machine, on loopback only, for integration tests.

What keeps every node on 127.0.0.1 (Ray 2.60, measured here):
* a raylet or GCS binds to localhost only when its node IP is literally 127.0.0.1; with any other node IP
  (even 127.0.0.2) it listens on every interface (``*:port``);
* the head: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` plus ``--node-ip-address=127.0.0.1`` gives node IP
  127.0.0.1;
* a second node: ``ray start --address`` refuses to start a non-head node while that variable is 0, and
  with it at 1 (the Linux default) it rewrites every "127.0.0.1" it is given (the head's address and
  ``--node-ip-address``) into the machine's network address, where the head does not listen. So the
  second node runs Ray's own ``ray start`` command (``ray.scripts.scripts.main``) in a Python process in
  which that one rewrite (``services.resolve_ip_for_localhost``) is the identity: the node then starts
  exactly as ``ray start`` starts it, at 127.0.0.1. Tests assert the result (node addresses and the
  listening sockets of every process), not the recipe.

Other hygiene: ports outside Ray's worker range 10002-19999, the dashboard agents' ports chosen free, no
auth token (RAY_AUTH_MODE=disabled), no usage stats, a private short temp dir, a capped object store, every
command under `timeout` (a node pointed at a dead head retries for more than 10 minutes), and a new
session per `ray start`, so the daemons never share the test's process group. Stopping never uses
`ray stop` (it kills every Ray process on the machine): only the processes whose command line names this
cluster's private temp dir are signalled, by pid.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

from tests.helpers import RAY_ENV

RAY_WORKER_PORTS = range(10002, 20000)  # Ray's default worker port range: the GCS port must avoid it
START_TIMEOUT_S = 90
OBJECT_STORE_BYTES = 100 * 1024 * 1024

# `ray start` for a non-head node at 127.0.0.1 (see the module docstring).
WORKER_START = (
    "import sys\n"
    "from ray._private import services\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv = ['ray'] + sys.argv[1:]\n"
    "main()\n"
)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside Ray's worker port range."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RAY_WORKER_PORTS:
            return port


def ray_script() -> str:
    return os.path.join(os.path.dirname(sys.executable), "ray")


def processes_naming(text: str) -> dict[int, str]:
    """pid -> command line of every live process whose command line contains ``text``."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out[int(entry)] = cmd
    return out


def _decode_address(hex_addr: str) -> ipaddress._BaseAddress:
    """/proc/net/tcp{,6} local address (hex, 32-bit words in host byte order) -> an ip address."""
    raw = bytes.fromhex(hex_addr)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    return ipaddress.ip_address(b"".join(words))


def listening_addresses(pids) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state held by ``pids``."""
    inodes = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != "0A":  # 0A = LISTEN
                continue
            addr, port = cols[1].split(":")
            if cols[9] in inodes:
                out.append((inodes[cols[9]], str(_decode_address(addr)), int(port, 16)))
    return out


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class LoopbackCluster:
    """`ray start` nodes on 127.0.0.1 sharing one private temp dir; use as a context manager.

        with LoopbackCluster() as cluster:
            cluster.start_head(num_cpus=1)
            cluster.add_node(num_cpus=1)
            ... cluster.address ...
    """

    def __init__(self):
        self.temp_dir = os.path.join("/tmp", f"rmn-{uuid.uuid4().hex[:8]}")  # short: unix socket paths
        os.makedirs(self.temp_dir)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.logs: list[str] = []

    def env(self, enable_cluster: str = "0") -> dict:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env.update(RAY_ENV)
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = enable_cluster
        env["RAY_TMPDIR"] = self.temp_dir
        return env

    def _node_args(self, num_cpus: int, num_gpus: int | None) -> list[str]:
        args = [
            f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}", f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats", "--min-worker-port=0", "--max-worker-port=0",
            f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]
        if num_gpus is not None:
            args.append(f"--num-gpus={num_gpus}")
        return args

    def _run(self, cmd: list[str], env: dict) -> None:
        proc = subprocess.run(["timeout", str(START_TIMEOUT_S), *cmd], env=env, capture_output=True, text=True,
                              timeout=START_TIMEOUT_S + 30, start_new_session=True)
        self.logs.append(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}")

    def start_head(self, num_cpus: int = 1, num_gpus: int | None = None) -> None:
        self._run([ray_script(), "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                   "--include-dashboard=false", *self._node_args(num_cpus, num_gpus)], self.env("0"))

    def add_node(self, num_cpus: int = 1, num_gpus: int | None = None) -> None:
        self._run([sys.executable, "-c", WORKER_START, "start", f"--address={self.address}",
                   "--node-ip-address=127.0.0.1", *self._node_args(num_cpus, num_gpus)], self.env("1"))

    def processes(self) -> dict[int, str]:
        return processes_naming(self.temp_dir)

    def stop(self, grace_s: float = 5.0, wait_s: float = 20.0) -> dict[int, str]:
        """SIGTERM every process of this cluster, SIGKILL what is left after ``grace_s``; returns survivors."""
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, wait_s)):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.processes():
                break
        return self.processes()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        import shutil

        shutil.rmtree(self.temp_dir, ignore_errors=True)


NODES_SCRIPT = (
    "import json, sys, logging, ray\n"
    "ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)\n"
    "print(json.dumps([{'node_id': n['NodeID'], 'address': n['NodeManagerAddress'], 'alive': n['Alive'],\n"
    "                   'resources': n['Resources']} for n in ray.nodes()]))\n"
    "ray.shutdown()\n"
)


def cluster_nodes(cluster: LoopbackCluster) -> list[dict]:
    """ray.nodes() of the cluster, seen by a separate driver process (the test process keeps no Ray)."""
    import json

    proc = subprocess.run(["timeout", "60", sys.executable, "-c", NODES_SCRIPT, cluster.address],
                          env=cluster.env("0"), capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
