"""The fixtures tests share: a private 2-CPU local Ray, private temp folders, one torch thread, MNIST-1D, the authors'
released results imported once, and a local S3 stand-in. Plain helpers live in tests/helpers.py; a test file never
imports from another test_*.py (tests/project/test_import_cycles.py checks it).

Ray hygiene (see INTERFACES.md): the cluster listens on 127.0.0.1 only, writes no auth token in ~/.ray, sends
no usage stats, keeps its sockets and logs in a private short temp dir (unix socket paths are limited to
~107 bytes), caps its object store, is never started with address="auto" and is never stopped with
`ray stop` (that kills every Ray process on the machine): only ray.shutdown() of our own instance.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.helpers import BUCKET, OBJECT_STORE_BYTES, RAY_ENV, REFERENCE_ARCHIVE, private_ray_tmpdir, \
    require_reference_archive, s3_env

# Ray reads some of these when it is imported (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER among them: it is what keeps
# a single node on 127.0.0.1), and any test module may import ray first (e.g. ray.autoscaler for cluster.yaml):
# so they are set here, when pytest loads this file, before any test module.
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def ray_local():
    """A session-wide local Ray with 2 CPUs on 127.0.0.1; yields the ray module."""
    for k, v in RAY_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.pop("RAY_ADDRESS", None)
    tmp = private_ray_tmpdir()
    os.environ["RAY_TMPDIR"] = tmp
    import ray

    if ray.is_initialized():  # pragma: no cover - another fixture's instance
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, _temp_dir=tmp,
             logging_level="ERROR", log_to_driver=False)
    try:
        addresses = [n["NodeManagerAddress"] for n in ray.nodes()]
        assert addresses and all(a == "127.0.0.1" for a in addresses), f"Ray listens on {addresses}"
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def ray_tmpdir():
    """A private RAY_TMPDIR for a subprocess, removed afterwards."""
    path = private_ray_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def short_tmp():
    """A short temp dir under /tmp (run dirs of Ray subprocess tests)."""
    path = tempfile.mkdtemp(prefix="ls-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on the shared 2-core CI machine: with two intra-op threads, OpenMP hand-offs cost 20-40x
    the arithmetic. Modules of small-model tests use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch  # lazily: most tests of analysis/ never need torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mnist1d():
    """MNIST-1D (4000 train / 1000 test points of 40 inputs, 10 classes), loaded once per module."""
    from workloads.data import load_dataset  # lazily: most tests of analysis/ never need torch

    return load_dataset("mnist1d")


# ---------------------------------------------------------------------------------------------------------
# The authors' released results (tests/helpers.py finds the archive)


@pytest.fixture(scope="module")
def released_tables(tmp_path_factory):
    """(models, pairs) of the released archive imported into a run of a temp folder."""
    from analysis.reference import import_reference
    from analysis.tables import RunTables

    require_reference_archive()
    out = str(tmp_path_factory.mktemp("released"))
    import_reference(str(REFERENCE_ARCHIVE), out)
    tables = RunTables(out)
    return tables.read("models"), tables.read("pairs")


@pytest.fixture(scope="module")
def released_cells(released_tables):
    """The released results' cells, labelled by the default phase rules."""
    from analysis.aggregate import aggregate_cells
    from analysis.phases import label_phases

    return label_phases(aggregate_cells(*released_tables))


# ---------------------------------------------------------------------------------------------------------
# A run directory on S3: moto's S3 server on 127.0.0.1 (tests/helpers.py has its environment and BUCKET)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port: yields its endpoint URL; killed by pid afterwards."""
    server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    if not os.path.exists(server):
        pytest.skip("moto[server] is not installed (pip install -e .[test])")
    port = _free_port()
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start in 30 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.poll() is not None


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 environment in this process (for boto3 and pyarrow) and a fresh bucket; yields a boto3 client."""
    import boto3

    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_env(s3_server).items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_server)
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    return client
