"""`landscape analyze` on bad input: one clear `error:` line (exit 2), and nothing already written is lost.

Every case runs in-process through click's runner on a synthetic run (no Ray, no training).
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from click.testing import CliRunner

from analysis.phases import PhaseRules
from tests.analysis_synthetic import write_synthetic_run


def analyze(*args) -> subprocess.CompletedProcess:
    """`landscape analyze ARGS` through click's runner, answered like a process."""
    import orchestrator.cli as cli_module

    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs a SIGTERM handler: keep pytest's
    try:
        result = CliRunner().invoke(cli_module.main, ["analyze", *args])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("value", ["1e400", ".inf", "-.inf", ".nan"])
def test_non_finite_rules_are_refused_by_name(tmp_path, value):
    run = str(tmp_path / "run")
    write_synthetic_run(run, only=[(8, 16)])
    proc = analyze(run, "--rule", f"mc_threshold={value}")
    assert_clean_error(proc, "mc_threshold", "finite number")
    assert not os.path.exists(os.path.join(run, "analysis"))  # refused before anything is written


@pytest.mark.parametrize("name", ["sharp_loss_ratio", "loss_threshold", "cka_threshold", "cka_min_range"])
def test_every_rule_must_be_finite(name):
    with pytest.raises(ValueError, match=rf"{name}=inf .*finite number"):
        PhaseRules.from_mapping({name: float("inf")})
