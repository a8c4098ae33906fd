"""cluster.yaml passes Ray's own launcher validation offline, and typos in it would be caught."""

import copy
import pathlib

import pytest
import yaml
from tests.helpers import REPO_ROOT

ROOT = pathlib.Path(REPO_ROOT)

util = pytest.importorskip("ray.autoscaler._private.util")


def _load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_validator():
    config = _load()
    util.validate_config(util.fillout_defaults(config))


def test_validator_catches_a_typo():
    import jsonschema

    config = copy.deepcopy(_load())
    config["max_wrokers"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_wrokers"):
        util.validate_config(util.fillout_defaults(config))


def test_cluster_yaml_pins_the_installed_ray_version():
    import ray

    image = _load()["docker"]["image"]
    assert f":{ray.__version__}-" in image, f"image {image} does not match installed Ray {ray.__version__}"


def test_cluster_yaml_installs_the_project_and_mounts_the_repo():
    config = _load()
    assert any("pip install" in c and "landscape" in c for c in config["setup_commands"])
    assert "." in config["file_mounts"].values()
    # The dashboard must not listen on every interface of the head.
    assert not any("0.0.0.0" in c for c in config["head_start_ray_commands"])
