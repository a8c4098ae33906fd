"""Sweep configs: the schema, the built-ins and the user's own code that a config names."""
