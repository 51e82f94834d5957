"""Built-in blocks. Importing this package imports every block module, which registers it.

One block family per module; composite paper operators live under ``fusion/`` and friends.
"""

import importlib
import pkgutil

from composer.blocks._base import Block, BlockConfig, Context, SpecError
from composer.registry import get_block, list_blocks, register_block

__all__ = ["Block", "BlockConfig", "Context", "SpecError", "register_block", "get_block", "list_blocks"]


def _import_all() -> None:
    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)


_import_all()
