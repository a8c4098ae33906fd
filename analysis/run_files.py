"""Reading one file of a run directory that somebody else may have written.

Run directories are shared (a group folder, a bucket): whoever can write one must not be able to make the
process that reads it read, follow or exhaust anything outside it. Every read of a run directory's file goes
through :func:`read_run_file`, which reads

- a regular file only: a symlink (of the file itself or of any folder between the run directory and it), a
  device, a FIFO or a socket is refused, with a message naming the file;
- at most the size limit of its kind (:data:`SIZE_LIMITS`): the size is checked before the read, and the read
  itself stops one byte past the limit, so a file that grows meanwhile cannot slip through;
- from the descriptor that was checked (``O_NOFOLLOW``): nothing can be swapped in between check and read.

Object stores (s3://, gs://) have no symlinks or devices; the size limit applies there too.

    read_run_file(uri, kind, root=None) -> bytes     the checked bytes, or RunFileError

Plain Python and pyarrow's file systems: every layer may use it.
"""

from __future__ import annotations

import os
import stat

import pyarrow.fs as pafs

MiB = 1024 * 1024

# Bytes per kind of file, each well above what a real run writes and far below what hurts a laptop.
SIZE_LIMITS = {
    "config": 1 * MiB,        # config.yaml: `landscape validate` refuses configs over 1 MB
    "json": 1 * MiB,          # run.json, provenance.json, .local-ray.json, phase_rules.json, leases
    "text": 1 * MiB,          # Tune's error files, shown as text
    "table": 64 * MiB,        # one Parquet part holds one key's rows (a history part: one row per epoch)
    "weights": 4096 * MiB,    # one model's or one cohort's weights (ResNet18 at width 64 is ~45 MB)
    "archive": 512 * MiB,     # an archive given to import-reference (its members are capped on their own)
    "figure": 64 * MiB,
    "reference": 16 * MiB,    # a metrics file of the released results (the largest is 9 kB)       # a PNG the analysis drew and report.html embeds (a few hundred kB)
}


class RunFileError(ValueError, OSError):
    """A file of a run directory that is not read: not a regular file, a symlink, or over its size limit.

    An OSError too: every reader that handles a file it cannot read (``except OSError``) handles this one."""


def _limit(kind: str) -> int:
    try:
        return SIZE_LIMITS[kind]
    except KeyError:
        raise ValueError(f"unknown kind of run file {kind!r}; known: {sorted(SIZE_LIMITS)}") from None


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)


def _refuse_linked_folders(path: str, root: str | None) -> None:
    """RunFileError when a folder between ``root`` (excluded) and ``path`` (excluded) is a symlink."""
    if root is None:
        return
    root = _local_path(root)
    rel = os.path.relpath(path, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise RunFileError(f"{path} lies outside the run directory {root}: it is not read")
    folder = root
    for part in rel.split(os.sep)[:-1]:
        folder = os.path.join(folder, part)
        try:
            linked = stat.S_ISLNK(os.lstat(folder).st_mode)
        except FileNotFoundError:
            return  # the read itself reports the missing file
        if linked:
            raise RunFileError(
                f"{folder} is a symbolic link: files of a run directory are read only through real folders "
                f"(replace the link with the folder it points to)"
            )


def _describe(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _read_local(path: str, limit: int, kind: str, root: str | None) -> bytes:
    _refuse_linked_folders(path, root)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if os.path.islink(path):
            raise RunFileError(
                f"{path} is a symbolic link: a run directory's files are read only as regular files "
                f"(replace the link with the file itself)"
            ) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RunFileError(f"{path} is {_describe(info.st_mode)}, not a regular file: it is not read")
        if info.st_size > limit:
            raise RunFileError(_too_large(path, info.st_size, limit, kind))
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 * MiB, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise RunFileError(_too_large(path, total, limit, kind))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(path: str, size: int, limit: int, kind: str) -> str:
    return (f"{path} is {size / MiB:.1f} MiB, over the {limit / MiB:.0f} MiB that a {kind} file of a run "
            f"directory may have: it is not read (a run never writes one so large; check where it came from)")


def _read_remote(uri: str, limit: int, kind: str) -> bytes:
    fs, path = pafs.FileSystem.from_uri(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    if info.type != pafs.FileType.File:
        raise RunFileError(f"{uri} is not a file: it is not read")
    if info.size is not None and info.size > limit:
        raise RunFileError(_too_large(uri, info.size, limit, kind))
    with fs.open_input_stream(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise RunFileError(_too_large(uri, len(data), limit, kind))
    return data


def read_run_file(uri: str, kind: str, root: str | None = None) -> bytes:
    """The bytes of the run directory's file ``uri`` (a local path or a URI), checked as the module doc says.

    ``root``: the run directory; when given (local paths), no folder between it and the file may be a symlink.
    Raises RunFileError (the file is refused), FileNotFoundError, or the OSError of the read.
    """
    limit = _limit(kind)
    if _is_local(uri):
        return _read_local(_local_path(uri), limit, kind, root)
    return _read_remote(uri, limit, kind)


def read_config(run_dir: str) -> tuple[dict | None, str | None]:
    """(the run's config.yaml as a mapping or None, why it could not be read or None); read through the checked
    reader (a regular file of bounded size) and parsed as plain YAML data only: nothing it names is imported."""
    import yaml

    uri = run_dir.rstrip("/") + "/config.yaml"
    try:
        data = read_run_file(uri, "config", root=None if "://" in run_dir else run_dir)
    except FileNotFoundError:
        return None, None
    except (RunFileError, OSError) as exc:
        return None, f"{uri} not read: {exc}"
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        return None, f"{uri} is not valid YAML ({type(exc).__name__}): its settings are not read"
    if not isinstance(raw, dict):
        return None, f"{uri} is not a YAML mapping: its settings are not read"
    return raw, None
