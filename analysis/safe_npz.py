"""Load a ``.npz`` (a zip of ``.npy`` arrays) from bytes, each array's size checked before it is read.

``numpy.load`` of an ``.npz`` decompresses a member as its array asks: a few kB of deflated zeros can declare a
gigabyte array, which numpy allocates before reading a byte. Here every member is checked twice before it is
read: the zip's uncompressed size (which the zip reader also enforces while reading) and the ``.npy`` header's
shape times item size; Python objects (pickles) are refused, as with ``allow_pickle=False``.

    load_npz(data, source, max_array_bytes, max_arrays) -> {name: ndarray}    or NpzError naming ``source``
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import numpy.lib.format as npy_format


class NpzError(ValueError):
    """An .npz that is not read: damaged, holding objects, or an array beyond the size allowed."""


def load_npz(data: bytes, source: str, max_array_bytes: int, max_arrays: int = 1000) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > max_arrays:
                raise NpzError(f"{source} holds {len(members)} arrays, more than the {max_arrays} allowed")
            return {_array_name(m.filename): _read_member(archive, m, source, max_array_bytes) for m in members}
    except NpzError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:  # damaged or truncated
        raise NpzError(f"cannot read {source} as .npz without pickle: {type(exc).__name__}: {exc}") from None


def _array_name(filename: str) -> str:
    return filename[: -len(".npy")] if filename.endswith(".npy") else filename


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, source: str, limit: int) -> np.ndarray:
    where = f"{source}: array {_array_name(member.filename)!r}"
    if member.file_size > limit + 4096:  # the .npy header is at most a few kB
        raise NpzError(f"{where} unpacks to {member.file_size} bytes, more than the {limit} allowed: not read")
    with archive.open(member) as fh:
        version = npy_format.read_magic(fh)
        headers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
        if version not in headers:
            raise NpzError(f"{where} is in .npy format version {version}, which is not read (1.0 and 2.0 are)")
        shape, _fortran, dtype = headers[version](fh)
    if dtype.hasobject:
        raise NpzError(f"{where} holds Python objects: refused (they would be unpickled)")
    size = math.prod(shape) * dtype.itemsize
    if size > limit:
        raise NpzError(f"{where} declares shape {shape} of {dtype} ({size} bytes), more than the {limit} allowed: "
                       f"not read")
    with archive.open(member) as fh:
        return npy_format.read_array(fh, allow_pickle=False)
