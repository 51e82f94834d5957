"""Composer: declarative multimodal fusion models from YAML blueprints.

Importing ``composer`` imports no PyTorch: blueprints, their checks and the block configs are
torch-free. The names that need torch (``Block``, ``Context``, ``compile_blueprint``,
``ComposedModel``, ``train``, ``evaluate``, ``search``) are imported on first use.
"""

import importlib

from composer.blueprint.check import CheckedBlueprint
from composer.blueprint.load import dump_blueprint, load_blueprint
from composer.configs._base import BlockConfig, SpecError
from composer.errors import BlueprintError, ComposerError, DataError
from composer.registry import block_type, loss_type, register_block, register_loss
from composer.spec import Spec

__version__ = "0.1.0"

__all__ = [
    "Block",
    "BlockConfig",
    "BlueprintError",
    "CheckedBlueprint",
    "ComposedModel",
    "ComposerError",
    "Context",
    "DataError",
    "Spec",
    "SpecError",
    "block_type",
    "compile_blueprint",
    "dump_blueprint",
    "evaluate",
    "load_blueprint",
    "load_model",
    "loss_type",
    "register_block",
    "register_loss",
    "train",
    "render",
    "search",
]

#: Public names imported on first use: name -> (module, attribute or None for the module itself).
_LAZY = {
    "Block": ("composer.blocks._base", "Block"),
    "Context": ("composer.blocks._base", "Context"),
    "ComposedModel": ("composer.graph.model", "ComposedModel"),
    "compile_blueprint": ("composer.graph.model", "compile_blueprint"),
    "load_model": ("composer.blueprint.weights", "load_model"),
    "evaluate": ("composer.train.evaluation", "evaluate"),
    "train": ("composer.train", None),  # callable package: composer.train(blueprint, ...) trains
    "search": ("composer.search", None),  # callable package: composer.search(blueprint, ...) searches
    "render": ("composer.render", None),  # callable package: composer.render(blueprint, ...) draws
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'composer' has no attribute '{name}'")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
