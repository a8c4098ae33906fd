"""The run directory: storage on local paths and URIs (storage.py), its lock (runlock.py), what every row carries
(provenance.py), and fault injection into its writes for tests (fault_hook.py)."""
