"""Low-rank Multimodal Fusion (config, equations and shapes: :mod:`composer.configs.fusion.low_rank`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.fusion.low_rank import LowRankFusionConfig
from composer.spec import Spec

__all__ = ["LowRankFusion"]


class LowRankFusion(Block):
    """``h = Σ_i λ_i ⊙_m ([z_m; 1] · w_m^{(i)}) + b`` (:class:`~composer.configs.fusion.low_rank.LowRankFusionConfig`)."""

    config: LowRankFusionConfig

    def __init__(self, config: LowRankFusionConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.factors = nn.ParameterDict(
            {port: nn.Parameter(torch.empty(config.rank, int(spec.features) + 1, config.out)) for port, spec in inputs.items()}
        )
        self.weights = nn.Parameter(torch.empty(1, config.rank))
        self.bias = nn.Parameter(torch.zeros(1, config.out))
        for factor in self.factors.values():
            nn.init.xavier_normal_(factor)
        nn.init.xavier_normal_(self.weights)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        product = None
        for port, z in inputs.items():  # z: (B, D_m)
            ones = z.new_ones(z.shape[0], 1)
            z1 = torch.cat([z, ones] if self.config.one == "last" else [ones, z], dim=1)  # (B, D_m + 1)
            term = torch.matmul(z1, self.factors[port])  # (B, D_m+1) @ (r, D_m+1, out) -> (r, B, out)
            product = term if product is None else product * term
        # Σ_i λ_i · product_i: (1, r) @ (B, r, out) -> (B, 1, out)
        return torch.matmul(self.weights, product.transpose(0, 1)).squeeze(1) + self.bias  # (B, out)
