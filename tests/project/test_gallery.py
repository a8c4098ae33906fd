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
from tests.helpers import hygienic_env
from tests.helpers import REPO_ROOT

ROOT = pathlib.Path(REPO_ROOT)
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
        # A relaxation (best-in-phase-iv accepts IV-A, which the paper does not call globally nice) is never a
        # headline claim.
        assert not [c for c in e.headline if CLAIM_BY_ID[c].relaxation_of], e.name
    assert len({e.name for e in GALLERY}) == len(GALLERY)


def test_the_headlines_are_the_papers_own():
    by = {e.figure: e for e in GALLERY if not e.variant_of}
    for figure in ("Fig. 2", "Fig. 3", "Fig. 4", "Fig. 5", "App. D.5"):  # "globally nice" is IV-B (paper section 3.1)
        assert "best-in-iv-b" in by[figure].headline, figure
    assert "all-phases-present" in by["Fig. 2"].headline and by["App. D.5"].headline == by["Fig. 2"].headline
    assert {"dark-band-at-boundary", "sharp-beats-iii-on-noisy-labels"} <= set(by["Fig. 4"].headline)
    # Fig. 6 on the authors' probes; the held-out probe set is a named variant beside it, not in its place.
    fig6 = [e for e in GALLERY if e.figure == "Fig. 6"]
    main = [e for e in fig6 if not e.variant_of]
    assert len(main) == 1 and "metrics.cka_probe_maker=mixup" in main[0].overrides
    assert "metrics.cka_probe_pool=train" in main[0].overrides
    authors = load_config(main[0].config, list(main[0].overrides), check_data=False).metrics.cka
    assert (authors.probe_pool, authors.probe_maker) == ("train", "mixup")  # the overrides reach the config
    variants = [e for e in fig6 if e.variant_of]
    assert [v.variant_of for v in variants] == [main[0].name] and not variants[0].overrides


def test_a_headline_counts_strictly():
    gallery = _gallery_module()
    entry = gallery.Entry("demo", "Fig. 2", ("sharp-phases-hot", "best-in-iv-b"), "words")

    def record(cid, holds, status, p):
        return {"id": cid, "applies": True, "holds": holds, "status": status, "p_holds": p}

    holds, words = gallery.headline_verdict(entry, [record("sharp-phases-hot", True, "holds", 1.0),
                                                    record("best-in-iv-b", None, "unresolved", 0.13)])
    assert holds is None and "best-in-iv-b unresolved (p 0.13)" in words and "sharp-phases-hot holds (p 1.00)" in words
    assert gallery.headline_status(entry, [record("sharp-phases-hot", True, "holds", 1.0),
                                           record("best-in-iv-b", None, "unresolved", 0.13)]) == "unresolved"
    assert gallery.headline_status(entry, [record("sharp-phases-hot", True, "holds", 1.0),
                                           record("best-in-iv-b", None, "cannot be measured", None)]) == "not measured"
    holds, _ = gallery.headline_verdict(entry, [record("sharp-phases-hot", True, "holds", 1.0),
                                                record("best-in-iv-b", False, "does not hold", 0.05)])
    assert holds is False
    holds, _ = gallery.headline_verdict(entry, [record("sharp-phases-hot", True, "holds", 0.95),
                                                record("best-in-iv-b", True, "holds", 0.92)])
    assert holds is True


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
    module = _gallery_module()
    for name, figure in ((e.name, module.figure_label(e)) for e in GALLERY):
        assert f"## {name} ({figure})" in page
        claims = json.loads((runs / name / "analysis" / "claims.json").read_text(encoding="utf-8"))
        assert claims and all(c["holds"] in (True, False, None) for c in claims)
        for kind in ("phase_map", "panels"):
            picture = docs / "gallery" / f"{name}_{kind}.png"
            assert picture.stat().st_size > 1000 and f"(gallery/{name}_{kind}.png)" in page
        # 2 x 2 cells x 2 seeds: the reduction reached the CLI.
        saved = load_config(str(runs / name / "config.yaml"), check_data=False)
        assert len(saved.model_keys()) == 8 and saved.training.epochs == 2
