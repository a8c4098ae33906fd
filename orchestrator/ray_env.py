"""Starting or joining Ray safely, and checking that the cluster can run the sweep before any trial.

Facts this is built around (Ray 2.60, measured on this project's machine):
* by default Ray listens on the machine's network address; exposed Ray ports allow remote code execution.
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps a single-node cluster on 127.0.0.1.
* ``address="auto"`` joins any cluster running on the machine: we never pass it; a cluster is joined only
  when the user names it (``--address`` or ``RAY_ADDRESS``).
* the default object store is 30% of RAM (7 GiB here); trained weights travel through the run directory,
  not the object store, so a small one is enough.
* a trial asking for a GPU on a CPU-only cluster pends forever with only a warning: check first.
"""

from __future__ import annotations

import logging
import math
import os

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
    """Ray Tune logs INFO lines and result-fetch warnings of its own; the progress view replaces them."""
    for name in ("ray", "ray.tune", "ray.train", "ray.air", "ray._private", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


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


def check_resources(cfg: SweepConfig, nodes: list[dict] | None = None) -> dict:
    """Fail fast when the cluster cannot run a job of the sweep; returns a plan for the user.

    Returns {"cluster": {"cpu", "gpu", "nodes"}, "trials_at_once": {load value: n}, "pairs_at_once": {...}}.
    Checked against the largest node (a job runs on one node), so an autoscaling cluster whose workers are not
    up yet is reported as too small: start its workers first, or lower the request.
    """
    if nodes is None:
        nodes = node_resources()
    total_cpu = sum(n["cpu"] for n in nodes)
    total_gpu = sum(n["gpu"] for n in nodes)
    plan = {"cluster": {"cpu": total_cpu, "gpu": total_gpu, "nodes": len(nodes)}, "trials_at_once": {},
            "pairs_at_once": {}}
    for lv in cfg.load.values:
        for kind, request in (("trial", cfg.trial_resources(lv)), ("pair", cfg.pair_resources(lv))):
            field = "resources.gpu" if kind == "trial" else "resources.pair_gpu"
            if request["gpu"] > 0 and total_gpu == 0:
                raise ConfigError(
                    f"{field}: each {kind} at {cfg.load.name}={lv} asks for {request['gpu']:g} GPU but the Ray "
                    f"cluster has no GPU (CPUs: {total_cpu:g}); it would wait forever. Run on a cluster with "
                    f"GPUs or set --set resources.gpu=0 (and resources.gpu_by_load={{}})"
                )
            best = max((fits_on_node(request, n) for n in nodes), default=0)
            if best == 0:
                biggest = max(nodes, key=lambda n: (n["gpu"], n["cpu"]), default={"cpu": 0, "gpu": 0})
                cpu_field = "resources.cpu" if kind == "trial" else "resources.pair_cpu"
                raise ConfigError(
                    f"{cpu_field if request['cpu'] > biggest['cpu'] else field}: a {kind} at "
                    f"{cfg.load.name}={lv} asks for {request['cpu']:g} CPU and {request['gpu']:g} GPU, more "
                    f"than any node has (largest: {biggest['cpu']:g} CPU, {biggest['gpu']:g} GPU); lower the request"
                )
            at_once = sum(fits_on_node(request, n) for n in nodes)
            plan["trials_at_once" if kind == "trial" else "pairs_at_once"][lv] = at_once
    return plan
