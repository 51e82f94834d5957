"""Concatenation fusion module (config and shapes: :mod:`composer.configs.fusion.concat`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.configs.fusion.concat import ConcatConfig

__all__ = ["Concat"]


class Concat(Block):
    """Concatenate inputs along features (:class:`~composer.configs.fusion.concat.ConcatConfig`)."""

    config: ConcatConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        return torch.cat(list(inputs.values()), dim=-1)
