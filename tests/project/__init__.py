"""The repository as a whole: layering, import cycles, packaging, scripts and benchmarks."""
