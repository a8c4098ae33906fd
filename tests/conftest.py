"""Shared fixtures: a private 2-CPU local Ray, hygienic environments for subprocesses, tiny configs.

Ray hygiene (see INTERFACES.md): the cluster listens on 127.0.0.1 only, writes no auth token in ~/.ray, sends
no usage stats, keeps its sockets and logs in a private short temp dir (unix socket paths are limited to
~107 bytes), caps its object store, is never started with address="auto" and is never stopped with
`ray stop` (that kills every Ray process on the machine): only ray.shutdown() of our own instance.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
import uuid

import pytest

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_worker_niceness": "0",  # as `landscape` sets it: workers compete with the test process on equal terms
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
}
OBJECT_STORE_BYTES = 200 * 1024 * 1024

# Ray reads some of these when it is imported (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER among them: it is what keeps
# a single node on 127.0.0.1), and any test module may import ray first (e.g. ray.autoscaler for cluster.yaml):
# so they are set here, when pytest loads this file, before any test module.
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)


def private_ray_tmpdir() -> str:
    """A fresh, short temp dir for one Ray instance (unix socket paths must stay short)."""
    path = os.path.join("/tmp", f"ray-{uuid.uuid4().hex[:8]}")
    os.makedirs(path)
    return path


def hygienic_env(ray_tmpdir: str | None = None, **extra) -> dict:
    """os.environ plus the Ray hygiene variables, for subprocesses such as `landscape run`.

    RAY_ADDRESS is removed so a test never joins a cluster that happens to run on the machine.
    """
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_ENV)
    env["RAY_TMPDIR"] = ray_tmpdir or private_ray_tmpdir()
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def landscape_cmd() -> list[str]:
    """The installed console script next to this interpreter, else `python -m orchestrator.cli`."""
    script = os.path.join(os.path.dirname(sys.executable), "landscape")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "orchestrator.cli"]


def landscape_in_process(*args) -> "subprocess.CompletedProcess":
    """`landscape ARGS` through click's runner in this process, answered like a finished process (for
    commands that end before Ray starts: a subprocess costs seconds of imports)."""
    import signal
    import subprocess

    from click.testing import CliRunner

    import orchestrator.cli as cli_module

    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs a SIGTERM handler: keep pytest's
    try:
        result = CliRunner().invoke(cli_module.main, [str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def assert_clean_error(proc, *fragments: str) -> None:
    """Exit 2, one `error: ...` line on stderr containing every fragment, no traceback anywhere."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def ray_processes_of(ray_tmpdir: str) -> list[str]:
    """Live processes of the Ray that uses ``ray_tmpdir``: daemons name it on their command line, workers
    (whose command line becomes "ray::...") inherit RAY_TMPDIR in their environment."""
    needle_env = f"RAY_TMPDIR={ray_tmpdir}".encode()
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if ray_tmpdir.encode() in cmd or needle_env in env:
            out.append(f"{pid}: {cmd[:100].decode(errors='replace')}")
    return out


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


# The authors' released results (../shared/reference beside the checkout, or LANDSCAPE_REFERENCE_ARCHIVE).
REFERENCE_ARCHIVE = pathlib.Path(os.environ.get(
    "LANDSCAPE_REFERENCE_ARCHIVE",
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "taxonomy-released" / "results.tar.gz"))


def require_reference_archive() -> pathlib.Path:
    """The released archive's path; a missing archive fails the test in CI (it must be there) and skips it
    elsewhere."""
    if not REFERENCE_ARCHIVE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"reference archive {REFERENCE_ARCHIVE} missing (set LANDSCAPE_REFERENCE_ARCHIVE)")
        pytest.skip(f"reference archive {REFERENCE_ARCHIVE} not available")
    return REFERENCE_ARCHIVE
