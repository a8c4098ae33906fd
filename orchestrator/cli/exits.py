"""How a command ends: exit codes, and bad input as one ``error: ...`` line (exit 2) instead of a traceback."""

from __future__ import annotations

import click


EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 1  # the sweep ended without every result: failed jobs, missing keys, a full disk, a dead Ray


class UserError(click.ClickException):
    """Printed as ``error: ...`` with exit status 2."""

    exit_code = EXIT_BAD_INPUT

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def fail(exc: Exception):
    """End the command on bad input: ``exc``'s message on one line as ``error: ...``, exit status 2."""
    raise UserError(" ".join(str(exc).split()))


class StoppedExit(UserError):
    """The sweep could not go on (the run directory cannot be written, the local Ray died): ``error: ...``,
    exit status 1; what was finished is kept and `landscape resume` continues."""

    exit_code = EXIT_INCOMPLETE

