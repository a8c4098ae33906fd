"""`landscape run --address` on a real two-node Ray cluster started with `ray start` on this machine.

Two nodes of one CPU each (tests/raycluster.py: loopback only, private temp dir, stopped by pid). The sweep
must run its trials on both nodes, every job must succeed, the resource check must see both nodes, and
nothing the test started may survive it.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from analysis.tables import RunTables
from tests.helpers import hygienic_env, landscape_cmd
from tests.raycluster import LoopbackCluster, cluster_nodes, is_loopback, listening_addresses

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_smoke_on_a_two_node_cluster(short_tmp):
    cluster = LoopbackCluster()
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node(num_cpus=1)

        nodes = [n for n in cluster_nodes(cluster) if n["alive"]]
        assert len(nodes) == 2, nodes
        assert {n["address"] for n in nodes} == {"127.0.0.1"}, nodes
        assert all(n["resources"].get("CPU") == 1.0 for n in nodes), nodes
        # Every socket any process of the cluster listens on is a loopback one.
        sockets = listening_addresses(cluster.processes())
        assert sockets, "no listening socket found for the cluster's processes"
        exposed = [s for s in sockets if not is_loopback(s[1])]
        assert not exposed, f"listening beyond loopback: {exposed}"

        env = hygienic_env(cluster.temp_dir)
        check = subprocess.run(landscape_cmd() + ["validate", "smoke", "--address", cluster.address],
                               capture_output=True, text=True, env=env, timeout=120)
        assert check.returncode == 0, check.stderr
        assert "cluster: 2 node(s), 2 CPU, 0 GPU" in check.stdout, check.stdout
        assert "trials at once: 2 at width 8, 64 (1 CPU each)" in check.stdout, check.stdout

        run_dir = os.path.join(short_tmp, "run")
        proc = subprocess.run(landscape_cmd() + ["run", "smoke", "--address", cluster.address, "--out", run_dir,
                                                 "--no-analysis"],
                              capture_output=True, text=True, env=env, timeout=240)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
        assert "8/8 models, 4/4 pairs" in proc.stdout
        assert "trials at once: 2 at width 8, 64 (1 CPU each)" in proc.stdout

        tables = RunTables(run_dir)
        models, pairs = tables.read("models"), tables.read("pairs")
        assert len(models) == 8 and (models.status == "ok").all(), models[["status", "error"]]
        assert len(pairs) == 4 and (pairs.status == "ok").all(), pairs[["status", "error"]]
        # Trials ran on both nodes, and only on this cluster's nodes.
        assert set(models.node_id) == {n["node_id"] for n in nodes}, models.node_id.value_counts()
        assert set(pairs.node_id) <= {n["node_id"] for n in nodes}
    finally:
        survivors = cluster.stop()
        import shutil

        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    assert not survivors, f"processes of the test cluster left running: {survivors}"
    with pytest.raises(OSError):  # the head's GCS port is closed
        import socket

        socket.create_connection(("127.0.0.1", cluster.port), timeout=2).close()
