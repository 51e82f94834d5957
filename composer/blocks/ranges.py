"""Bounded outputs (config and equation: :mod:`composer.configs.ranges`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.configs.ranges import SigmoidRangeConfig

__all__ = ["SigmoidRange"]


class SigmoidRange(Block):
    """``low + (high - low) · σ(x)`` (:class:`~composer.configs.ranges.SigmoidRangeConfig`)."""

    config: SigmoidRangeConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return torch.sigmoid(x) * (self.config.high - self.config.low) + self.config.low
