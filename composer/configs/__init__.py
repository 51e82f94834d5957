"""Block and loss configs: the YAML side of every built-in type, free of PyTorch.

Importing this package imports every config module, which registers the built-in block and
loss types (their modules, in :mod:`composer.blocks` and :mod:`composer.losses`, are imported
when a model is built). ``composer validate``, ``schema``, ``blocks`` and ``render`` need no
more than this package, so they never import torch.
"""

import importlib
import pkgutil

from composer.configs._base import BlockConfig, SpecError
from composer.configs.losses._base import LossConfig

__all__ = ["BlockConfig", "LossConfig", "SpecError"]


def _import_all() -> None:
    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)


_import_all()
