"""The CPU gallery: every gallery config is a valid built-in on packaged data whose comment says what it shows and
what it does not, and scripts/gallery.py runs a reduced version of each through the CLI and writes the gallery."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest

from orchestrator.config import builtin_names, load_config, read_raw
from tests.conftest import hygienic_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGED_DATA = {"mnist1d", "digits"}  # generated or shipped by an installed package: no download, no data_root


def _gallery_module():
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "scripts" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GALLERY = _gallery_module().GALLERY


def test_the_gallery_holds_the_demo_and_every_cpu_config():
    names = [e.config for e in GALLERY]
    assert names[0] == "demo"
    assert set(names) == {"demo"} | {n for n in builtin_names() if n.startswith("cpu-")}
    assert {"cpu-lr-decay", "cpu-noisy-labels", "cpu-weight-decay", "cpu-data-size", "cpu-label-noise",
            "cpu-learning-rate"} <= set(names)


def test_every_headline_names_declared_claims():
    from analysis.claims import CLAIM_BY_ID

    for e in GALLERY:
        assert e.headline and set(e.headline) <= set(CLAIM_BY_ID), e.config
        assert e.words and e.figure


@pytest.mark.parametrize("name", [e.config for e in GALLERY])
def test_gallery_config_is_honest_about_its_figure(name):
    cfg = load_config(name)
    assert cfg.workload.dataset in PACKAGED_DATA and cfg.workload.data_root is None
    text = open(read_raw(name)[1], encoding="utf-8").read()
    # The comment says which claims of its figure it shows, which it does not, and why the knobs are what they are.
    for heading in ("Shows", "Does not show", "Why these settings"):  # "# Shows:" or "# Shows (source):"
        assert re.search(rf"^# {heading}( \([^)]*\))?:", text, re.M), f"{name}: no '# {heading}:' in its comment"
    assert cfg.seeds and len(cfg.seed_pairs()) >= 3  # 3 seeds: the noise term of the connectivity rule needs pairs


def test_reduced_gallery_runs_through_the_cli_and_writes_the_gallery(tmp_path, ray_tmpdir):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gallery.py"), "--reduced", "--runs", str(runs),
                           "--docs", str(docs)], cwd=ROOT, env=hygienic_env(ray_tmpdir), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    page = (docs / "gallery.md").read_text(encoding="utf-8")
    assert "Reduced runs" in page
    assert "| config | figure | headline claims | headline | wall |" in page
    for name, figure in ((e.config, e.figure) for e in GALLERY):
        assert f"## {name} ({figure})" in page
        claims = json.loads((runs / name / "analysis" / "claims.json").read_text(encoding="utf-8"))
        assert claims and all(c["holds"] in (True, False, None) for c in claims)
        for kind in ("phase_map", "panels"):
            picture = docs / "gallery" / f"{name}_{kind}.png"
            assert picture.stat().st_size > 1000 and f"(gallery/{name}_{kind}.png)" in page
        # 2 x 2 cells x 2 seeds: the reduction reached the CLI.
        saved = load_config(str(runs / name / "config.yaml"), check_data=False)
        assert len(saved.model_keys()) == 8 and saved.training.epochs == 2
