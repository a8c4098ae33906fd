"""Running a sweep on Ray Tune: the run and resume commands' core (execute.py), shared by the command line and the
Python API; the Tune experiment (sweep.py, adaptive_sweep.py) and its adapters (tune_adapters.py), its live state,
progress and loggers, what it tells its user (console.py), signals (interrupts.py) and how a sweep ends
(sweep_errors.py)."""
