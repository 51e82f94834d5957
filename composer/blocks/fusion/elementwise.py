"""Element-wise combination modules: ``weighted_sum`` and ``product``
(configs, shapes and equations: :mod:`composer.configs.fusion.elementwise`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.blocks.routing import broadcast_weight
from composer.configs.fusion.elementwise import WEIGHTS, ProductConfig, WeightedSumConfig, is_factor
from composer.spec import Spec

__all__ = ["WeightedSum", "Product"]


class WeightedSum(Block):
    """``Σ_m weights[:, m] · x_m`` (:class:`~composer.configs.fusion.elementwise.WeightedSumConfig`)."""

    def __init__(self, config: WeightedSumConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports = [p for p in inputs if p != WEIGHTS]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        stacked = torch.stack([inputs[p] for p in self.ports], dim=1)  # (B, M, [T,] D)
        weights = inputs[WEIGHTS]  # (B, M)
        return (weights.view(*weights.shape, *([1] * (stacked.dim() - 2))) * stacked).sum(dim=1)


class Product(Block):
    """Element-wise product ``x_1 ⊙ … ⊙ x_M``, ``(B, 1)`` factors broadcast
    (:class:`~composer.configs.fusion.elementwise.ProductConfig`)."""

    def __init__(self, config: ProductConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        factors = [p for p, s in inputs.items() if is_factor(s)]
        self.full = [p for p in inputs if p not in factors] or factors[:1]
        self.factors = [p for p in factors if p not in self.full]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        out = torch.stack([inputs[p] for p in self.full], dim=1).prod(dim=1)  # (B, M, [T,] D) -> (B, [T,] D)
        for port in self.factors:
            out = broadcast_weight(inputs[port], out)
        return out
