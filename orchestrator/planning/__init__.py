"""What a sweep will do, decided before any job runs and without Ray: the plan from the run directory's tables
(plan.py), the jobs and their keys (jobs.py), the cohorts (cohorts.py), the costs that order them (cost.py,
run_facts.py), a cell's spec (cells.py) and the GPU-hours estimate (estimate.py, gpu_rates.py)."""
