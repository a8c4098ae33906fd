"""Importing the authors' released archive: restricted unpickling, the mapping, and the paper's phase structure."""

import io
import itertools
import json
import os
import pickle
import tarfile

import numpy as np
import pytest

from analysis.aggregate import aggregate_cells
from analysis.phases import label_phases
from analysis.reference import ReferenceFormatError, import_reference, mode_connectivity_released
from analysis.safe_pickle import UnsafePickleError, load_numpy_pickle
from analysis.tables import RunTables
from tests.helpers import REFERENCE_ARCHIVE, TouchesWhenUnpickled, released_cell_files, require_reference_archive

ARCHIVE = REFERENCE_ARCHIVE


# ---------------------------------------------------------------------------------------------
# Restricted unpickler


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    data = pickle.dumps({0: {"loss": TouchesWhenUnpickled(marker)}})
    with pytest.raises(UnsafePickleError) as err:
        load_numpy_pickle(data, source="bs_16/lr_decay/ResNet18_w1/metrics/loss_acc.pkl")
    message = str(err.value)
    assert "loss_acc.pkl" in message and "system" in message and "Nothing was executed" in message
    assert not marker.exists()
    # The control: the same object through the ordinary unpickler does run the command.
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize(
    "payload, refused",
    [
        (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
        (b"cnumpy\nload\n(S'x.npy'\ntR.", "numpy.load"),
        (b"cbuiltins\ngetattr\n(cnumpy\ndtype\nS'__init__'\ntR.", "builtins.getattr"),
    ],
)
def test_any_global_beyond_numpy_reconstruction_is_refused(payload, refused):
    with pytest.raises(UnsafePickleError, match=refused.replace(".", r"\.")):
        load_numpy_pickle(payload, source="x.pkl")


def test_numpy_scalars_and_arrays_load():
    obj = {
        0: {"top_eigenvalue": [np.float32(3.5)], "trace": np.float64(2.0)},
        "a": np.arange(6.0).reshape(2, 3),
        "b": [np.int64(3), True, None, "text"],
    }
    for protocol in (2, 3, 4, 5):
        got = load_numpy_pickle(pickle.dumps(obj, protocol=protocol), source="ok.pkl")
        assert got[0]["top_eigenvalue"][0] == np.float32(3.5) and np.array_equal(got["a"], obj["a"])
    with pytest.raises(pickle.UnpicklingError, match="cannot read truncated.pkl"):
        load_numpy_pickle(pickle.dumps(obj)[:20], source="truncated.pkl")


def test_object_arrays_are_refused():
    data = pickle.dumps(np.array([1, "x"], dtype=object))
    with pytest.raises(UnsafePickleError):
        load_numpy_pickle(data, source="objects.pkl")


# ---------------------------------------------------------------------------------------------
# A small archive in the released format


def _write_tar(path, cells, extra=()):
    with tarfile.open(path, "w:gz") as tar:
        for (k, bs), files in cells.items():
            for name, data in files.items():
                info = tarfile.TarInfo(f"different_knobs_subset_10/bs_{bs}/lr_decay/ResNet18_w{k}/metrics/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def test_import_maps_the_released_format(tmp_path):
    archive = tmp_path / "mini.tar.gz"
    cells = {(2, 16): released_cell_files(2, 16), (2, 19): released_cell_files(2, 19, with_test=False)}
    _write_tar(archive, cells)
    summary = import_reference(str(archive), str(tmp_path / "run"))
    assert (summary.cells, summary.models, summary.pairs, summary.curve_points) == (2, 6, 6, 10)
    assert summary.widths == [2] and summary.batch_sizes == [16, 19]
    assert any("loss_acc_test.pkl missing" in n for n in summary.notes)
    tables = RunTables(str(tmp_path / "run"))
    models, pairs, curves = tables.read("models"), tables.read("pairs"), tables.read("curves")
    m = models[(models.temperature_value == 16) & (models.seed == 1)].iloc[0]
    assert (m.load_name, m.load_value, m.temperature_name) == ("width", 2.0, "batch_size")
    assert m.status == "ok" and m.train_loss == pytest.approx(0.02) and m.train_acc == pytest.approx(0.991)
    assert m.test_acc == pytest.approx(0.81) and m.hessian_top_eigenvalue == 11 and m.hessian_trace == 101
    assert m.run_id == "taxonomy-released"
    no_test = models[models.temperature_value == 19]
    assert (
        no_test.test_acc.isna().all()
        and (no_test.status == "ok").all()
        and no_test.error.str.contains("not released").all()
    )
    # CKA: mean of the two orders of each pair; L2 from the table; mc only for pair (0, 1).
    sim = pickle.loads(cells[(2, 16)]["CKA_mixup_alpha_16.0.pkl"])["representation_similarity"]
    p = pairs[(pairs.temperature_value == 16)].set_index(["seed_a", "seed_b"])
    for a, b in itertools.combinations(range(3), 2):
        assert p.loc[(a, b), "cka"] == pytest.approx((float(sim[a][b][1]) + float(sim[b][a][1])) / 2)
        assert p.loc[(a, b), "l2_distance"] == 10 * (b - a)
    # e = [1, 2, 7, 2, 3]: mean endpoint 2, largest deviation at t = 0.5 -> mc = 2 - 7 = -5
    assert p.loc[(0, 1), "mode_connectivity"] == -5.0 and p.loc[(0, 1), "t_star"] == 0.5
    assert p.loc[(0, 2), "mode_connectivity"] != p.loc[(0, 2), "mode_connectivity"]  # NaN: never connected
    c = curves[curves.temperature_value == 16].sort_values("t")
    assert list(c.train_error) == [1.0, 2.0, 7.0, 2.0, 3.0] and (c.train_loss == 0.1).all()
    doc = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert doc["run_id"] == "taxonomy-released" and doc["import"]["source_sha256"] == summary.source_sha256


def test_folder_and_tar_import_the_same(tmp_path):
    archive = tmp_path / "mini.tar.gz"
    _write_tar(archive, {(1, 32): released_cell_files(1, 32)})
    folder = tmp_path / "extracted"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    a = import_reference(str(archive), str(tmp_path / "a"))
    b = import_reference(str(folder), str(tmp_path / "b"))
    assert a.source_sha256 == b.source_sha256
    for table in ("models", "pairs", "curves"):
        ta, tb = RunTables(str(tmp_path / "a")).read(table), RunTables(str(tmp_path / "b")).read(table)
        assert ta.equals(tb), table


def test_malicious_member_in_archive_is_refused_by_name(tmp_path):
    marker = tmp_path / "pwned"
    files = released_cell_files(4, 64)
    files["hessian.pkl"] = pickle.dumps({0: TouchesWhenUnpickled(marker)})
    archive = tmp_path / "evil.tar.gz"
    _write_tar(archive, {(4, 64): files})
    with pytest.raises(UnsafePickleError, match=r"bs_64/lr_decay/ResNet18_w4/metrics/hessian\.pkl"):
        import_reference(str(archive), str(tmp_path / "run"))
    assert not marker.exists()


def test_links_in_the_archive_are_not_followed(tmp_path):
    files = released_cell_files(8, 128)
    del files["hessian.pkl"]
    link = tarfile.TarInfo("different_knobs_subset_10/bs_128/lr_decay/ResNet18_w8/metrics/hessian.pkl")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = tmp_path / "links.tar.gz"
    _write_tar(archive, {(8, 128): files}, extra=[(link, None)])
    summary = import_reference(str(archive), str(tmp_path / "run"))
    assert any("hessian.pkl missing" in n for n in summary.notes)
    assert RunTables(str(tmp_path / "run")).read("models").hessian_trace.isna().all()


def test_not_an_archive_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.tar.gz"):
        import_reference(str(tmp_path / "nope.tar.gz"), str(tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReferenceFormatError, match="holds no files like"):
        import_reference(str(tmp_path / "empty"), str(tmp_path / "run"))


def _live_run(run_dir, k, bs):
    """A landscape run holding the cell (k, bs) the mini archive imports: same curves part key as the import's."""
    from analysis.tables import model_key, pair_key

    cell = {"load_name": "width", "load_value": float(k), "temperature_name": "batch_size",
            "temperature_value": float(bs), "run_id": "demo-20250101-000000"}
    tables = RunTables(str(run_dir))
    tables.write_part("models", model_key("width", k, "batch_size", bs, 0), [{**cell, "seed": 0, "status": "ok"}])
    tables.write_part("curves", pair_key("width", k, "batch_size", bs, 0, 1),
                      [{**cell, "seed_a": 0, "seed_b": 1, "t": 0.5, "train_error": 1.0}])
    return tables


def _files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("with_config", [True, False])
def test_import_into_a_run_directory_is_refused_and_writes_nothing(tmp_path, with_config):
    from analysis.reference import ReferenceOutError

    archive = tmp_path / "mini.tar.gz"
    _write_tar(archive, {(2, 16): released_cell_files(2, 16)})
    run = tmp_path / "run"
    _live_run(run, 2, 16)
    if with_config:  # a run as `landscape run` leaves it; without config.yaml the tables' run_id still tells
        (run / "config.yaml").write_text("sweep:\n  name: demo\n")
    before = _files_of(run)
    with pytest.raises(ReferenceOutError, match=rf"{run}.*use an empty or new directory"):
        import_reference(str(archive), str(run))
    assert _files_of(run) == before  # no part replaced, no __released part added, no provenance.json


def test_import_into_a_file_or_foreign_folder_is_refused(tmp_path):
    from analysis.reference import ReferenceOutError

    archive = tmp_path / "mini.tar.gz"
    _write_tar(archive, {(2, 16): released_cell_files(2, 16)})
    (tmp_path / "file").write_text("x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    for out in ("file", "notes"):
        with pytest.raises(ReferenceOutError, match="use an empty or new directory"):
            import_reference(str(archive), str(tmp_path / out))
    assert (tmp_path / "file").read_text() == "x" and os.listdir(tmp_path / "notes") == ["todo.txt"]


def test_reimport_into_an_earlier_import_replaces_it(tmp_path):
    archive = tmp_path / "mini.tar.gz"
    _write_tar(archive, {(2, 16): released_cell_files(2, 16)})
    out = tmp_path / "ref"
    (out).mkdir()  # an empty folder is fine too
    first = import_reference(str(archive), str(out))
    (out / "analysis").mkdir()  # what `landscape analyze` of the import adds
    (out / "analysis" / "report.html").write_text("<html></html>")
    again = import_reference(str(archive), str(out))
    assert again.models == first.models and len(RunTables(str(out)).read("models")) == first.models


def test_cli_import_into_a_run_is_one_clean_error(tmp_path):
    import signal

    from click.testing import CliRunner

    import orchestrator.cli.main as cli_module

    archive = tmp_path / "mini.tar.gz"
    _write_tar(archive, {(2, 16): released_cell_files(2, 16)})
    run = tmp_path / "run"
    _live_run(run, 2, 16)
    (run / "config.yaml").write_text("sweep:\n  name: demo\n")
    before = _files_of(run)
    sigterm = signal.getsignal(signal.SIGTERM)  # main() installs its own SIGTERM handler
    try:
        result = CliRunner().invoke(cli_module.main, ["import-reference", str(archive), "--out", str(run)])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    err = result.stderr.strip()
    assert result.exit_code == 2 and len(err.splitlines()) == 1, (result.exit_code, result.output, err)
    assert err.startswith(f"error: output directory {run} holds config.yaml") and "empty or new directory" in err
    assert _files_of(run) == before


def test_released_mode_connectivity_formula():
    assert mode_connectivity_released([0, 0.5, 1], [0.0, 10.0, 2.0]) == (1.0 - 10.0, 0.5)
    assert mode_connectivity_released([0, 0.5, 1], [4.0, 1.0, 4.0]) == (3.0, 0.5)  # curve beats endpoints
    assert mode_connectivity_released([0, 0.5, 1], [0.0, 1.0, 2.0]) == (1.0, 0.0)  # endpoint tie: first


# ---------------------------------------------------------------------------------------------
# The real released archive


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    require_reference_archive()
    out = str(tmp_path_factory.mktemp("released"))
    summary = import_reference(str(ARCHIVE), out)
    tables = RunTables(out)
    models, pairs = tables.read("models"), tables.read("pairs")
    cells = label_phases(aggregate_cells(models, pairs))
    return summary, models, pairs, cells


def test_released_archive_imports_completely(released):
    summary, models, pairs, _ = released
    assert (summary.cells, summary.models, summary.pairs, summary.curve_points) == (210, 1050, 2100, 1050)
    assert summary.widths == [1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128]
    assert summary.batch_sizes == [16, 19, 24, 27, 32, 44, 64, 92, 128, 180, 256, 364, 512, 724, 1024]
    assert (models.status == "ok").all()
    assert models[models.temperature_value.isin([19, 27])].test_acc.isna().all()
    assert models[~models.temperature_value.isin([19, 27])].test_acc.notna().all()


def test_released_values_spot_check(released):
    # Read off the archive with pickletools (width 16, batch 128): run 0 and the curve between runs 0 and 1.
    _, models, pairs, cells = released
    m = models[(models.load_value == 16) & (models.temperature_value == 128) & (models.seed == 0)].iloc[0]
    assert m.train_loss == pytest.approx(0.001992130540162325) and m.test_acc == pytest.approx(0.8604)
    assert m.hessian_top_eigenvalue == pytest.approx(3.8018321990966797) and m.hessian_trace == pytest.approx(
        53.51665540422712
    )
    p = pairs[
        (pairs.load_value == 16) & (pairs.temperature_value == 128) & (pairs.seed_a == 0) & (pairs.seed_b == 1)
    ].iloc[0]
    assert p.cka == pytest.approx((0.6395156 + 0.6514825) / 2, abs=1e-6) and p.l2_distance == pytest.approx(
        39.096988677978516
    )
    assert p.mode_connectivity == pytest.approx(-1.024) and p.t_star == 0.5  # tr_err [0, .004, 1.024, .004, 0]


def test_cell_cka_equals_the_authors_mean_over_ordered_pairs(released):
    _, _, _, cells = released
    with tarfile.open(ARCHIVE) as tar:
        member = tar.getmember(
            "different_knobs_subset_10/bs_256/lr_decay/ResNet18_w32/metrics/CKA_mixup_alpha_16.0.pkl"
        )
        sim = load_numpy_pickle(tar.extractfile(member).read(), source=member.name)["representation_similarity"]
    theirs = np.mean([float(sim[i][j][1]) for i in range(5) for j in range(5) if i != j])
    ours = cells[(cells.load_value == 32) & (cells.temperature_value == 256)].cka.iloc[0]
    assert ours == pytest.approx(theirs, abs=1e-7)


def test_released_phase_structure_matches_the_paper(released):
    """The regions the paper describes for this figure (width 1..128 x batch 16..1024), default rules."""
    _, _, _, cells = released
    phase = {(int(r.load_value), int(r.temperature_value)): r.phase for r in cells.itertuples()}
    widths = sorted({k for k, _ in phase})
    # High-temperature band (batch 16): phase II from width 3 on.
    assert {k: phase[(k, 16)] for k in widths if k >= 3} == {k: "II" for k in widths if k >= 3}
    # Small widths at moderate and large batch sizes: phase I.
    small = [(k, b) for k in (1, 2, 3, 4) for b in (64, 92, 128, 180, 256, 364, 512, 724, 1024)]
    assert {c: phase[c] for c in small} == {c: "I" for c in small}
    # The best test accuracy cell: phase IV-B.
    best = cells.loc[cells.test_acc.idxmax()]
    assert (best.load_value, best.temperature_value, best.phase) == (128, 44, "IV-B")
    # Wide models at the largest batch sizes: phase IV-A.
    wide_cold = [(k, b) for k in (32, 45, 64, 91, 128) for b in (724, 1024)]
    assert {c: phase[c] for c in wide_cold} == {c: "IV-A" for c in wide_cold}
    # Between small and wide models at low temperature, flat but poorly connected: phase III exists there.
    assert {phase[(k, 1024)] for k in (6, 8, 11)} == {"III"}
    assert cells.phase.notna().all()


@pytest.mark.parametrize("damage", ["malicious pickle", "truncated pickle", "truncated npz", "truncated archive"])
def test_cli_import_of_a_damaged_or_malicious_archive_is_one_clean_error(tmp_path, damage):
    """`landscape import-reference` on an archive with a pickle that asks to run code, a pickle or .npz cut
    short, or a .tar.gz cut short: one `error:` line naming the file, no traceback, nothing executed, and
    nothing written to --out."""
    from tests.helpers import assert_clean_error, landscape_in_process

    marker = tmp_path / "pwned"
    files = released_cell_files(4, 64)
    where = "bs_64/lr_decay/ResNet18_w4/metrics/"
    if damage == "malicious pickle":
        files["hessian.pkl"] = pickle.dumps({0: TouchesWhenUnpickled(marker)})
        expected = [where + "hessian.pkl", "Nothing was executed"]
    elif damage == "truncated pickle":
        files["loss_acc.pkl"] = files["loss_acc.pkl"][:20]
        expected = [where + "loss_acc.pkl", "cannot read"]
    elif damage == "truncated npz":
        files["curve_test.npz"] = files["curve_test.npz"][:100]
        expected = [where + "curve_test.npz", "cannot read"]
    archive = tmp_path / "archive.tar.gz"
    _write_tar(archive, {(4, 64): files})
    if damage == "truncated archive":
        data = archive.read_bytes()
        archive.write_bytes(data[: len(data) // 2])
        expected = [str(archive), "truncated or damaged"]
    out = tmp_path / "out"
    assert_clean_error(landscape_in_process("import-reference", str(archive), "--out", str(out)), *expected)
    assert not marker.exists()
    assert not out.exists() or not list(out.rglob("*.parquet"))
