"""Composer: declarative multimodal fusion models from YAML blueprints."""

from composer.blocks._base import Block, BlockConfig, Context, SpecError
from composer.registry import register_block, register_loss
from composer.blueprint.load import dump_blueprint, load_blueprint
from composer.errors import BlueprintError, ComposerError, DataError
from composer.graph.model import ComposedModel, compile_blueprint
from composer.spec import Spec
from composer import train  # callable package: composer.train(blueprint, ...) trains
from composer.train.evaluation import evaluate
from composer.render import render
from composer import search  # callable package: composer.search(blueprint, ...) searches

__version__ = "0.1.0"

__all__ = [
    "Block",
    "BlockConfig",
    "BlueprintError",
    "ComposedModel",
    "ComposerError",
    "Context",
    "DataError",
    "Spec",
    "SpecError",
    "compile_blueprint",
    "dump_blueprint",
    "evaluate",
    "load_blueprint",
    "register_block",
    "register_loss",
    "train",
    "render",
    "search",
]
