"""Built-in losses. Importing this package registers them."""

from composer.losses import dlfr, task  # noqa: F401
from composer.losses._base import Loss, LossConfig, parse_ref

__all__ = ["Loss", "LossConfig", "parse_ref"]
