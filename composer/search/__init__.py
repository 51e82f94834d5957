"""Architecture search over a blueprint's ``search.space`` with Optuna.

``composer.search(blueprint, ...)`` runs :func:`composer.search.study.search` (this package is
callable, like ``composer.train``). Optuna is imported on first use, not with ``composer``.
"""

from __future__ import annotations

import importlib

from composer._callable import make_callable

__all__ = ["SearchResult", "search"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("composer.search.study"), name)
    raise AttributeError(f"module 'composer.search' has no attribute '{name}'")


make_callable(__name__, "composer.search.study:search")
