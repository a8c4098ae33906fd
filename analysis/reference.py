"""Import the original study's released metrics archive into our run tables.
(Over ~400 lines: one archive format, its validation and its notes belong together.)

The archive (nsfzyzz/loss_landscape_taxonomy, ``workspace/checkpoint/results.tar.gz``; its format is described
in ``shared/reference/taxonomy-released/README.md``) holds, per cell of ResNet18 width k x batch size B::

    <root>/bs_{B}/<schedule>/ResNet18_w{k}/metrics/
        loss_acc.pkl             {run: {'nll', 'loss', 'accuracy' (percent)}}   training set
        loss_acc_test.pkl        same, test set (absent for some B)
        hessian.pkl              {run: {'top_eigenvalue': [lambda], 'trace': float}}
        CKA_mixup_alpha_16.0.pkl {'representation_similarity': {i: {j: [cka_logits, cka_softmax]}}}
        model_dist.pkl           {'model_distance': {i: {j: {'dist': float}}}}
        curve_test.npz           Bezier curve between runs 0 and 1: ts, tr_err (percent), tr_nll, te_err, te_nll

It becomes a run directory that ``analyze_run`` reads unchanged: ``load_name`` "width" (value k),
``temperature_name`` "batch_size" (value B), one models row per run id (its seed), one pairs row per unordered
pair of run ids, one curves part for the connected pair (0, 1).

Mapping choices (each keeps the cell means equal to the numbers behind the authors' figure):
- CKA of a pair is the mean of the two ordered entries [i][j] and [j][i] (softmax outputs). The authors'
  figure averages the 20 ordered pairs i != j; averaging each unordered pair's two orders first and then the 10
  pairs gives the same number.
- mode connectivity exists only for pair (0, 1); the other pairs have it null (they were never connected).
- the curves table stores the cross-entropy (``tr_nll``/``te_nll``), not ``tr_loss``, which includes the
  weight-decay term.
- missing test files leave the test columns null and say so in the row's ``error`` note; ``status`` stays
  "ok" because the model itself trained.

The archive is read without extracting it to disk (``tarfile`` members into memory) and every pickle goes
through :func:`analysis.safe_pickle.load_numpy_pickle`; the ``.npz`` through :func:`analysis.safe_npz.load_npz`
(no pickles, each array's size checked before it is read).

An archive comes from elsewhere: what it unpacks to is capped before it is unpacked. The decompressed stream
(MAX_UNPACKED_BYTES), each metrics file (MAX_MEMBER_BYTES) and all of them together (MAX_FILES_BYTES), the number
of members, of cells, of runs per cell and of curve points, and each array of an ``.npz`` (MAX_ARRAY_BYTES): the
released archive (2.5 MB unpacked, 630 cells of 5 runs, 5 curve points) is far below each, and anything beyond one
is refused with one ReferenceFormatError line, in seconds, before its memory is taken.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import itertools
import lzma
import json
import math
import os
import re
import tarfile
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.run_files import RunFileError, read_run_file
from analysis.safe_npz import NpzError, load_npz
from analysis.safe_pickle import load_numpy_pickle
from analysis.schemas import TABLE_NAMES, landscape_version, library_versions_json
from analysis.tables import RunTables, format_value, join, pair_key, resolve

RUN_ID = "taxonomy-released"
LOAD_NAME = "width"
TEMPERATURE_NAME = "batch_size"
# Where the archive comes from, written into the run's provenance.json.
SOURCE_DESCRIPTION = (
    "Released metrics of Yang et al. (NeurIPS 2021), nsfzyzz/loss_landscape_taxonomy commit c1ec1fd, "
    "workspace/checkpoint/results.tar.gz (MIT licence): ResNet18 of width k on CIFAR-10, 5 runs per cell."
)
# The authors' Hessian was taken on one batch of 200 training points (method.md section 3).
AUTHORS_HESSIAN_SAMPLES = 200
# Caps on what an archive unpacks to (module doc). The released archive: 1,442 members, 2.5 MB in all, the
# largest file 9 kB, 630 cells of 5 runs, curves of 5 points.
MAX_MEMBER_BYTES = 16 * 2**20
MAX_FILES_BYTES = 64 * 2**20
MAX_UNPACKED_BYTES = 128 * 2**20
MAX_MEMBERS = 100_000
MAX_CELLS = 5_000
MAX_RUNS_PER_CELL = 100
MAX_ARRAY_BYTES = 8 * 2**20
MAX_CURVE_POINTS = 1_000
MAX_TOTAL_CURVE_POINTS = 1_000_000

_METRICS_PATH = re.compile(r"(?:^|/)bs_(?P<bs>\d+)/(?P<schedule>[^/]+)/ResNet18_w(?P<k>\d+)/metrics/(?P<file>[^/]+)$")
_CKA_FILE = "CKA_mixup_alpha_16.0.pkl"


class ReferenceFormatError(ValueError):
    """The archive does not have the layout or contents of the released results; the message says where."""


class ReferenceOutError(ValueError):
    """The output directory holds something other than an earlier import; nothing was written."""


@dataclass
class ReferenceImportSummary:
    """What ``import_reference`` wrote."""

    out: str
    source: str
    source_sha256: str
    schedule: str
    cells: int
    models: int
    pairs: int
    curve_points: int
    widths: list[int]
    batch_sizes: list[int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Reading the archive: a tar(.gz) file or an extracted folder, as {relative path: bytes}


def read_archive_files(archive: str) -> tuple[dict[str, bytes], str]:
    """(metrics files keyed by path inside the archive, sha256 of their contents) for a tar file or a folder.

    Only paths matching ``bs_{B}/<schedule>/ResNet18_w{k}/metrics/<file>`` are read; tar members are read into
    memory (regular files only: links and devices are ignored), never extracted. Everything is capped as the
    module doc says, before it is read.
    """
    if not os.path.exists(archive):
        raise FileNotFoundError(
            f"reference archive {archive!r} not found; pass the released results.tar.gz or the folder it extracts to"
        )
    files = _FileBudget(archive)
    if os.path.isdir(archive):
        for dirpath, _dirs, names in os.walk(archive):
            for name in names:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, archive).replace(os.sep, "/")
                if _METRICS_PATH.search(rel) and os.path.isfile(full) and not os.path.islink(full):
                    files.add(rel, _read_file(full, archive))
    else:
        try:
            with open(archive, "rb") as raw, _unpacked(raw, archive) as stream:
                # Stream mode ("r|"): members are read in order from the capped stream, nothing is seeked.
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for count, member in enumerate(tar, 1):
                        if count > MAX_MEMBERS:
                            raise ReferenceFormatError(f"{archive} holds more than {MAX_MEMBERS} members: not the "
                                                       f"released results (1,442 members)")
                        if member.isfile() and _METRICS_PATH.search(member.name):
                            files.check_size(member.name, member.size)
                            files.add(member.name, _read_capped(tar.extractfile(member), member.name))
        except tarfile.TarError as exc:
            raise ReferenceFormatError(f"{archive} is neither a folder nor a readable tar archive: {exc}") from exc
        except (EOFError, zlib.error, lzma.LZMAError, OSError) as exc:  # cut short (EOFError) or damaged data
            raise ReferenceFormatError(f"{archive} is truncated or damaged ({type(exc).__name__}: {exc}); "
                                       f"download the released results.tar.gz again") from exc
    if not files.files:
        raise ReferenceFormatError(
            f"{archive} holds no files like bs_<B>/<schedule>/ResNet18_w<k>/metrics/<file>; is it the released "
            "results archive (see shared/reference/taxonomy-released/README.md)?"
        )
    digest = hashlib.sha256()
    for name in sorted(files.files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files.files[name]).digest())
    return files.files, digest.hexdigest()


class _FileBudget:
    """The metrics files read so far, within MAX_MEMBER_BYTES each and MAX_FILES_BYTES together."""

    def __init__(self, archive: str):
        self.archive, self.files, self.total = archive, {}, 0

    def check_size(self, name: str, size: int) -> None:
        if size > MAX_MEMBER_BYTES:
            raise ReferenceFormatError(f"{self.archive}: member {name} is {size} bytes, more than the "
                                       f"{MAX_MEMBER_BYTES} a metrics file may have: not the released results")
        if self.total + size > MAX_FILES_BYTES:
            raise ReferenceFormatError(f"{self.archive}: its metrics files hold more than {MAX_FILES_BYTES} bytes "
                                       f"together (the released ones: 2.5 MB): not the released results")

    def add(self, name: str, data: bytes) -> None:
        self.check_size(name, len(data))
        self.files[name] = data
        self.total += len(data)


def _unpacked(raw, archive: str) -> "_CappedStream":
    """The decompressed bytes of the archive file ``raw`` (gzip, bzip2, xz or none, by its first bytes), capped at
    MAX_UNPACKED_BYTES: a few kB that unpack to gigabytes are refused after MAX_UNPACKED_BYTES, in seconds."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    elif head.startswith(b"BZh"):
        stream = bz2.BZ2File(raw, mode="rb")
    elif head.startswith(b"\xfd7zXZ\x00"):
        stream = lzma.LZMAFile(raw, mode="rb")
    else:
        stream = raw
    return _CappedStream(stream, archive)


class _CappedStream:
    """A read-only stream that raises ReferenceFormatError once more than MAX_UNPACKED_BYTES have been read."""

    def __init__(self, stream, archive: str):
        self.stream, self.archive, self.read_so_far = stream, archive, 0

    def read(self, size: int = -1) -> bytes:
        want = MAX_UNPACKED_BYTES + 1 - self.read_so_far if size is None or size < 0 else size
        data = self.stream.read(min(want, MAX_UNPACKED_BYTES + 1 - self.read_so_far))
        self.read_so_far += len(data)
        if self.read_so_far > MAX_UNPACKED_BYTES:
            raise ReferenceFormatError(f"{self.archive} unpacks to more than {MAX_UNPACKED_BYTES} bytes (the "
                                       f"released results: 3 MB): not the released results, not unpacked further")
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


def _read_file(path: str, folder: str) -> bytes:
    """A metrics file of an extracted folder: a regular file within MAX_MEMBER_BYTES (analysis/run_files.py)."""
    try:
        return read_run_file(path, "reference", root=folder)
    except RunFileError as exc:
        raise ReferenceFormatError(str(exc)) from None


def _read_capped(fh, name: str) -> bytes:
    with fh:
        data = fh.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise ReferenceFormatError(f"archive file {name} is larger than {MAX_MEMBER_BYTES} bytes: not a metrics file")
    return data


def group_cells(
    files: dict[str, bytes], schedule: str | None
) -> tuple[str, dict[tuple[int, int], dict[str, tuple[str, bytes]]]]:
    """(schedule used, {(width, batch size): {file name: (path, bytes)}})."""
    by_schedule: dict[str, dict[tuple[int, int], dict[str, tuple[str, bytes]]]] = {}
    for path, data in files.items():
        m = _METRICS_PATH.search(path)
        cell = (int(m["k"]), int(m["bs"]))
        by_schedule.setdefault(m["schedule"], {}).setdefault(cell, {})[m["file"]] = (path, data)
    if schedule is None:
        if len(by_schedule) > 1:
            raise ReferenceFormatError(
                f"the archive holds several schedules {sorted(by_schedule)}; choose one with schedule=..."
            )
        schedule = next(iter(by_schedule))
    if schedule not in by_schedule:
        raise ReferenceFormatError(f"schedule {schedule!r} not in the archive; it holds {sorted(by_schedule)}")
    if len(by_schedule[schedule]) > MAX_CELLS:
        raise ReferenceFormatError(f"the archive holds {len(by_schedule[schedule])} cells, more than the {MAX_CELLS} "
                                   f"a released archive may have (the released results: 630)")
    return schedule, by_schedule[schedule]


# ---------------------------------------------------------------------------------------------
# Parsing one cell's files into table rows


def _lookup(obj, keys: tuple, source: str):
    """obj[k0][k1]...; a missing key is a ReferenceFormatError naming the file and the path of keys."""
    cur = obj
    for i, k in enumerate(keys):
        try:
            cur = cur[k]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{x!r}]" for x in keys[: i + 1])
            raise ReferenceFormatError(f"{source}: expected an entry {where}, not found") from None
    return cur


def _float(x) -> float | None:
    if x is None:
        return None
    v = float(np.asarray(x).reshape(-1)[0]) if np.ndim(x) else float(x)
    return v if math.isfinite(v) else None


def _fraction(percent) -> float | None:
    v = _float(percent)
    return None if v is None else v / 100.0


def mode_connectivity_released(ts: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """(mc, t*) as in the released README: mc = ē − e[u], u = argmax_i |e_i − ē| over all grid points.

    ts, errors: (p,) with ts[0] = 0 and ts[-1] = 1, errors in percent; ties go to the first grid point.
    """
    e = np.asarray(errors, dtype=np.float64)
    mean_end = 0.5 * (e[0] + e[-1])
    u = int(np.argmax(np.abs(e - mean_end)))
    return float(mean_end - e[u]), float(np.asarray(ts, dtype=np.float64)[u])


def cell_rows(
    k: int, bs: int, files: dict[str, tuple[str, bytes]], common: dict
) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """(models rows, pairs rows, curves rows, notes) of one cell; ``common`` holds the provenance columns."""
    cell = {
        "load_name": LOAD_NAME,
        "load_value": float(k),
        "temperature_name": TEMPERATURE_NAME,
        "temperature_value": float(bs),
    }
    notes: list[str] = []

    def load(name: str):
        if name not in files:
            return None
        path, data = files[name]
        if name.endswith(".npz"):
            try:  # each array's size checked before it is read; object arrays refused
                return load_npz(data, path, MAX_ARRAY_BYTES), path
            except NpzError as exc:
                raise ReferenceFormatError(str(exc)) from None
        # A refused or truncated pickle raises UnsafePickleError / pickle.UnpicklingError naming the file
        # (`landscape import-reference` prints it as one error line).
        return load_numpy_pickle(data, source=path), path

    train = load("loss_acc.pkl")
    if train is None:
        raise ReferenceFormatError(
            f"cell width={k} batch_size={bs}: loss_acc.pkl missing; cannot tell which runs exist"
        )
    train, train_src = train
    if not isinstance(train, dict) or len(train) > MAX_RUNS_PER_CELL:
        raise ReferenceFormatError(f"{train_src}: expected a dict of at most {MAX_RUNS_PER_CELL} runs "
                                   f"(the released cells have 5), got {type(train).__name__} of {len(train)}")
    runs = sorted(int(r) for r in train)
    test = load("loss_acc_test.pkl")
    hess = load("hessian.pkl")
    test_note = None if test is not None else "test metrics not released (loss_acc_test.pkl missing in the archive)"
    if test_note:
        notes.append(f"width={k} batch_size={bs}: {test_note}")
    if hess is None:
        notes.append(f"width={k} batch_size={bs}: hessian.pkl missing: Hessian columns null")

    models = []
    for r in runs:
        row = {**common, **cell, "seed": r, "status": "ok", "error": test_note}
        row["train_loss"] = _float(_lookup(train, (r, "loss"), train_src))
        row["train_acc"] = _fraction(_lookup(train, (r, "accuracy"), train_src))
        if test is not None:
            row["test_loss"] = _float(_lookup(test[0], (r, "loss"), test[1]))
            row["test_acc"] = _fraction(_lookup(test[0], (r, "accuracy"), test[1]))
        if hess is not None:
            row["hessian_top_eigenvalue"] = _float(_lookup(hess[0], (r, "top_eigenvalue", 0), hess[1]))
            row["hessian_trace"] = _float(_lookup(hess[0], (r, "trace"), hess[1]))
            row["hessian_backend"] = "pyhessian (authors' release)"
            row["hessian_samples"] = AUTHORS_HESSIAN_SAMPLES
        models.append(row)

    cka = load(_CKA_FILE)
    dist = load("model_dist.pkl")
    curve = load("curve_test.npz")
    mc_pair = None
    curves: list[dict] = []
    if curve is not None:
        z, src = curve
        for key in ("ts", "tr_err"):
            if key not in z:
                raise ReferenceFormatError(f"{src}: no array {key!r}; it has {sorted(z)}")
        ts = np.asarray(z["ts"], dtype=np.float64).reshape(-1)
        if not 2 <= len(ts) <= MAX_CURVE_POINTS:
            raise ReferenceFormatError(f"{src}: {len(ts)} curve points; a curve has 2 to {MAX_CURVE_POINTS} "
                                       f"(the released ones: 5)")
        mc, t_star = mode_connectivity_released(ts, z["tr_err"])
        mc_pair = (0, 1, mc, t_star, len(ts))

        def arr(key):
            if key not in z:
                return np.full(len(ts), np.nan)
            values = np.asarray(z[key], dtype=np.float64).reshape(-1)
            if len(values) != len(ts):
                raise ReferenceFormatError(f"{src}: array {key!r} has {len(values)} values for {len(ts)} curve points")
            return values

        tr_err, tr_nll, te_err, te_nll = arr("tr_err"), arr("tr_nll"), arr("te_err"), arr("te_nll")
        for i, t in enumerate(ts):
            curves.append(
                {
                    **common,
                    **cell,
                    "seed_a": 0,
                    "seed_b": 1,
                    "t": float(t),
                    "train_error": _float(tr_err[i]),
                    "train_loss": _float(tr_nll[i]),
                    "test_error": _float(te_err[i]),
                    "test_loss": _float(te_nll[i]),
                }
            )
    else:
        notes.append(f"width={k} batch_size={bs}: curve_test.npz missing: no mode connectivity")

    pairs = []
    for a, b in itertools.combinations(runs, 2):
        row = {**common, **cell, "seed_a": a, "seed_b": b, "status": "ok", "error": None}
        if cka is not None:
            sim = _lookup(cka[0], ("representation_similarity",), cka[1])
            orders = [_float(_lookup(sim, (i, j, 1), cka[1])) for i, j in ((a, b), (b, a))]
            orders = [v for v in orders if v is not None]
            row["cka"] = float(np.mean(orders)) if orders else None
            row["cka_status"] = "ok" if orders else "released value is NaN (undefined CKA, e.g. a constant output)"
        else:
            row["cka_status"] = f"{_CKA_FILE} missing in the archive"
        if dist is not None:
            md = _lookup(dist[0], ("model_distance",), dist[1])
            row["l2_distance"] = _float(_lookup(md, (a, b, "dist"), dist[1]))
        if mc_pair is not None and (a, b) == mc_pair[:2]:
            row["mode_connectivity"], row["t_star"], row["curve_points"] = mc_pair[2], mc_pair[3], mc_pair[4]
            row["curve_epochs"], row["curve_lr"] = 50, 0.01  # authors' curve settings (method.md section 4)
        pairs.append(row)
    return models, pairs, curves, notes


# ---------------------------------------------------------------------------------------------
# Entry point


def reference_cell_key(k: int, bs: int) -> str:
    """Part key of one imported cell, e.g. ``width=16__batch_size=128__released``."""
    return f"{LOAD_NAME}={format_value(k)}__{TEMPERATURE_NAME}={format_value(bs)}__released"


# What an import (and `landscape analyze` of it) leaves in its directory; anything else belongs to something else.
_IMPORT_ENTRIES = {"provenance.json", "tables", "analysis"}


def check_out_dir(out: str) -> None:
    """Raise ReferenceOutError unless ``out`` is missing, empty, or holds only an earlier import of the reference.

    The import writes parts under keys a live run also uses (curves/<pair key>.parquet): importing into a run
    directory would replace that run's parts and mix two datasets. An earlier import (even an interrupted one:
    its parts carry run_id RUN_ID) may be replaced, so a re-import works.
    """
    fs, path = resolve(out)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type != pafs.FileType.Directory:
        _refuse(out, "is a file, not a directory")
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(path))}
    if names - _IMPORT_ENTRIES:
        # config.yaml, run.json, models/ ...: a landscape run, or files that are not ours
        _refuse(out, f"holds {', '.join(sorted(names - _IMPORT_ENTRIES)[:3])}, which no reference import writes")
    if "provenance.json" in names:
        try:  # a regular file within its size limit only (analysis/run_files.py): a link is not followed
            run_id = json.loads(read_run_file(join(out, "provenance.json"), "json", root=out).decode()).get("run_id")
        except (OSError, ValueError, AttributeError):
            run_id = None
        if run_id != RUN_ID:
            _refuse(out, "holds a provenance.json that is not a reference import's")
    tables = RunTables(out)
    for table in TABLE_NAMES:
        for key in tables.part_keys(table):
            try:
                data = read_run_file(tables.part_uri(table, key), "table", root=out)
                ids = set(pq.ParquetFile(pa.BufferReader(data)).read(columns=["run_id"]).column("run_id").to_pylist())
            except (OSError, KeyError, pa.ArrowException):  # cannot tell whose it is: not ours to replace
                _refuse(out, f"holds table part {table}/{key}.parquet, which cannot be read")
            if ids != {RUN_ID}:
                _refuse(out, f"holds table part {table}/{key}.parquet of run {sorted(map(str, ids))[0]!r}")


def _refuse(out: str, why: str) -> None:
    raise ReferenceOutError(
        f"output directory {out} {why}: importing there would overwrite or mix with it; "
        f"use an empty or new directory for --out"
    )


def import_reference(archive: str, out: str, *, schedule: str | None = None) -> ReferenceImportSummary:
    """Convert the released archive (tar file or extracted folder) into the tables of run directory ``out``.

    Writes ``out/tables/{models,pairs,curves}/*.parquet`` (one models part and one pairs part per cell, one
    curves part per connected pair) and ``out/provenance.json`` describing the source. ``out`` must be missing,
    empty or an earlier import (which re-importing replaces): anything else is refused before a byte is written
    (ReferenceOutError).
    """
    check_out_dir(out)  # before anything is written: never mix the reference into another run's tables
    files, sha = read_archive_files(archive)
    schedule, cells = group_cells(files, schedule)
    common = {
        "run_id": RUN_ID,
        "config_hash": sha[:16],
        "package_version": landscape_version(),
        "library_versions": library_versions_json({"numpy": np.__version__, "source": "released archive"}),
    }
    tables = RunTables(out)
    n_models = n_pairs = n_points = 0
    notes: list[str] = []
    for k, bs in sorted(cells):
        models, pairs, curves, cell_notes = cell_rows(k, bs, cells[(k, bs)], common)
        notes += cell_notes
        # One part per cell and table (not per model/pair as a live run writes): the archive is imported in
        # one go and never resumed, and 630 parts read ~5x faster than the 3,360 per-model/per-pair parts.
        key = reference_cell_key(k, bs)
        tables.write_part("models", key, models)
        tables.write_part("pairs", key, pairs)
        if curves:
            tables.write_part("curves", pair_key(LOAD_NAME, k, TEMPERATURE_NAME, bs, 0, 1), curves)
        n_models, n_pairs, n_points = n_models + len(models), n_pairs + len(pairs), n_points + len(curves)
        if n_points > MAX_TOTAL_CURVE_POINTS:  # what is written so far is an import's: a re-import replaces it
            raise ReferenceFormatError(f"{archive}: its curves hold more than {MAX_TOTAL_CURVE_POINTS} points (the "
                                       f"released results: 3,150): not the released results")
    summary = ReferenceImportSummary(
        out=out,
        source=os.path.abspath(archive),
        source_sha256=sha,
        schedule=schedule,
        cells=len(cells),
        models=n_models,
        pairs=n_pairs,
        curve_points=n_points,
        widths=sorted({k for k, _ in cells}),
        batch_sizes=sorted({b for _, b in cells}),
        notes=_summarise_notes(notes),
    )
    _write_provenance(out, summary)
    return summary


def _summarise_notes(notes: list[str]) -> list[str]:
    """Collapse per-cell notes that differ only in the cell into one line each (keeps the summary short)."""
    grouped: dict[str, list[str]] = {}
    for n in notes:
        cell, _, what = n.partition(": ")
        grouped.setdefault(what, []).append(cell)
    return [f"{what} ({len(cells)} cells, e.g. {cells[0]})" for what, cells in grouped.items()]


def _write_provenance(out: str, summary: ReferenceImportSummary) -> None:
    doc = {
        "kind": "reference import",
        "run_id": RUN_ID,
        "description": SOURCE_DESCRIPTION,
        "load": {"name": LOAD_NAME, "values": summary.widths},
        "temperature": {"name": TEMPERATURE_NAME, "values": summary.batch_sizes},
        "seeds_per_cell": 5,
        "import": summary.to_dict(),
    }
    fs, path = resolve(join(out, "provenance.json"))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as fh:
        fh.write(json.dumps(doc, indent=2).encode())
