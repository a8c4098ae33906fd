"""Running a sweep on Ray Tune: the run and resume commands' core (execute.py), the Tune experiment (sweep.py,
adaptive_sweep.py) and its adapters (tune_adapters.py), its live state, progress and loggers, the rows the driver
writes itself (records.py), signals (interrupts.py) and how a sweep ends (sweep_errors.py)."""
