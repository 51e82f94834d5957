"""One budget for everything a small blueprint can ask Composer to grow.

A blueprint is a few kilobytes, but YAML aliases, ``--set`` values, template uses, string
interpolation and layer counts can each turn a few characters into gigabytes or hours. Every
such growth is bounded by one :class:`Limit` below, checked *before* the work it bounds, and a
refusal names the limit, the value found and the environment variable that raises it::

    blocks.enc.layers: 1,000,000 layers is above the limit of 1,000 (set COMPOSER_MAX_LAYERS to raise it)

The training-memory budget (``COMPOSER_MAX_MEMORY``) lives with the size estimate
(:func:`composer.graph.size.memory_budget`). ``docs/guarantees.md`` lists every limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from composer.errors import ComposerError

__all__ = [
    "Limit", "LIMITS", "YAML_CHARS", "VALUES", "DEPTH", "TEXT_CHARS", "BLOCKS", "LAYERS", "WIDTH", "TENSORS", "OUTPUTS",
    "IMPORT_PATH", "ANY_IMPORT", "RATES",
]


@dataclass(frozen=True)
class Limit:
    """A bound on one kind of growth: ``unit`` counts it, ``env`` raises it, ``default`` applies otherwise."""

    env: str
    default: int
    unit: str
    what: str

    def value(self) -> int:
        """The bound in force: ``$env`` when set (a positive integer, ``_`` allowed), else ``default``."""
        text = os.environ.get(self.env, "").strip().replace("_", "").replace(",", "")
        if not text:
            return self.default
        if not text.isdigit() or len(text) > 18 or int(text) < 1:
            raise ComposerError(f"{self.env}={os.environ[self.env]!r}: expected a positive whole number (default {self.default:,})")
        return int(text)

    def exceeded(self, found: int | str, limit: int | None = None) -> str:
        """The refusal's words: the value found, the limit and the setting that raises it."""
        shown = f"{found:,}" if isinstance(found, int) else found
        return f"{shown}{' ' + self.unit if self.unit else ''} is above the limit of {self.value() if limit is None else limit:,} (set {self.env} to raise it)"


    def check(self, value: int) -> int:
        """``value`` when within the limit, else a ValueError (a Pydantic validator's) saying so."""
        if value > self.value():
            raise ValueError(self.exceeded(value))
        return value


#: Characters of one blueprint text (a file, a ``--set`` value, a stored blueprint) and of all its imported files together.
YAML_CHARS = Limit("COMPOSER_MAX_YAML_CHARS", 1_000_000, "characters", "characters of a blueprint and its imported files together")
#: Values (mappings, lists, scalars) after YAML aliases are expanded: the blueprint, its imports and ``--set`` values together.
VALUES = Limit("COMPOSER_MAX_VALUES", 200_000, "values", "values after YAML aliases, over the blueprint, its imports and --set values")
#: Nesting depth of values.
DEPTH = Limit("COMPOSER_MAX_DEPTH", 64, "levels", "levels of nesting")
#: Characters of one string built by ``${...}`` interpolation.
TEXT_CHARS = Limit("COMPOSER_MAX_TEXT_CHARS", 100_000, "characters", "characters of a string after ${...} interpolation")
#: Blocks after every template use is expanded (over every import and use, however nested).
BLOCKS = Limit("COMPOSER_MAX_BLOCKS", 5_000, "blocks", "blocks after template expansion")
#: A count of repeated layers in one block field (``layers``, ``stages``, ``experts``...) or list of widths.
LAYERS = Limit("COMPOSER_MAX_LAYERS", 1_000, "layers", "layers (or stages, experts, list entries) in one block field")
#: Any other integer of a block config (widths, heads, kernels, vocabularies...).
WIDTH = Limit("COMPOSER_MAX_WIDTH", 2**31, "", "the value of any other integer field of a block (widths, heads, vocabularies)")
#: Parameter tensors listed for the size estimate, over all blocks and losses.
TENSORS = Limit("COMPOSER_MAX_TENSORS", 200_000, "parameter tensors", "parameter tensors over the whole model")

#: Regression outputs, classes or labels of the task (metrics are named and kept per output).
OUTPUTS = Limit("COMPOSER_MAX_OUTPUTS", 10_000, "outputs", "regression outputs, classes or labels of the task")

#: Missing rates of one sweep (``--missing-rates``, ``--rates``): each is a full pass over a split.
RATES = Limit("COMPOSER_MAX_RATES", 1_000, "rates", "missing rates of one sweep")

LIMITS = (YAML_CHARS, VALUES, DEPTH, TEXT_CHARS, BLOCKS, LAYERS, WIDTH, TENSORS, OUTPUTS, RATES)

#: Folders (separated by ``os.pathsep``) besides the blueprint's own where ``imports:`` may read template files.
IMPORT_PATH = "COMPOSER_IMPORT_PATH"
#: ``1`` lets ``imports:`` read template files anywhere (absolute paths, ``..`` out of the allowed folders).
ANY_IMPORT = "COMPOSER_ALLOW_ANY_IMPORT"
