"""How a sweep ends when it does not end well, as exceptions: the Python API (landscape/) raises them to its
caller as they are; the command line (orchestrator/cli/main.py) turns each into its message and exit status.

    LandscapeError          base of every error landscape raises to a Python caller (landscape.LandscapeError)
      InputError            bad input: a config, an override, a run directory (the CLI: `error: ...`, exit 2)
      SweepIncomplete       the sweep ended without every result: failed jobs, missing keys (exit 1)
        SweepStopped        the sweep could not go on: the run directory cannot be written, the local Ray died
    SweepInterrupted        Ctrl-C or SIGTERM (a KeyboardInterrupt: exit 128 + the signal)

Whatever was finished is kept in every case, and `landscape resume RUN_DIR` (landscape.resume) continues.
"""

from __future__ import annotations

import signal


class LandscapeError(Exception):
    """Base of the errors landscape raises; the message says what is wrong and how to go on."""


class InputError(LandscapeError, ValueError):
    """Bad input: the message is the one line the command line prints after ``error:``."""


class SweepIncomplete(LandscapeError):
    """The sweep ended without every result; ``run_dir`` holds what was finished."""

    def __init__(self, message: str, run_dir: str):
        super().__init__(message, run_dir)
        self.message, self.run_dir = message, run_dir

    def __str__(self) -> str:
        return self.message


class SweepStopped(SweepIncomplete):
    """The sweep had to stop before its end. ``ray_lost``: the local Ray died under it; Ray's and Tune's exit
    handlers then wait on the Ray that is gone, so the process should end with ``os._exit`` (the CLI does)."""

    def __init__(self, message: str, run_dir: str, ray_lost: bool = False):
        super().__init__(message, run_dir)
        self.args = (message, run_dir, ray_lost)  # pickling calls __init__ with args
        self.ray_lost = ray_lost


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped the sweep; ``signal`` says which. ``resumable``: RUN_DIR holds the
    run's config.yaml, so `landscape resume RUN_DIR` continues it; False when the signal came before it was
    written (nothing was done: the same command starts it again)."""

    def __init__(self, run_dir: str, signum: int = signal.SIGINT, resumable: bool = True):
        super().__init__(run_dir, signum, resumable)
        self.run_dir, self.signal, self.resumable = run_dir, int(signum), bool(resumable)

    def __str__(self) -> str:
        name = " (SIGTERM)" if self.signal == signal.SIGTERM else ""
        if not self.resumable:
            return (f"interrupted{name} before the sweep started: nothing was done in {self.run_dir}; "
                    f"start it again the same way")
        return f"interrupted{name}; continue with: landscape resume {self.run_dir}"


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (a config, a run directory, a plan, a table), not a bug: a command
    turns them into ``error: ...`` and exit status 2. Imported on call, so that importing this module stays cheap."""
    from analysis.tables import TableError
    from orchestrator.config import ConfigError
    from orchestrator.rundir.storage import RunDirError
    from orchestrator.planning.plan import PlanError

    return (ConfigError, RunDirError, PlanError, TableError)
