"""Checking that the Ray cluster can run the sweep before any trial: what each job asks for, how many fit at
once, GPUs requested on a CPU-only cluster (a trial asking for one would pend forever), autoscaler node types.

A cluster from Ray's launcher (cluster.yaml) may have no worker yet: its autoscaler starts them when trials ask
for their resources. The head keeps the launcher's config (with the node types' resources filled in) at
~/ray_bootstrap_config.yaml; the check counts the workers it may start.
"""

from __future__ import annotations

import math
import os

from orchestrator.config import ConfigError, SweepConfig



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
    """Fail fast when the cluster cannot run a job of the sweep; returns what it can run (the capacity the run prints).

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
    capacity = {"cluster": {"cpu": total_cpu, "gpu": total_gpu, "nodes": len(nodes), "gpu_available": any_gpu},
            "trials_at_once": {}, "pairs_at_once": {}, "trials_at_most": {}, "pairs_at_most": {}, "requests": {},
            "max_concurrent": cfg.run.max_concurrent, "autoscaler": node_types, "gpu_auto": cfg.gpu_is_auto}
    cfg = cfg.with_gpus_available(any_gpu)  # resources.gpu: auto -> GPUs when the cluster has any
    for lv in cfg.load.values:
        capacity["requests"][lv] = {"trial": cfg.trial_resources(lv), "pair": cfg.pair_resources(lv)}
        for kind, request in (("trial", cfg.trial_resources(lv)), ("pair", cfg.pair_resources(lv))):
            field = "resources.gpu" if kind == "trial" else "resources.pair_gpu"
            if kind == "trial" and capacity["gpu_auto"] and float(lv) not in {float(k) for k in cfg.resources.gpu_by_load}:
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
            capacity["trials_at_once" if kind == "trial" else "pairs_at_once"][lv] = at_once
            capacity["trials_at_most" if kind == "trial" else "pairs_at_most"][lv] = _at_most(
                request, nodes, node_types)
    return capacity


def describe_capacity(cfg: SweepConfig, capacity: dict) -> list[str]:
    """Lines for the user: the cluster, and how many trials and pair jobs run at once, by load group.

    Loads with the same request are grouped: "trials at once: 4 at width 4, 8, 16 (1 CPU + 0.25 GPU each);
    1 at width 64 (1 CPU + 1 GPU each)".
    """
    c = capacity["cluster"]
    lines = [f"cluster: {c['nodes']} node(s), {c['cpu']:g} CPU, {c['gpu']:g} GPU"]
    for t in capacity.get("autoscaler") or []:
        lines.append(f"  autoscaler may add: up to {t['count']} x {t['name']} ({t['cpu']:g} CPU, {t['gpu']:g} GPU)")
    if capacity.get("gpu_auto"):
        if c.get("gpu_available"):
            lines.append(f"GPUs: auto -> the cluster has GPUs: {cfg.resources.auto_gpu_share:g} GPU per trial "
                         f"(resources.auto_gpu_share) unless resources.gpu_by_load says otherwise")
        else:
            lines.append("GPUs: auto -> CPU-only cluster: every job runs on CPUs")
    cap = capacity.get("max_concurrent")
    for kind, noun in (("trial", "trials"), ("pair", "pair jobs")):
        groups: dict = {}
        for lv in cfg.load.values:
            req = capacity["requests"][lv][kind]
            now = capacity[f"{kind}s_at_once"][lv]
            most = capacity[f"{kind}s_at_most"][lv]
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
