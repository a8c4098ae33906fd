"""landscape from Python: run a sweep, continue one, read one.

    import landscape

    run = landscape.run("smoke", out="runs/smoke")     # a built-in config, a YAML file or a mapping
    run.cells[["width", "batch_size", "phase"]]         # one row per cell of the phase diagram
    run.models                                          # one row per trained model (analysis/schemas.py)
    run.claims                                          # the paper's claims, checked on this run
    run.analyze(rules={"mc_threshold": 0.5})            # again, with other phase rules
    landscape.load_run("runs/smoke").pairs              # a finished run, later
    landscape.resume("runs/smoke")                      # compute what is missing
    landscape.compare(run, run, rules_b={"mc_threshold": 2}).changed   # the cells a rule moves, and why

Errors are LandscapeError subclasses: InputError (a bad config, override or run directory: nothing ran),
SweepIncomplete (jobs failed or results are missing: what finished is kept, ``resume`` continues) and
SweepStopped (the sweep could not go on). Ctrl-C raises SweepInterrupted, a KeyboardInterrupt. Nothing is
printed unless ``verbose=True``; what the command line would print is in ``Run.log``.
"""

# orchestrator first: it pins the tool's own packages (workloads/own_packages.py) before `analysis` is imported.
import orchestrator  # noqa: F401  (imported for that side effect)
from landscape.comparing import RunComparison, compare
from landscape.results import LandscapeWarning, Run, load_run
from landscape.sweeps import resume, run
from orchestrator.driver.sweep_errors import (
    InputError,
    LandscapeError,
    SweepIncomplete,
    SweepInterrupted,
    SweepStopped,
)

__all__ = [
    "InputError",
    "LandscapeError",
    "LandscapeWarning",
    "Run",
    "RunComparison",
    "SweepIncomplete",
    "SweepInterrupted",
    "SweepStopped",
    "compare",
    "load_run",
    "resume",
    "run",
]
