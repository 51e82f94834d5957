"""Built-in loss configs: importing this package registers the loss types."""

from composer.configs.losses import dlfr, representation, task  # noqa: F401
from composer.configs.losses._base import MAIN_VIEW, LossConfig, parse_ref

__all__ = ["LossConfig", "parse_ref", "MAIN_VIEW"]
