"""The ``landscape`` command line: its commands (main.py), how they end (exits.py), and the commands that only read
a run (status.py) or measure a user's own models (diagnose.py)."""
