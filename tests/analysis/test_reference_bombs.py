"""`landscape import-reference` on archives that unpack to far more than they weigh (issue #18 item 5): refused in
seconds with one `error:` line, before their memory is taken, and nothing is written to --out.

Each bomb is a few hundred kB at most: zeros compress by a factor of a thousand.
"""

from __future__ import annotations

import io
import struct
import tarfile
import time
import zipfile

import numpy as np
import pytest

from analysis import reference
from tests.helpers import assert_clean_error, landscape_in_process, released_cell_files

WHERE = "different_knobs_subset_10/bs_64/lr_decay/ResNet18_w4/metrics/"
MiB = 2**20


class Zeros(io.RawIOBase):
    """``size`` zero bytes, read without holding them (tarfile copies a member from it chunk by chunk)."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def write_archive(path, files: dict[str, bytes], zeros: dict[str, int] = None) -> None:
    """A tar.gz of the cell ``files`` (under WHERE) and of ``zeros``: name -> that many zero bytes."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(WHERE + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, size in (zeros or {}).items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BufferedReader(Zeros(size)))


def npy_header(shape, dtype="<f8") -> bytes:
    """A version 1.0 .npy header declaring ``shape``."""
    text = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def npz_declaring_a_huge_array() -> bytes:
    """An .npz whose ts.npy declares 2**31 float64 (16 GiB) and holds 8 bytes: numpy would allocate it first."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ts.npy", npy_header((2**31,)) + bytes(8))
        z.writestr("tr_err.npy", npy_header((2,)) + bytes(16))
    return buf.getvalue()


def npz_unpacking_to_a_large_array() -> bytes:
    """An .npz of one deflated member of 64 MiB of zeros (a true array, 64 kB compressed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("ts.npy", "w", force_zip64=True) as fh:
            fh.write(npy_header((8 * MiB,)))
            for _ in range(64):
                fh.write(bytes(MiB))
    return buf.getvalue()


def refused_fast(tmp_path, archive, *fragments):
    out = tmp_path / "out"
    started = time.monotonic()
    proc = landscape_in_process("import-reference", str(archive), "--out", str(out))
    elapsed = time.monotonic() - started
    assert_clean_error(proc, *fragments)
    assert elapsed < 60, elapsed  # seconds, not the minutes and gigabytes of unpacking it
    assert not out.exists() or not list(out.rglob("*.parquet"))


def test_an_archive_unpacking_beyond_its_cap_is_refused(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    write_archive(archive, released_cell_files(4, 64), zeros={"padding.bin": reference.MAX_UNPACKED_BYTES + MiB})
    assert archive.stat().st_size < 2 * MiB
    refused_fast(tmp_path, archive, str(archive), "unpacks to more than")


def test_metrics_files_beyond_their_cap_are_refused(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    write_archive(archive, released_cell_files(4, 64), zeros={WHERE + "model_dist.pkl": reference.MAX_MEMBER_BYTES + 1})
    refused_fast(tmp_path, archive, "model_dist.pkl", "more than")


@pytest.mark.parametrize("npz", [npz_declaring_a_huge_array, npz_unpacking_to_a_large_array])
def test_an_npz_array_beyond_its_cap_is_refused_before_it_is_read(tmp_path, npz):
    files = released_cell_files(4, 64)
    files["curve_test.npz"] = npz()
    archive = tmp_path / "bomb.tar.gz"
    write_archive(archive, files)
    refused_fast(tmp_path, archive, WHERE + "curve_test.npz", "array 'ts'", "more than")


def test_too_many_runs_in_a_cell_are_refused(tmp_path):
    import pickle

    files = released_cell_files(4, 64)
    files["loss_acc.pkl"] = pickle.dumps({r: {"loss": 0.1, "accuracy": 90.0} for r in range(5000)})
    archive = tmp_path / "runs.tar.gz"
    write_archive(archive, files)
    refused_fast(tmp_path, archive, WHERE + "loss_acc.pkl", "at most")


def test_npz_arrays_load_as_numpy_loads_them():
    from analysis.safe_npz import load_npz

    buf = io.BytesIO()
    np.savez_compressed(buf, ts=np.linspace(0, 1, 5), scalar=np.float64(3.0), ints=np.arange(6).reshape(2, 3))
    loaded = load_npz(buf.getvalue(), "x.npz", max_array_bytes=1024)
    reference_load = np.load(io.BytesIO(buf.getvalue()))
    assert sorted(loaded) == sorted(reference_load.files)
    for name in loaded:
        assert np.array_equal(loaded[name], reference_load[name])
