"""The run directory: a local path or a URI (s3://, gs://, file://), read and written through pyarrow's file
systems so that every node of a cluster reaches the same files.

    RUN_DIR/config.yaml              the resolved sweep config (what `resume` reloads)
    RUN_DIR/run.json                 run id and creation time (kept across resumes)
    RUN_DIR/tables/{models,pairs,curves,history}/<key>.parquet   the results (analysis/tables.py)
    RUN_DIR/models/<model key>.pt    trained weights: pair jobs on any node load them from here
    RUN_DIR/checkpoints/<key>.pt     periodic training checkpoints (deleted when the model is done)
    RUN_DIR/tune/                    Ray Tune's own experiment state (written, never read: see below)
    RUN_DIR/analysis/                what `landscape analyze` writes (phase_rules.json is read back by resume)
    RUN_DIR/quarantine/...           parts and files that a repair moved aside instead of deleting
    RUN_DIR/.lock                    held by the process running the sweep (an flock locally, a lease on URIs)
    RUN_DIR/.lock-holder.json        locally: the holder's pid and start (orchestrator/rundir/runlock.py)
    RUN_DIR/.local-ray.json          written by older versions; deleted unread (the local Ray a run starts is
                                     recorded outside the run dir: orchestrator/cluster/ray_leftovers.py)

The rule: every file read from a run directory is loaded without executing code. Run directories are shared
(buckets, group folders), so anyone who can write one must not be able to run code in the process that
reads it. Each reader, and why it cannot execute anything:
    config.yaml          yaml.SafeLoader (orchestrator/config/loading.py parse_yaml): plain YAML types only, no tags
    run.json, .lock, .lock-holder.json, analysis/phase_rules.json, provenance.json    json.loads
    tables/*.parquet     pyarrow (analysis/tables.py): columns cast to our schema; no pandas metadata and no
                         Python extension types are used (pyarrow >= 14.0.1 never unpickles them)
    models/*.pt, checkpoints/*.pt    torch.load(..., weights_only=True): tensors, containers and primitives
                         only; the pickle's globals are refused before anything is called
    the reference importer's pickles and .npz    analysis/safe_pickle.py (numpy reconstruction only) and
                         numpy.load(allow_pickle=False)
    tune/                never read: the tables are the record of what is done, and no Tuner is restored
    Tune's per-trial error file   read as text (orchestrator/driver/sweep.py trial_error_text)
Anyone adding a file to the run directory (e.g. vectorised "cohort" training's checkpoints) keeps to it:
tensors through torch.load(weights_only=True), everything else through JSON, YAML's SafeLoader or Parquet.
Never pickle, never torch.load with weights_only=False, never numpy.load with allow_pickle=True.

Weights are checked against the sha256 their models row records (``weights_sha256``) whenever they are
loaded, and whenever a plan is made (`run`, `resume`, `status` unless --quick: weights_problems), so a flipped
bit in finished weights is retrained with the pairs that used them; rows written before that column existed
have no hash, and their weights are accepted as they are.
"""

from __future__ import annotations

import errno
import hashlib
import contextlib
import io
import json
import os
import re
import uuid
from datetime import datetime, timezone

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.run_files import read_run_file
from analysis.tables import RunTables, join, resolve, row_key
from workloads.atomic import is_temporary_name, write_bytes_atomically


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message says why and what to do."""


class UnreadableFile(RunDirError):
    """A file of the run directory was read in full but its content is broken (truncated, not a torch file,
    not the bytes its row's content hash names)."""


class StorageFullError(RunDirError):
    """The run directory cannot be written (full, read-only, over quota, no permission): the sweep stops, since
    every job would fail the same way; what is written stays, and `landscape resume` continues."""


# Write errors that no retry fixes: the sweep stops at once instead of failing every job in turn.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}


def storage_problem(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` (or what caused it) is a write error of STORAGE_ERRNOS, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StorageFullError):
            return str(exc)
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            where = f" ({exc.filename})" if exc.filename else ""
            return f"{exc.strerror or os.strerror(exc.errno)}{where}"
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def writing(uri: str):
    """Around a write into the run directory: a write error no retry fixes (full, read-only, no permission:
    STORAGE_ERRNOS) becomes StorageFullError naming ``uri``, which stops the sweep."""
    try:
        yield
    except OSError as exc:
        if storage_problem(exc) is None:
            raise
        raise StorageFullError(f"cannot write {uri}: {exc.strerror or os.strerror(exc.errno)}") from None


def is_uri(path: str) -> bool:
    return "://" in str(path)


def normalise_run_dir(path: str) -> str:
    """Absolute local path, or the URI without a trailing slash (Tune needs an absolute path or a URI);
    RunDirError when it is not a usable run directory name (see check_run_dir_name)."""
    check_run_dir_name(str(path))
    if is_uri(path):
        return str(path).rstrip("/")
    return os.path.abspath(os.path.expanduser(str(path)))


_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")
# Characters of a URI's bucket and path segments. Object stores take almost any key, but what a run writes is
# joined, listed and handed to Tune and pyarrow as text: a "?" or "#" starts a query or fragment, a "\" or a
# space is read differently by different clients.
_URI_SEGMENT = re.compile(r"^[A-Za-z0-9._~+=@,%:-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_run_dir_name(path: str) -> None:
    """RunDirError, before any work, for a run directory whose name cannot mean one place: a URI with an empty,
    "." or ".." path segment (object stores keep them literally: `s3://b/a/../run` is not `s3://b/run`, and
    Tune's own storage rejects it only after the sweep), or a character outside letters, digits and
    ``._~+=@,%:-``; a local path with a control character (it would break every one-line message naming it)."""
    text = str(path)
    if _CONTROL.search(text):
        raise RunDirError(f"run directory {text!r} holds a control character; choose a name without one")
    match = _URI.match(text)
    if not match:
        return
    scheme, rest = match.groups()
    segments = rest.rstrip("/").split("/")
    if scheme == "file" and segments[:1] == [""]:
        segments = segments[1:]  # file:///abs/path: no host
    fix = f"write it as {scheme}://BUCKET/PATH with plain names between the slashes"
    for segment in segments:
        if segment in ("", ".", ".."):
            what = "an empty" if not segment else f"a {segment!r}"
            raise RunDirError(f"run directory {text}: {what} path segment (object stores do not resolve them: "
                              f"it would name another place than it seems); {fix}")
        if not _URI_SEGMENT.match(segment):
            odd = next(c for c in segment if not _URI_SEGMENT.match(c))
            raise RunDirError(f"run directory {text}: the character {odd!r} is not allowed in a run directory URI; "
                              f"{fix} (letters, digits and ._~+=@,%:-)")


def config_uri(run_dir: str) -> str:
    return join(run_dir, "config.yaml")


def model_uri(run_dir: str, key: str) -> str:
    return join(run_dir, "models", f"{key}.pt")


def checkpoint_uri(run_dir: str, key: str) -> str:
    return join(run_dir, "checkpoints", f"{key}.pt")


# ---------------------------------------------------------------------------------------------------------
# Bytes


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically (temp file + rename locally; one PUT on object stores)."""
    fs, path = resolve(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        write_bytes_atomically(path, data)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


# Files read by their name's kind through analysis/run_files.py: a regular file within its size limit, never a
# link or a device (a shared run directory's config.yaml -> /dev/zero would otherwise fill the memory).
_CHECKED_KINDS = {".yaml": "config", ".yml": "config", ".json": "json"}


def read_bytes(uri: str) -> bytes:
    kind = _CHECKED_KINDS.get(os.path.splitext(uri)[1])
    if kind is not None:
        return read_run_file(uri, kind)  # RunFileError is an OSError: callers' handling of unreadable files holds
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def delete(uri: str, *, best_effort: bool = True) -> None:
    """Delete one file; a file already gone is fine. ``best_effort``: any other failure is ignored too (a cleanup
    that may fail); else it raises (a repair whose file left behind would count as done)."""
    fs, path = resolve(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError:
        if not best_effort:
            raise


def list_entries(dir_uri: str) -> list[str]:
    """Base names of everything in a folder (files and folders); empty if it does not exist."""
    fs, path = resolve(dir_uri)
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))


def move_aside(run_dir: str, uri: str) -> str:
    """Move the file ``uri`` of ``run_dir`` to RUN_DIR/quarantine/<its path in the run dir> (a numbered name if
    one is there already) and return where it went. Repairs use it for whatever is not ours to delete: a
    part that does not belong under its name, a file that cannot be read."""
    fs, path = resolve(uri)
    _, root = resolve(run_dir)
    relative = path[len(root.rstrip("/")) + 1:] if path.startswith(root.rstrip("/") + "/") else path.rsplit("/", 1)[1]
    target = f"{root.rstrip('/')}/quarantine/{relative}"
    stem, n = target, 1
    while fs.get_file_info(target).type != pafs.FileType.NotFound:
        n += 1
        target = f"{stem}.{n}"
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    fs.move(path, target)
    return join(run_dir, "quarantine", target[len(root.rstrip("/")) + len("/quarantine/"):])


def sweep_temporary_files(run_dir: str) -> list[str]:
    """Remove the temporary files that writers killed mid-write left in a LOCAL run dir (URIs have none: an
    object appears whole); returns their paths. Call it holding the run directory's lock (no writer runs)."""
    if is_uri(run_dir):
        return []
    removed = []
    for sub in ("", "tables/models", "tables/pairs", "tables/curves", "tables/history", "tables/curve_history", "models", "checkpoints"):
        folder = os.path.join(run_dir, sub)
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if is_temporary_name(name):
                try:
                    os.remove(os.path.join(folder, name))
                    removed.append(os.path.join(folder, name))
                except OSError:
                    pass
    return removed


def list_names(dir_uri: str, suffix: str) -> set[str]:
    """Base names (without ``suffix``) of the files in a folder; empty if it does not exist."""
    fs, path = resolve(dir_uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return {
        i.base_name[: -len(suffix)]
        for i in infos
        if i.type == pafs.FileType.File and i.base_name.endswith(suffix) and not i.base_name.startswith(".")
    }


# ---------------------------------------------------------------------------------------------------------
# Model weights (torch imported lazily: the driver need not load it for this)


def save_state(uri: str, state: dict) -> str:
    """Write a state dict (tensors and plain values) to ``uri``; returns the sha256 of the bytes written."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    write_bytes(uri, data)
    return hashlib.sha256(data).hexdigest()


def load_state(uri: str, sha256: str | None = None) -> dict:
    """The state dict at ``uri``, loaded without executing anything (weights_only); RunDirError naming the file
    when it is missing, UnreadableFile when it is unreadable or its bytes are not those of ``sha256`` (the
    hash its models row records; None for rows written before hashes: not checked)."""
    import torch

    try:
        data = read_bytes(uri)
    except (FileNotFoundError, OSError) as exc:
        raise RunDirError(f"model file {uri} is missing ({exc}); `landscape resume` retrains that model") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise UnreadableFile(f"model file {uri} is damaged (its content hash differs from the one in its models "
                             f"row); `landscape resume` retrains it")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated / not a torch file / refused globals: every loader error means the same
        raise UnreadableFile(f"model file {uri} is unreadable ({type(exc).__name__}); `landscape resume` retrains it") from None


# torch.save writes a zip archive, whose last 22 bytes are the end-of-central-directory record (torch writes
# no archive comment). A file cut short (a full disk, a copy interrupted) lacks it.
_ZIP_END = b"PK\x05\x06"


def looks_complete(uri: str) -> bool:
    """False when a LOCAL weights file is visibly truncated (no zip end record); URIs are not checked (a
    ranged read per model on every plan would be slow): a pair job that finds one unreadable deletes it."""
    if is_uri(uri):
        return True
    try:
        with open(uri, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 22:
                return False
            f.seek(-22, os.SEEK_END)
            return f.read(4) == _ZIP_END
    except OSError:
        return False


WEIGHTS_DAMAGED = "damaged (its sha256 differs from the one its models row records)"
HASH_THREADS = 4  # hashlib releases the GIL: reading and hashing files overlap


def weights_problems(run_dir: str, expected: dict, *, verify_hashes: bool = True) -> dict:
    """model key -> "truncated" | WEIGHTS_DAMAGED for the weights files of ``expected`` (model key -> the sha256
    its models row records, or None for rows written before hashes) that are present but not the file that
    was written; keys whose file is fine are left out. ``verify_hashes`` False (`status --quick`) only looks
    for a visibly truncated local file: a flipped bit inside a tensor is then found only when a job loads it."""
    from concurrent.futures import ThreadPoolExecutor

    def problem(item):
        key, sha256 = item
        uri = model_uri(run_dir, key)
        if not looks_complete(uri):
            return key, "truncated"
        if verify_hashes and isinstance(sha256, str) and sha256 and file_sha256(uri) not in (sha256, None):
            return key, WEIGHTS_DAMAGED
        return key, None

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        return {key: why for key, why in pool.map(problem, expected.items()) if why}


def file_sha256(uri: str) -> str | None:
    """The sha256 of a file's bytes, read in chunks; None when it cannot be read now (not a verdict on it)."""
    digest = hashlib.sha256()
    try:
        fs, path = resolve(uri)
        with fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (FileNotFoundError, OSError):
        return None
    return digest.hexdigest()


def load_checkpoint(uri: str) -> tuple[dict | None, str | None]:
    """(a training checkpoint, None), or (None, None) when there is none, or (None, a note naming the file) when
    it cannot be used: it is then deleted, and the training starts from epoch 0.

    Loaded with ``weights_only=True``: a crafted checkpoint cannot run code in the worker (its globals are
    refused before anything is called); like a truncated one, it is deleted and reported.
    """
    import torch

    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        return None, None
    except OSError as exc:  # not readable now (a flaky store): keep it, the next attempt may read it
        return None, f"checkpoint {uri} could not be read ({exc.strerror or exc}); trained from epoch 0"
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not a checkpoint")
    except Exception as exc:  # truncated, not a torch file, or refused (it asked to call code)
        delete(uri)
        return None, f"checkpoint {uri} could not be loaded safely ({why_refused(exc)}); deleted it, trained from epoch 0"
    return state, None


def why_refused(exc: Exception) -> str:
    """What torch.load(weights_only=True) objected to, in a few words (its own message is a page long)."""
    text = " ".join(str(exc).split())
    asked = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) (\S+)", text)
    if asked:
        return f"it asks to call {asked.group(1)}, which no checkpoint does; nothing was run"
    if "Weights only load failed" in text:
        return "it holds objects a checkpoint never holds; nothing was run"
    return f"{type(exc).__name__}: {text[:80]} (cut short, or not a torch file)"


# ---------------------------------------------------------------------------------------------------------
# Single parts (the idempotence check of a job reads only its own part)


def read_part_row(tables: RunTables, table: str, key: str) -> dict | None:
    """The row of part ``key`` as a dict, or None when the part is missing, unreadable, or not that key's
    (one row whose key columns name ``key``): a foreign part never makes a job skip its key."""
    fs, path = resolve(tables.part_uri(table, key))
    try:
        part = pq.read_table(path, filesystem=fs)
    except Exception:  # missing, truncated, not Parquet: the job recomputes the key either way
        return None
    rows = part.to_pylist() if part.num_rows == 1 else []
    return rows[0] if rows and row_key(table, rows[0]) == key else None


# ---------------------------------------------------------------------------------------------------------
# Run metadata


def read_run_info(run_dir: str) -> dict | None:
    """run.json as a dict with a string run_id; None when absent or damaged (not JSON, not such a dict)."""
    try:
        info = json.loads(read_bytes(join(run_dir, "run.json")).decode())
    except (FileNotFoundError, OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("run_id"), str) else None


def ensure_run_info(run_dir: str, name: str) -> tuple[dict, str | None]:
    """(run.json of the run dir, a note on what was repaired or None); created on first use.

    The run id stays the same across resumes: every table row carries it. A damaged run.json is rewritten
    with the run id the tables hold (when they hold exactly one), so rows old and new still agree.
    """
    info = read_run_info(run_dir)
    if info is not None:
        return info, None
    damaged = exists(join(run_dir, "run.json"))
    stamp = datetime.now(timezone.utc)
    info = {"run_id": f"{name}-{stamp:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}", "created_at": stamp.isoformat()}
    note = None
    if damaged:
        tables = RunTables(run_dir)
        ids = set()
        for table in ("models", "pairs"):
            ids |= set(tables.read(table, on_corrupt="skip")["run_id"].dropna())
        if len(ids) == 1:
            info = {"run_id": ids.pop(), "created_at": stamp.isoformat()}
            note = f"run.json was damaged: rewritten with the run id of the tables ({info['run_id']})"
        else:
            note = (f"run.json was damaged and the tables hold {len(ids)} run ids: new run id {info['run_id']} "
                    f"for the rows written from now on")
    write_bytes(join(run_dir, "run.json"), json.dumps(info, indent=2).encode())
    return info, note
