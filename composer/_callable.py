"""Packages that can be called like their main function (``composer.train(...)``, ``composer.search(...)``).

The Python API then reads like the CLI while the package's modules stay importable
(``composer.blueprint.training``, ``composer.search.study``). The function is imported on the first call.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["make_callable"]


class _CallablePackage(types.ModuleType):
    _call_target: str

    def __call__(self, *args, **kwargs):
        module, _, name = self._call_target.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


def make_callable(package: str, target: str) -> None:
    """Make the package ``package`` callable as ``target`` (``"module.path:function"``)."""
    module = sys.modules[package]
    module.__class__ = _CallablePackage
    module._call_target = target
