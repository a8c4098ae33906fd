# Before anything imports `analysis` or `workloads`: the tool's own packages come from where the tool is
# installed, never from a user's analysis.py in the working directory (workloads/own_packages.py says how that
# happened: for `python -c`, plug-in lookups and every Ray worker). Every entry point of the driver and of a
# Ray worker imports an orchestrator module first.
from workloads.own_packages import pin

pin()
