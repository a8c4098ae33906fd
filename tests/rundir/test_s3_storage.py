"""A run directory on S3: an S3-compatible server (moto) on 127.0.0.1 started by the test is the storage.

`landscape run smoke --out s3://bucket/run` must put everything there (config, tables, model weights,
Tune's experiment state, the analysis), `landscape status` and `landscape analyze` must read it back, and
`resume` must find the run complete. Dummy credentials, the region and AWS_EC2_METADATA_DISABLED keep every
client away from real cloud endpoints; the server is stopped by its pid (fixtures s3_server and s3 in
tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.helpers import BUCKET, hygienic_env, keys, landscape_run, s3_env


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_tables_models_tune_and_analysis_on_s3(s3, s3_server, short_tmp, ray_tmpdir):
    run = f"s3://{BUCKET}/runs/smoke"
    env = hygienic_env(ray_tmpdir, **s3_env(s3_server))
    cwd = os.path.join(short_tmp, "cwd")  # nothing may be written to the user's working folder
    os.makedirs(cwd)

    def landscape(*args, timeout=240):
        return landscape_run(*args, env=env, cwd=cwd, timeout=timeout)

    proc = landscape("run", "smoke", "--out", run)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "8/8 models, 4/4 pairs" in proc.stdout and f"tables in {run}/tables" in proc.stdout
    assert f"report: {run}/analysis/report.html" in proc.stdout, proc.stdout[-2000:]
    assert os.listdir(cwd) == []

    stored = keys(s3, "runs/smoke/")
    names = lambda folder, suffix: [k for k in stored if k.startswith(f"runs/smoke/{folder}/") and k.endswith(suffix)]
    assert len(names("tables/models", ".parquet")) == 8 and len(names("tables/pairs", ".parquet")) == 4
    assert len(names("tables/curves", ".parquet")) == 4 and len(names("models", ".pt")) == 8
    assert names("tune", "") and "runs/smoke/config.yaml" in stored and "runs/smoke/run.json" in stored
    assert {"report.html", "phase_map.png", "cells.parquet"} <= {k.rsplit("/", 1)[-1] for k in names("analysis", "")}
    assert "runs/smoke/.lock" not in stored  # released at the end

    # The tables read back in this process, straight from S3; model weights are referenced by their URI.
    from analysis.tables import RunTables

    models = RunTables(run).read("models")
    assert len(models) == 8 and (models.status == "ok").all()
    assert models.model_uri.str.startswith(f"{run}/models/").all()

    status = landscape("status", run, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "stage 1 models: 8 expected · 8 ok" in status.stdout and "stage 2 pairs : 4 expected · 4 ok" in status.stdout
    assert "sweep: not running" in status.stdout

    # `analyze` rewrites the analysis on S3 (deleted first, so the files found are the new ones).
    for key in names("analysis", ""):
        s3.delete_object(Bucket=BUCKET, Key=key)
    analyzed = landscape("analyze", run, timeout=180)
    assert analyzed.returncode == 0, (analyzed.stdout, analyzed.stderr)
    assert f"report: {run}/analysis/report.html" in analyzed.stdout
    report = s3.get_object(Bucket=BUCKET, Key="runs/smoke/analysis/report.html")["Body"].read().decode()
    assert "<html" in report.lower() and run in report
    assert os.listdir(cwd) == []

    # The history table is on S3 too, and `landscape plot` draws a cell of it into the analysis there.
    assert len(names("tables/history", ".parquet")) == 8 and len(RunTables(run).read("history")) == 8 * 3
    plotted = landscape("plot", run, "--cell", "width=64,batch_size=32", timeout=120)
    assert plotted.returncode == 0, (plotted.stdout, plotted.stderr)
    assert plotted.stdout.strip() == f"{run}/analysis/training__width=64__batch_size=32.png"
    png = s3.get_object(Bucket=BUCKET, Key="runs/smoke/analysis/training__width=64__batch_size=32.png")["Body"].read()
    assert png[:4] == b"\x89PNG" and os.listdir(cwd) == []

    again = landscape("resume", run, "--no-analysis", timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout, (again.stdout, again.stderr)


def test_lease_lock_on_a_uri_run_dir(s3, monkeypatch):
    """Two processes never hold one S3 run dir: a live lease refuses, a released or expired one is taken."""
    import json

    from orchestrator.rundir import runlock, storage
    from orchestrator.rundir.runlock import RunLock, lock_holder
    from orchestrator.rundir.storage import RunDirError

    run = f"s3://{BUCKET}/runs/locked"
    first = RunLock(run).acquire()
    try:
        holder = lock_holder(run)
        assert holder and f"pid {os.getpid()}" in holder
        with pytest.raises(RunDirError, match="in use by another landscape process"):
            RunLock(run).acquire()
    finally:
        first.release()
    assert lock_holder(run) is None
    second = RunLock(run).acquire()
    second.release()

    # A lease its holder stopped renewing (the process died) expires and is taken over.
    stale = {"token": "dead", "pid": 1, "host": "elsewhere", "since": "long ago",
             "renewed": time.time() - runlock.LEASE_SECONDS - 1}
    storage.write_bytes(f"{run}/.lock", json.dumps(stale).encode())
    assert lock_holder(run) is None
    third = RunLock(run).acquire()
    try:
        assert "elsewhere" not in (lock_holder(run) or "")
    finally:
        third.release()

    # A renewing holder keeps its lease fresh.
    monkeypatch.setattr(runlock, "RENEW_SECONDS", 0.2)
    fourth = RunLock(run).acquire()
    try:
        # Read as every lock user does (_read_lease): a raw read may overlap a renewal and be torn.
        before = runlock._read_lease(f"{run}/.lock")["renewed"]
        deadline = time.monotonic() + 10
        while runlock._read_lease(f"{run}/.lock")["renewed"] == before:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.1)
    finally:
        fourth.release()
    assert lock_holder(run) is None


def test_a_torn_lease_read_is_read_again_not_taken_for_a_free_lock(monkeypatch):
    """A read overlapping a renewal on an object store can return a cut document (seen in CI with moto);
    the lock must read again rather than think the lease is gone."""
    from orchestrator.rundir import runlock, storage

    full = json.dumps({"token": "t", "pid": 1, "host": "h", "since": "s", "renewed": 1.0}).encode()
    reads = iter([full[:-1], full])
    monkeypatch.setattr(storage, "read_bytes", lambda uri: next(reads))
    assert runlock._read_lease("s3://bucket/run/.lock") == json.loads(full)
    monkeypatch.setattr(storage, "read_bytes", lambda uri: b"{not json")
    assert runlock._read_lease("s3://bucket/run/.lock", attempts=2) is None  # garbage stays garbage


def test_a_repair_moves_a_part_aside_on_s3_too(s3):
    """What a resume does with an unreadable or misplaced part, on an object store: the object is moved to
    RUN_DIR/quarantine/<its path> (a numbered name when that is taken), never deleted."""
    from orchestrator.rundir import storage

    run = f"s3://{BUCKET}/runs/quarantine"
    part = f"{run}/tables/models/mydata.parquet"
    for n in range(2):
        s3.put_object(Bucket=BUCKET, Key="runs/quarantine/tables/models/mydata.parquet", Body=f"mine {n}".encode())
        moved = storage.move_aside(run, part)
        assert moved == f"{run}/quarantine/tables/models/mydata.parquet" + ("" if n == 0 else ".2")
    stored = sorted(k for k in keys(s3, "runs/quarantine/") if not k.endswith("/"))  # not pyarrow's folder markers
    assert stored == ["runs/quarantine/quarantine/tables/models/mydata.parquet",
                      "runs/quarantine/quarantine/tables/models/mydata.parquet.2"]
    body = s3.get_object(Bucket=BUCKET, Key="runs/quarantine/quarantine/tables/models/mydata.parquet.2")["Body"]
    assert body.read() == b"mine 1"
