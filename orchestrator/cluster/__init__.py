"""Ray itself: starting or joining it (ray_env.py), what the cluster can run (resources.py), the user's code shipped
to its workers (shipping.py), and a killed run's leftover local Ray (ray_leftovers.py)."""
