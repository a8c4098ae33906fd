"""Plain helpers that tests share: one place for what two test files would otherwise copy. A test file never
imports from another test_*.py (tests/project/test_import_cycles.py checks it); fixtures stay in tests/conftest.py, which
pytest finds by itself. Two topic modules stand beside this one: analysis_synthetic.py (synthetic runs, also used
by benchmarks/) and raycluster.py (a loopback multi-node Ray cluster).

Here: the Ray hygiene variables and hygienic environments for subprocesses, the `landscape` command in process and
as a subprocess, snapshots of folders, tiny cells and sweeps, a finished run written without training, the
authors' released results, a local S3 stand-in's environment, and the headless browser.

Nothing here imports Ray or torch at module level: conftest.py imports this module for every test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # annotations only: importing them here would load torch for every test
    from orchestrator.config import SweepConfig
    from workloads.specs import CellSpec

# Where a test file finds the repository and the test data, whichever folder of tests/ it sits in.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DATA = os.path.join(REPO_ROOT, "tests", "data")

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
    """The installed console script next to this interpreter, else `python -m orchestrator.cli.main`."""
    script = os.path.join(os.path.dirname(sys.executable), "landscape")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "orchestrator.cli.main"]


def landscape_run(*args, env: dict | None = None, timeout: float = 300, cwd=None) -> "subprocess.CompletedProcess":
    """`landscape ARGS` as a real process (the installed console script), its output captured as text; ``env``
    defaults to hygienic_env() (a fresh private RAY_TMPDIR)."""
    return subprocess.run(landscape_cmd() + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=hygienic_env() if env is None else env, cwd=cwd)


def landscape_in_process(*args) -> "subprocess.CompletedProcess":
    """`landscape ARGS` through click's runner in this process, answered like a finished process (for
    commands that end before Ray starts: a subprocess costs seconds of imports)."""
    import signal
    import subprocess

    from click.testing import CliRunner

    import orchestrator.cli.main as cli_module

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


# ---------------------------------------------------------------------------------------------------------
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


def released_cell_files(k, bs, runs=(0, 1, 2), with_test=True) -> dict[str, bytes]:
    """Files of one cell of a small archive in the released format, as the authors wrote them (numpy scalars
    inside dicts): name -> bytes."""
    import numpy as np

    rng = np.random.default_rng(k * 1000 + bs)
    train = {r: {"nll": 0.01 * (r + 1), "loss": 0.01 * (r + 1), "accuracy": 99.0 + r / 10} for r in runs}
    files = {
        "loss_acc.pkl": pickle.dumps(train, protocol=3),
        "hessian.pkl": pickle.dumps(
            {r: {"top_eigenvalue": [float(10 + r)], "trace": np.float64(100.0 + r)} for r in runs}, protocol=3
        ),
        "CKA_mixup_alpha_16.0.pkl": pickle.dumps(
            {
                "representation_similarity": {
                    i: {j: [np.float32(1.0), np.float32(1.0 if i == j else rng.uniform(0.4, 0.8))] for j in runs}
                    for i in runs
                },
                "classification_similarity": {i: {} for i in runs},
                "test_accuracy": {},
            },
            protocol=3,
        ),
        "model_dist.pkl": pickle.dumps(
            {"model_distance": {i: {j: {"dist": float(abs(i - j) * 10)} for j in runs} for i in runs}}, protocol=3
        ),
    }
    if with_test:
        files["loss_acc_test.pkl"] = pickle.dumps(
            {r: {"nll": 0.5, "loss": 0.5, "accuracy": 80.0 + r} for r in runs}, protocol=3
        )
    buf = io.BytesIO()
    np.savez(
        buf,
        ts=np.array([0, 0.25, 0.5, 0.75, 1.0]),
        tr_err=np.array([1.0, 2.0, 7.0, 2.0, 3.0]),
        tr_nll=np.full(5, 0.1),
        tr_loss=np.full(5, 0.2),
        te_err=np.full(5, 20.0),
        te_nll=np.full(5, 0.6),
    )
    files["curve_test.npz"] = buf.getvalue()
    return files


# ---------------------------------------------------------------------------------------------------------
# Folders


def snapshot(folder, suffix: str = "", identity: bool = False) -> dict:
    """Every file under ``folder`` (path relative to it) -> its bytes: to check that a refused command changed
    nothing.

    With ``suffix``, only the files whose names end in it and do not start with "." (the parts or weights of a
    table, not an atomic write in progress), the suffix dropped from their names (their keys). With
    ``identity``, a file maps to (bytes, inode, mtime): a file written again (atomically: a new inode) differs
    even when its bytes are the same.
    """
    folder = str(folder)
    out = {}
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            if suffix and (name.startswith(".") or not name.endswith(suffix)):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                data = fh.read()
            if identity:
                st = os.stat(path)
                data = (data, st.st_ino, st.st_mtime_ns)
            rel = os.path.relpath(path, folder)
            out[rel[: -len(suffix)] if suffix else rel] = data
    return out


class TouchesWhenUnpickled:
    """Pickles into a call of os.system that creates ``marker``: what a crafted checkpoint, weights or metrics file
    would do when loaded with pickle. The marker's absence afterwards shows that nothing ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@contextlib.contextmanager
def user_module_folder(folder: pathlib.Path, monkeypatch, files: dict[str, str], forget=()):
    """``folder`` (outside the repository) holding a user's files (name -> text), as the working directory, as a
    user's own code would stand: its modules not imported yet, nor importable from sys.path until the code under
    test adds the folder. Yields the folder. The modules of the .py files, and those named in ``forget`` (that
    the test writes later), are forgotten before and after."""
    for name, text in files.items():
        (folder / name).write_text(text)
    modules = {name[:-3] for name in files if name.endswith(".py")} | set(forget)
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(folder))])
    for name in modules:
        sys.modules.pop(name, None)
    try:
        yield folder
    finally:
        for name in modules:
            sys.modules.pop(name, None)


# ---------------------------------------------------------------------------------------------------------
# Tiny cells and sweeps (sklearn digits, an MLP of width 8: seconds on a CPU)


def tiny_cell(*, curve_epochs: int = 1, **changes) -> "CellSpec":
    """sklearn digits (1437 train / 360 test, 64 inputs), MLP width 8, 2 epochs: well under a second.

    ``changes``: Workload fields (dataset, model, ...) and CellSpec fields; ``curve_epochs``: the training of
    each mode-connectivity curve.
    """
    import dataclasses

    from workloads.metrics.connectivity import CurveConfig
    from workloads.settings import CkaSettings, HessianSettings, Workload
    from workloads.specs import CellSpec
    from workloads.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(Workload)}
    workload = Workload(dataset="digits", model="mlp", **{k: changes.pop(k) for k in list(changes) if k in fields})
    cell = CellSpec(
        load_name="width", load_value=8, temperature_name="batch_size", temperature_value=64, workload=workload,
        training=TrainConfig(epochs=2, lr=0.05, momentum=0.9, weight_decay=5e-4),
        hessian=HessianSettings(samples=300, eigen_max_iter=20, trace_max_probes=10),
        curve=CurveConfig(epochs=curve_epochs, lr=0.05, batch_size=64, points=5),
        cka=CkaSettings(probes=100),
    )
    return dataclasses.replace(cell, **changes)


def relative_difference(state: dict, reference: dict) -> float:
    """||Δ||₂ / ||θ||₂ over the floating-point tensors of a state dict."""
    keys = [k for k, v in reference.items() if v.is_floating_point()]
    num = sum(float(((state[k].double() - reference[k].double()) ** 2).sum()) for k in keys)
    den = sum(float((reference[k].double() ** 2).sum()) for k in keys)
    return (num / den) ** 0.5


def tiny_sweep_config(name: str, learning_rates: list[float], *, epochs: int, max_failures: int,
                      cohort=None, **changes) -> dict:
    """A raw sweep config: digits, MLP width 8, the given learning rates, seeds 0 and 1, the metrics at their
    cheapest. ``cohort`` is execution.cohort when given; ``changes`` are --set overrides (KEY=VALUE, the value
    read as YAML)."""
    from orchestrator.config import apply_overrides

    raw = {
        "name": name,
        "workload": {"dataset": "digits", "model": "mlp"},
        "load": {"name": "width", "values": [8]},
        "temperature": {"name": "learning_rate", "values": list(learning_rates)},
        "seeds": [0, 1],
        "training": {"epochs": epochs, "batch_size": 64},
        "metrics": {"hessian_samples": 100, "hessian_eigen_max_iter": 10, "hessian_trace_max_probes": 5,
                    "cka_probes": 64, "curve": {"epochs": 1, "batch_size": 64, "points": 3}},
        "run": {"max_failures": max_failures},
    }
    if cohort is not None:
        raw["execution"] = {"cohort": cohort}
    return apply_overrides(raw, [f"{k}={v}" for k, v in changes.items()])


def sweep(cfg, run_dir: str, faults: dict | None = None, tmp_path=None, monkeypatch=None, *, run_id=None):
    """run_sweep in this process, as `landscape run` calls it (config.yaml written first, resources checked), on
    the session's local Ray (the caller holds the ray_local fixture). Returns its summary.

    ``faults``: a plan for orchestrator.rundir.fault_hook, written to a file in ``tmp_path`` that LANDSCAPE_FAULT_INJECT
    names (set through ``monkeypatch``); without faults, a given ``monkeypatch`` clears the variable. The run id
    is ``run_id``, else the config's name.
    """
    from orchestrator.rundir import storage
    from orchestrator.rundir.fault_hook import FAULT_INJECT_ENV
    from orchestrator.cluster.resources import check_resources
    from orchestrator.driver.sweep import run_sweep

    if faults is not None:
        path = tmp_path / f"faults-{len(os.listdir(tmp_path))}.json"
        path.write_text(json.dumps(faults))
        monkeypatch.setenv(FAULT_INJECT_ENV, str(path))
    elif monkeypatch is not None:
        monkeypatch.delenv(FAULT_INJECT_ENV, raising=False)
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    return run_sweep(cfg, run_dir, run_id=run_id or cfg.name, resources=check_resources(cfg))


def write_block_faults(folder: str, keys, *, started: str | None = None, log: str | None = None) -> str:
    """A fault plan (orchestrator.rundir.fault_hook) in ``folder``/faults.json in which each job of ``keys`` waits,
    when it starts, for a file that never appears (creating ``started`` first, when given): a sweep that cannot
    finish before the test acts on it, however fast the machine. ``log``: the hook's log of attempts. Returns
    the plan's path, for LANDSCAPE_FAULT_INJECT."""
    path = os.path.join(folder, "faults.json")
    never = os.path.join(folder, "never")
    crash = [{"key": key, "mode": "block", "until": never, **({"started": started} if started else {})}
             for key in keys]
    with open(path, "w") as f:
        json.dump({**({"log": log} if log else {}), "crash": crash}, f)
    return path


def write_finished_run(run_dir: str, overrides=()) -> "SweepConfig":
    """The tables and weights of a finished `smoke` run (rows made up, weights real torch files): what
    `status`, `resume` and the analysis read, without training anything."""
    import torch

    from analysis.tables import RunTables
    from orchestrator.rundir import storage
    from orchestrator.config import load_config
    from orchestrator.rundir.provenance import provenance
    from orchestrator.planning.jobs import mkey, pkey
    from workloads.metric_discovery import run_metrics

    cfg = load_config("smoke", [f"run.storage={run_dir}", *overrides])
    added = run_metrics(cfg.metrics.extra).added  # a run of this version has its added metrics measured
    added_values = {s.name: 1.0 for s in added}
    storage.write_bytes(storage.config_uri(run_dir), cfg.to_yaml().encode())
    storage.ensure_run_info(run_dir, cfg.name)
    prov = provenance("finished", cfg.config_hash())
    tables = RunTables(run_dir)
    cell = lambda lv, tv: {"load_name": "width", "load_value": float(lv), "temperature_name": "batch_size",  # noqa
                           "temperature_value": float(tv)}
    for lv, tv, seed in cfg.model_keys():
        key = mkey(cfg, lv, tv, seed)
        sha = storage.save_state(storage.model_uri(run_dir, key), {"w": torch.full((3,), float(seed))})
        loss = 0.01 if tv == 32 else 1.0
        tables.write_part("models", key, [{**prov, **cell(lv, tv), "seed": seed, "status": "ok", "train_loss": loss,
                                           "test_acc": 0.5, "hessian_top_eigenvalue": 2.0, "hessian_trace": 9.0,
                                           "weights_sha256": sha, "device": "cpu", **added_values}], added=added)
    for lv, tv, a, b in cfg.pair_keys():
        key = pkey(cfg, lv, tv, a, b)
        tables.write_part("curves", key, [{**prov, **cell(lv, tv), "seed_a": a, "seed_b": b, "t": t,
                                           "train_error": 1.0 + (t == 0.5)} for t in (0.0, 0.5, 1.0)])
        tables.write_part("pairs", key, [{**prov, **cell(lv, tv), "seed_a": a, "seed_b": b, "status": "ok",
                                          "mode_connectivity": -1.5 if lv == 8 else 0.0, "t_star": 0.5,
                                          "cka": 0.9, "cka_status": "ok", "l2_distance": 1.0}])
    return cfg


# ---------------------------------------------------------------------------------------------------------
# A run directory on S3: moto's S3 server on 127.0.0.1, started by the test. Dummy credentials, the region and
# AWS_EC2_METADATA_DISABLED keep every client away from real cloud endpoints; the server is stopped by its pid.

BUCKET = "landscape-test"


def s3_env(endpoint: str) -> dict:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": endpoint,
        # No profile or credentials file of the machine's user may be picked up.
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
    }


def keys(client, prefix: str) -> list[str]:
    """Every key of BUCKET under ``prefix`` (all pages)."""
    out, token = [], None
    while True:
        kwargs = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
        page = client.list_objects_v2(**kwargs)
        out += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


# ---------------------------------------------------------------------------------------------------------
# Headless browser


def chromium_executable() -> str:
    """Debian's chromium; its absence fails the test in CI (.ci/run installs it) and skips it elsewhere."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


# ---------------------------------------------------------------------------------------------------------
# The training engine's references (tests/workloads/test_cohort.py, test_cohort_fused.py)


def sgd_reference(model, x, y, config, dtype=None):
    """A plain loop of the member's module with torch.optim.SGD in the method's batch order (a fresh
    randperm(n) per epoch from a CPU generator seeded with config.seed, floor(n / B) steps, the schedule's lr).
    dtype: the reference's float type (default float32). Returns (state dict, [(mean batch loss, accuracy) per
    epoch])."""
    import copy

    import torch

    from workloads import objective
    from workloads.cohort_train import learning_rate

    dtype = dtype or torch.float32
    model = copy.deepcopy(model).to(dtype).train()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    order = torch.Generator().manual_seed(config.seed)
    n, b = len(y), config.batch_size
    history = []
    for epoch in range(config.epochs):
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, epoch)
        perm = torch.randperm(n, generator=order)
        losses, hits = [], 0
        for step in range(n // b):
            idx = perm[step * b:(step + 1) * b]
            logits = model(x[idx].to(dtype) if x.is_floating_point() else x[idx])
            loss = objective.mean_loss(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            hits += int(objective.correct(logits.detach(), y[idx]))
        history.append((float(torch.stack(losses).mean()), hits / ((n // b) * b * y[0].numel())))
    return model.state_dict(), history


def round_trip(state: dict) -> dict:
    """A training checkpoint saved and loaded as a run directory's file is: torch.load(weights_only=True)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # plain data only: nothing in it can run code
