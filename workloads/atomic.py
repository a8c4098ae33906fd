"""Atomic writes of local files: write a temporary file next to the target, then rename it over the target.

Readers see the old file or the new one, never half of one; two writers of one file each write their own
temporary file (the later rename wins, whole); a write cut short (a full disk, an interrupt) removes its
temporary file. Temporary files are named ``.<name>.<32 hex digits>.tmp`` (``is_temporary_name``), so that
what a killed writer left behind can be recognised and removed (orchestrator/rundir/storage.py).

Plain Python (no torch, no pyarrow): every layer uses it, the analysis included.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Callable

_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


def temporary_path(path: str) -> str:
    """A fresh temporary name in the folder of ``path``: ``<folder>/.<name>.<32 hex>.tmp``."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")


def is_temporary_name(name: str) -> bool:
    """Whether a file's base name is one that ``temporary_path`` gives."""
    return _TEMPORARY.match(name) is not None


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` writes the content to the local path ``tmp``; it then replaces ``path`` in one rename.

    Any exception (BaseException: Ctrl-C too) removes the temporary file and propagates.
    """
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)  # atomic on POSIX
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def write_bytes_atomically(path: str, data: bytes) -> None:
    """``data`` as the content of the local file ``path``, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    write_atomically(path, write)
