"""Blueprint language: schema, YAML loading with line numbers, overrides and error paths."""

from composer.blueprint.load import dump_blueprint, load_blueprint

__all__ = ["load_blueprint", "dump_blueprint"]
