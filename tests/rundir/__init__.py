"""The run directory: its lock, hostile and damaged folders, remote storage."""
