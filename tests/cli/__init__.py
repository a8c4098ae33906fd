"""The command line and the Python API as a user runs them."""
