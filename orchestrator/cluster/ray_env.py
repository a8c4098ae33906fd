"""Starting or joining Ray safely (what the cluster can run: orchestrator/cluster/resources.py; leftovers of a killed
run's local Ray: orchestrator/cluster/ray_leftovers.py).

Facts this is built around (Ray 2.60, measured on this project's machine):
* by default Ray listens on the machine's network address; exposed Ray ports allow remote code execution.
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps a single-node cluster on 127.0.0.1.
* ``address="auto"`` joins any cluster running on the machine: we never pass it; a cluster is joined only
  when the user names it (``--address`` or ``RAY_ADDRESS``).
* the default object store is 30% of RAM (7 GiB here); trained weights travel through the run directory,
  not the object store, so a small one is enough.
"""

from __future__ import annotations

import logging
import os

from orchestrator.config import ConfigError

# Environment defaults applied before Ray is imported by a command (a user's own setting wins).
HYGIENE_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # single node on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's console reporter is replaced by ours
    # Tune's own choice of loggers (CSV, JSON and TensorBoard per trial) off: the config's `logging` says which
    # run (orchestrator/driver/loggers.py; by default JSON only), the tables are the record
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
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


def joins_cluster(address) -> bool:
    """Whether a command joins a running cluster (``--address`` or RAY_ADDRESS) rather than starting a local Ray."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


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
             num_gpus: int | None = None, runtime_env: dict | None = None, local_env: dict | None = None):
    """Start a local Ray (default) or join the cluster at ``address`` / ``RAY_ADDRESS``; returns the context.

    runtime_env: the job's Ray runtime environment (orchestrator/cluster/shipping.py: the user's modules), the same
    for a local Ray and a cluster. local_env: variables the processes of a local Ray start with (they inherit
    them from this process while ``ray.init`` starts them; orchestrator/cluster/ray_leftovers.py marks them so).

    A local Ray is started with ``address="local"``: without it, ray.init joins any cluster it detects on
    the machine (a `ray start` session under the same Ray temp dir, a GCS process found by its command line),
    and then fails on our num_cpus ("num_cpus and num_gpus must not be provided") or, worse, runs the sweep
    on somebody else's cluster."""
    apply_hygiene_env()
    import ray

    quiet_ray_loggers()
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=_log_to_driver(),
                  configure_logging=True)
    if runtime_env:
        common["runtime_env"] = runtime_env
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
    before = {key: os.environ.get(key) for key in local_env or {}}
    os.environ.update(local_env or {})
    try:
        return ray.init(address="local", **kwargs)
    finally:
        for key, value in before.items():  # the driver itself keeps no mark: only the Ray it started
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _log_to_driver() -> bool:
    return os.environ.get("LANDSCAPE_WORKER_LOGS", "0") == "1"
