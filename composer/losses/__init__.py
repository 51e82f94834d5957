"""Built-in loss modules (their configs, which register the types, are in :mod:`composer.configs.losses`)."""

from composer.losses._base import Loss, LossConfig, parse_ref

__all__ = ["Loss", "LossConfig", "parse_ref"]
