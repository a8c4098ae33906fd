"""The Parquet tables of a run: keys, atomic part writes, validated reads (the schemas: analysis/schemas.py).

This module is the contract between the orchestrator (which writes) and the analysis (which reads).
It depends on pyarrow and pandas only, so both sides can import it.

Layout of a run directory (a local path or a URI such as ``s3://bucket/run``)::

    RUN_DIR/tables/models/<key>.parquet   one part per trained model
    RUN_DIR/tables/pairs/<key>.parquet    one part per pair of seeds in a cell
    RUN_DIR/tables/curves/<key>.parquet   the points of one pair's Bezier curve
    RUN_DIR/tables/history/<key>.parquet  one model's training, one row per epoch (runs before it: none)
    RUN_DIR/tables/curve_history/<key>.parquet  one pair's curve training, one row per epoch (idem)

One part per key makes every write independent and idempotent: re-running a key replaces its part,
never duplicates it. Parts are written to a temporary name and renamed, so a crash never leaves a
half-written part under a real name (a failed write removes its temporary file).

Schema evolution. Columns are only ever added within a schema version, and reading is additive: a column
added later (e.g. ``weights_sha256``) reads as null in parts written before it existed, and a column this
version does not know is ignored, unless it is an added metric's (workloads/metric_specs.py): such a column
carries its spec in its field metadata and is read (after the built-in columns, null in parts without it), and
:attr:`TableScan.metrics` lists those specs. A part must have its key columns and ``schema_version`` to be read at all.
SCHEMA_VERSION changes only for an incompatible change (a column renamed, retyped or given another
meaning); parts of another version are refused with a message naming it, never treated as damaged.

Which part a row came from is part of what a read returns (:class:`TableScan`): a part whose rows carry
another key than its file name (a copy ``K (copy).parquet``, a part stored under another key's name) is
found by :meth:`TableScan.misnamed`, so that it is never counted twice nor makes a key look done.

Reading a shared run directory. Whoever can write a run directory must not be able to make a reader read, follow
or exhaust anything outside it: every part is read through :func:`analysis.run_files.read_run_file` (a regular
file, no symlinked file or folder, at most its size limit) and parsed from those bytes in memory; before its
columns are decoded, its declared row count and sizes are checked (:data:`MAX_PART_ROWS`,
:data:`MAX_PART_DECODED_BYTES`), and text columns are measured while still dictionary-encoded, so that a small
compressed part cannot unfold into gigabytes. A part that fails a check is unreadable, with the reason naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.run_files import MiB, RunFileError, read_run_file
from analysis.schemas import (
    KEY_COLUMNS,
    MODEL_KEYED,
    SCHEMA_VERSION,
    TableError,
    required_columns,
    sane_spec,
    spec_of_field,
    table_schema,
)
from workloads.atomic import write_atomically
from workloads.metric_specs import MetricSet, MetricSpec, merged

# Rows one part may hold: a live run writes one row per models/pairs part, one per point of a curve and one per
# epoch of a history; an imported reference one cell's 5 models and 10 pairs. Far more is not a run's part.
MAX_PART_ROWS = {"models": 1_000, "pairs": 1_000, "curves": 100_000, "history": 100_000, "curve_history": 100_000}
# Bytes a part's columns may take once decoded (a real part: a few kB; a history of 10,000 epochs: ~2 MB), and
# what all parts of one table may take together: beyond, the parts are refused rather than exhaust the memory.
MAX_PART_DECODED_BYTES = 64 * MiB
MAX_TABLE_DECODED_BYTES = 1024 * MiB

# ---------------------------------------------------------------------------------------------
# Keys


def format_value(value: float) -> str:
    """Shortest text that round-trips the float, safe in a file name (no '/', no spaces)."""
    value = float(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def model_key(load_name: str, load_value: float, temperature_name: str, temperature_value: float, seed: int) -> str:
    return f"{load_name}={format_value(load_value)}__{temperature_name}={format_value(temperature_value)}__seed={int(seed)}"


def pair_key(
    load_name: str, load_value: float, temperature_name: str, temperature_value: float, seed_a: int, seed_b: int
) -> str:
    a, b = sorted((int(seed_a), int(seed_b)))
    return f"{load_name}={format_value(load_value)}__{temperature_name}={format_value(temperature_value)}__seeds={a}-{b}"


def row_key(table: str, row) -> str | None:
    """The part key a row of ``table`` belongs under (a dict or a namedtuple of its key columns); None when its
    key columns are null or not of their types (a foreign row)."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name, None)
    try:
        cell = (str(get("load_name")), float(get("load_value")), str(get("temperature_name")),
                float(get("temperature_value")))
        if table in MODEL_KEYED:
            return model_key(*cell, int(get("seed")))
        return pair_key(*cell, int(get("seed_a")), int(get("seed_b")))
    except (TypeError, ValueError, OverflowError):
        return None


# ---------------------------------------------------------------------------------------------
# File systems: a local path or a URI, through pyarrow's file systems


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(file system, path inside it) for a local path or a URI (s3://, gs://, file://)."""
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


@dataclass(frozen=True)
class RunTables:
    """The tables of one run directory (a local path or a URI)."""

    run_dir: str

    @property
    def tables_dir(self) -> str:
        return join(self.run_dir, "tables")

    def part_uri(self, table: str, key: str) -> str:
        return join(self.tables_dir, table, f"{key}.parquet")

    # -- writing ------------------------------------------------------------------------------

    def write_part(self, table: str, key: str, rows: list[dict], added: tuple[MetricSpec, ...] = ()) -> str:
        """Write ``rows`` as the part ``key`` of ``table``, atomically; returns the part's URI.

        Rows are checked against the table's schema (with the columns of the ``added`` metrics, each carrying
        its spec in the field metadata): a missing column is written as null, an unknown column is an error
        (it would silently vanish otherwise).
        """
        schema = table_schema(table, added)
        unknown = sorted({c for r in rows for c in r} - set(schema.names))
        if unknown:
            raise TableError(f"table {table!r} has no column(s) {unknown}; known: {schema.names}")
        for r in rows:
            r.setdefault("schema_version", SCHEMA_VERSION)
        columns = {name: [r.get(name) for r in rows] for name in schema.names}
        arrow = pa.Table.from_pydict(columns, schema=schema)
        fs, path = resolve(self.part_uri(table, key))
        parent = path.rsplit("/", 1)[0]
        fs.create_dir(parent, recursive=True)
        if isinstance(fs, pafs.LocalFileSystem):
            write_atomically(path, lambda tmp: pq.write_table(arrow, tmp, filesystem=fs))
        else:
            # Object stores make a single PUT visible all at once: no rename needed.
            pq.write_table(arrow, path, filesystem=fs)
        return self.part_uri(table, key)

    def delete_part(self, table: str, key: str) -> None:
        fs, path = resolve(self.part_uri(table, key))
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass

    # -- reading ------------------------------------------------------------------------------

    def part_keys(self, table: str) -> list[str]:
        """Keys of the parts present (complete, readable or not) in ``table``. A local symlink, device or FIFO
        named like a part is listed too: reading it is refused with a message naming it (never silently left
        out, never followed)."""
        fs, path = resolve(join(self.tables_dir, table))
        if isinstance(fs, pafs.LocalFileSystem):
            names = _local_entries(path)
        else:
            infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
            names = [i.base_name for i in infos if i.type == pafs.FileType.File]
        return sorted(n[: -len(".parquet")] for n in names if n.endswith(".parquet") and not n.startswith("."))

    def read(self, table: str, *, on_corrupt: str = "raise") -> pd.DataFrame:
        """All parts of ``table`` as one DataFrame (empty, with the schema's columns, when none).

        ``on_corrupt``: "raise" (a clear TableError naming the part and the fix) or "skip" (leave
        unreadable parts out; :meth:`scan`'s ``unreadable`` lists them so they can be recomputed).
        """
        return self.scan(table, on_corrupt=on_corrupt).frame

    def scan(self, table: str, *, on_corrupt: str = "skip") -> "TableScan":
        """One read of every part of ``table``: its rows, the part each row came from, the unreadable parts.

        Reads each part once; a command that needs a table several times shares one scan. ``on_corrupt``
        as in :meth:`read`. A part of another schema version raises TableError.
        """
        keys = self.part_keys(table)
        raw, row_parts, bad, held = [], [], [], 0
        for key in keys:
            part, why = self._read_part(table, key)
            if part is not None and held + part.nbytes > MAX_TABLE_DECODED_BYTES:
                part, why = None, (f"PartRefusedError: the parts of table {table} read before it hold "
                                   f"{held / MiB:.0f} MiB, the most one table of a run may hold: not read")
            if part is None:
                bad.append((key, why))
            else:
                held += part.nbytes
                raw.append(part)
                row_parts.extend([key] * part.num_rows)
        # The added metrics the parts declare (a column with its spec in the field metadata), first seen kept.
        declared = [spec for part in raw for spec in map(spec_of_field, part.schema) if spec is not None]
        checked = [sane_spec(spec) for spec in declared]
        notes = sorted({note for _, note in checked if note})
        added = merged([spec for spec, _ in checked])
        schema = table_schema(table, added.added)
        frames = [_conform(part, schema) for part in raw]
        if bad and on_corrupt == "raise":
            key, why = bad[0]
            raise TableError(
                f"part {self.part_uri(table, key)} of table {table!r} is unreadable ({why}). "
                f"Delete it and run `landscape resume {self.run_dir}` to recompute it."
            )
        # One Arrow concatenation and one conversion: converting each part to pandas first costs ~10 ms
        # per part, which dominates reading a run of thousands of small parts.
        frame = pa.concat_tables(frames).to_pandas() if frames else schema.empty_table().to_pandas()
        return TableScan(table, frame, row_parts, bad, keys, added, notes)

    def _check_version(self, table: str, version: pa.ChunkedArray) -> None:
        versions = {v for v in version.unique().to_pylist() if v is not None}
        if versions - {SCHEMA_VERSION}:
            newest = max(versions)
            how = ("a newer landscape wrote it: upgrade landscape to read it" if newest > SCHEMA_VERSION else
                   "an older landscape wrote it in a layout this one cannot read: use that version")
            raise TableError(
                f"table {table!r} in {self.run_dir} was written with schema version(s) {sorted(versions)}; "
                f"this landscape reads version {SCHEMA_VERSION} ({how}), or start a new run directory."
            )

    def _read_part(self, table: str, key: str) -> tuple[pa.Table | None, str]:
        """(the part in the schema's column order and types, then its added metrics' columns, "") or (None, why
        it cannot be read).

        Additive: a column of the schema missing from the part reads as null; a column the schema does not
        know is left out unless it declares an added metric (its spec in the field metadata). Only the
        required columns (:func:`required_columns`) must be there.
        """
        schema = table_schema(table)
        uri = self.part_uri(table, key)
        try:
            part = _parse_part(read_run_file(uri, "table", root=self.run_dir), table, uri)
        except (OSError, pa.ArrowException, RunFileError, PartRefusedError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        missing = [n for n in required_columns(table) if n not in part.schema.names]
        if missing:
            return None, f"TableError: missing columns {missing}"
        try:
            version = part.column("schema_version").cast(pa.int32())
        except (pa.ArrowException, ValueError) as exc:
            return None, f"TableError: schema_version is not a number ({type(exc).__name__})"
        if version.null_count:
            return None, "TableError: rows without a schema version"
        # A readable part of another schema version is not a broken one: it is refused here, before its
        # columns are compared, so that a repair never deletes (and recomputes) the rows of an old run.
        self._check_version(table, version)
        added = [spec for spec in map(spec_of_field, part.schema) if spec is not None and spec.name not in schema.names]
        try:
            return _conform(part, table_schema(table, added)), ""
        except (pa.ArrowException, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"


def _local_entries(path: str) -> list[str]:
    """Names in the local folder ``path`` that are not folders (files, links, devices); none if it is missing
    (a file in its place is an OSError: the run directory is damaged, not empty)."""
    try:
        with os.scandir(path) as entries:
            return [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


class PartRefusedError(ValueError):
    """A part whose declared rows or decoded size are beyond what a run writes: it is not decoded."""


def _parse_part(data: bytes, table: str, uri: str) -> pa.Table:
    """The columns of the Parquet part ``data`` (its bytes) that a reader may use: flat columns only (the
    schemas have no nested ones), each text column decoded only once its decoded size is known to fit."""
    part_file = pq.ParquetFile(pa.BufferReader(data))
    meta = part_file.metadata
    cap = MAX_PART_ROWS.get(table, 100_000)
    if meta.num_rows > cap:
        raise PartRefusedError(f"{uri} declares {meta.num_rows} rows, over the {cap} a {table} part holds: not read")
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    _check_decoded(declared, uri)
    flat = [f for f in part_file.schema_arrow if not pa.types.is_nested(f.type)]
    text = [f.name for f in flat if _is_text(f.type.value_type if pa.types.is_dictionary(f.type) else f.type)]
    # Text stays dictionary-encoded while it is measured: a one-row dictionary repeated in every row is small
    # on disk and in this form, and only its decoded size tells whether it fits.
    part = pq.ParquetFile(pa.BufferReader(data), read_dictionary=text).read(columns=[f.name for f in flat])
    _check_decoded(part.nbytes + sum(_decoded_text_bytes(part.column(name)) for name in text), uri)
    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in part.columns]
    fields = [f.with_type(c.type) for f, c in zip(part.schema, columns)]  # keeps an added metric's spec
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _is_text(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind))


def _check_decoded(size: int, uri: str) -> None:
    if size > MAX_PART_DECODED_BYTES:
        raise PartRefusedError(f"{uri} decodes to {size / MiB:.0f} MiB, over the {MAX_PART_DECODED_BYTES / MiB:.0f} "
                               f"MiB a part of a run holds: not read (a run never writes one so large)")


def _decoded_text_bytes(column: pa.ChunkedArray) -> int:
    """Bytes the dictionary-encoded text ``column`` takes once decoded (each row's value length, summed)."""
    total = 0
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type) and len(chunk):
            total += pc.sum(pc.take(pc.binary_length(chunk.dictionary), chunk.indices)).as_py() or 0
    return total


def _conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """``part`` with exactly ``schema``'s columns, in its order and types; a column the part lacks reads as null."""
    columns = [part.column(f.name).cast(f.type) if f.name in part.schema.names else pa.nulls(part.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


@dataclass
class TableScan:
    """One read of a table: ``frame`` (every row of the readable parts), ``row_parts`` (the part key each row
    came from, in the frame's order), ``unreadable`` ((key, reason) per part that cannot be read) and
    ``present`` (every part key listed, readable or not)."""

    table: str
    frame: pd.DataFrame
    row_parts: list[str]
    unreadable: list[tuple[str, str]]
    present: list[str]
    metrics: MetricSet = MetricSet()  # the added metrics whose columns the parts hold (specs from their metadata)
    notes: list = field(default_factory=list)  # what was not taken from the parts' metadata as it was (a format)

    def row_keys(self) -> list[str | None]:
        """The key each row belongs under, from its key columns (None for a row whose keys are null)."""
        cols = KEY_COLUMNS[self.table]
        return [row_key(self.table, r) for r in self.frame[cols].itertuples(index=False)]

    def misnamed(self) -> dict[str, str]:
        """Part key -> what its rows say, for every readable part whose rows do not all carry its own key:
        a copy of a part under another name, a part stored under another key's name, a foreign file."""
        seen: dict[str, set] = {}
        for part, key in zip(self.row_parts, self.row_keys()):
            seen.setdefault(part, set()).add(key)
        out = {}
        for part, keys in seen.items():
            if keys != {part}:
                named = sorted(k for k in keys if k is not None)
                out[part] = (f"its rows are {', '.join(named[:2])}{' ...' if len(named) > 2 else ''}" if named
                             else "its rows have no key")
                if part in keys:
                    out[part] += f" besides {part}"
        return out

    def duplicates(self) -> set[str]:
        """Misnamed parts each of whose rows is also stored under its own key's name (``K (copy).parquet``
        next to ``K.parquet``): counting them would count those rows twice."""
        own = set(self.present)
        dupes = set()
        by_part: dict[str, set] = {}
        for part, key in zip(self.row_parts, self.row_keys()):
            by_part.setdefault(part, set()).add(key)
        for part, keys in by_part.items():
            if keys != {part} and all(k is not None and k != part and k in own for k in keys):
                dupes.add(part)
        return dupes

    def without(self, parts) -> "TableScan":
        """This scan as if ``parts`` were not there (e.g. once a repair has moved them aside)."""
        parts = set(parts)
        if not parts:
            return self
        return TableScan(self.table, self.rows_without(parts), [p for p in self.row_parts if p not in parts],
                         [(k, why) for k, why in self.unreadable if k not in parts],
                         [k for k in self.present if k not in parts], self.metrics, self.notes)

    def rows_without(self, parts) -> pd.DataFrame:
        """``frame`` without the rows of ``parts`` (e.g. the misnamed ones), index reset."""
        parts = set(parts)
        if not parts:
            return self.frame
        keep = [p not in parts for p in self.row_parts]
        return self.frame[keep].reset_index(drop=True)
