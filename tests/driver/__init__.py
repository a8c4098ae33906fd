"""Sweeps on real Ray Tune: runs, resumes, faults, histories and what Tune's tools see."""
