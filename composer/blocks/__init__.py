"""Built-in block modules, one block family per module (composite paper operators under
``fusion/`` and ``glomo/``). Their configs, which register the types, are in
:mod:`composer.configs`; a module here is imported when a model using it is built.
"""

from composer.blocks._base import Block, BlockConfig, Context, SpecError
from composer.registry import get_block, list_blocks, register_block

__all__ = ["Block", "BlockConfig", "Context", "SpecError", "register_block", "get_block", "list_blocks"]
