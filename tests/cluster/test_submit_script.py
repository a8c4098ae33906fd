"""scripts/submit_sweep.py (what `ray submit` runs on the head): the installed CLI, its exit codes, the address."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import hygienic_env
from tests.helpers import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "scripts", "submit_sweep.py")


def test_bad_config_is_one_clean_error_line(ray_tmpdir):
    proc = subprocess.run([sys.executable, SCRIPT, "no-such-config", "--address", "127.0.0.1:1"],
                          capture_output=True, text=True, env=hygienic_env(ray_tmpdir), timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: config 'no-such-config'") and "Traceback" not in proc.stderr


def test_head_address_is_explicit(monkeypatch):
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import submit_sweep
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert submit_sweep.head_address() == "10.0.0.5:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    host, port = submit_sweep.head_address().rsplit(":", 1)
    assert port == "6379" and host and host != "auto"
