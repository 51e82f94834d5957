"""CLI command modules; each defines ``register(app)``. Discovered by :mod:`composer.cli`."""
