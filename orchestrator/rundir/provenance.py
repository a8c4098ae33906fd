"""What every row carries besides its measurements: run id, config hash, package and library versions."""

from __future__ import annotations

import functools
import importlib.metadata
import platform

from analysis.schemas import SCHEMA_VERSION, library_versions_json

LIBRARIES = ("torch", "ray", "numpy", "pyarrow", "pandas", "mnist1d", "pyhessian")


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return importlib.metadata.version("landscape")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@functools.lru_cache(maxsize=1)
def library_versions() -> str:
    """JSON object of the installed versions of the libraries that decide the numbers (of THIS process)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return library_versions_json(versions)


def provenance(run_id: str, config_hash: str) -> dict:
    return {
        "run_id": run_id,
        "config_hash": config_hash,
        "package_version": package_version(),
        "library_versions": library_versions(),
        "schema_version": SCHEMA_VERSION,
    }
