"""Our metric code against the original authors' released numbers, where the archive allows a check.

The archive holds curves (train error along each Bezier curve), not models, so the metric that can be
recomputed from it is mode connectivity: our `workloads.metrics.mode_connectivity` (used for our own runs)
must give, on every released curve, the value the authors' formula gives (the importer's implementation
in analysis/, which follows the archive's README).
"""

import io
import re

import numpy as np
import pytest

from analysis.reference import mode_connectivity_released, read_archive_files
from workloads.metrics import mode_connectivity
from tests.helpers import REFERENCE_ARCHIVE, require_reference_archive

ARCHIVE = REFERENCE_ARCHIVE


@pytest.fixture(scope="module")
def released_curves():
    require_reference_archive()
    files, _ = read_archive_files(str(ARCHIVE))
    curves = {}
    for name, blob in files.items():
        match = re.search(r"bs_(\d+)/[^/]+/ResNet18_w(\d+)/metrics/curve_test\.npz$", name)
        if match:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                curves[(int(match[2]), int(match[1]))] = (npz["ts"].copy(), npz["tr_err"].copy())
    return curves


def test_every_released_curve_gives_the_authors_mode_connectivity(released_curves):
    assert len(released_curves) == 210  # 14 widths x 15 batch sizes
    for cell, (ts, errors) in released_curves.items():
        mc, t_star = mode_connectivity(ts, errors)
        expected_mc, expected_t = mode_connectivity_released(ts, errors)
        assert mc == pytest.approx(expected_mc, abs=1e-9), cell
        assert t_star == pytest.approx(expected_t), cell
        assert -100.0 <= mc <= 100.0


def test_released_curves_show_barriers_and_flat_paths(released_curves):
    # Claim 3 of the paper on its own data: small models are poorly connected, wide ones are not.
    small = [mode_connectivity(*released_curves[(k, b)])[0] for k in (1, 2) for b in (128, 256, 512)]
    wide = [mode_connectivity(*released_curves[(k, b)])[0] for k in (64, 128) for b in (128, 256, 512)]
    assert max(small) < -5.0
    assert min(wide) > -1.0
