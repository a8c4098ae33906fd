"""What a sweep tells its user: printed by the command line, kept (not printed) under the Python API.

    echo(line, err=False)            print the line (stderr when err), or keep it while captured
    captured(lines) -> context       while inside: every line goes to the list ``lines`` instead
    progress_stream() -> stream|None where the live progress goes: None (stdout) or a stream that keeps nothing

The switch is a context variable, so a sweep started from Python prints nothing of its own while other threads
of the caller's program keep printing as usual.
"""

from __future__ import annotations

import contextlib
import contextvars

import click

_lines: contextvars.ContextVar[list | None] = contextvars.ContextVar("landscape_captured_lines", default=None)


def echo(message: str = "", err: bool = False) -> None:
    kept = _lines.get()
    if kept is None:
        click.echo(message, err=err)
    else:
        kept.append(("stderr" if err else "stdout", message))


@contextlib.contextmanager
def captured(lines: list):
    """Every ``echo`` inside goes to ``lines`` as (``"stdout"`` or ``"stderr"``, text)."""
    token = _lines.set(lines)
    try:
        yield lines
    finally:
        _lines.reset(token)


class Discard:
    """A text stream that keeps nothing (picklable: Tune pickles the progress callback holding it)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def progress_stream():
    """None (the live progress goes to stdout) or, while captured, a Discard."""
    return Discard() if _lines.get() is not None else None
