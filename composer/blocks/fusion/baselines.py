"""Baseline fusion modules: element-wise sum, gated sum and Tensor Fusion (TFN)
(configs, shapes and equations: :mod:`composer.configs.fusion.baselines`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.fusion.baselines import GatedSumConfig, SumConfig, TensorFusionConfig
from composer.spec import Spec

__all__ = ["SumFusion", "GatedSumFusion", "TensorFusion"]


class SumFusion(Block):
    """Element-wise (optionally weighted) sum (:class:`~composer.configs.fusion.baselines.SumConfig`)."""

    def __init__(self, config: SumConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.weights = nn.Parameter(torch.ones(len(inputs))) if config.weighted else None

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        stacked = torch.stack(list(inputs.values()), dim=0)  # (M, B, [T,] D)
        if self.weights is not None:
            stacked = stacked * self.weights.view(-1, *([1] * (stacked.dim() - 1)))
        return stacked.sum(dim=0)


class GatedSumFusion(Block):
    """Sum with per-feature sigmoid gates from all inputs (:class:`~composer.configs.fusion.baselines.GatedSumConfig`)."""

    def __init__(self, config: GatedSumConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.count = len(inputs)
        width = int(next(iter(inputs.values())).features)
        self.gates = nn.Linear(self.count * width, self.count * width)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        xs = list(inputs.values())
        stacked = torch.stack(xs, dim=-2)  # (B, [T,] M, D)
        gates = torch.sigmoid(self.gates(torch.cat(xs, dim=-1)))  # (B, [T,] M·D)
        gates = gates.unflatten(-1, (self.count, -1))  # (B, [T,] M, D)
        return (gates * stacked).sum(dim=-2)


class TensorFusion(Block):
    """Tensor Fusion, ``[x_1; 1] ⊗ … ⊗ [x_M; 1]`` flattened (:class:`~composer.configs.fusion.baselines.TensorFusionConfig`)."""

    config: TensorFusionConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        fused = None
        for x in inputs.values():  # x: (B, D_m)
            ones = x.new_ones(x.shape[0], 1)
            x1 = torch.cat([x, ones] if self.config.one == "last" else [ones, x], dim=1)  # (B, D_m + 1)
            # (B, P) ⊗ (B, D_m + 1) -> (B, P, D_m + 1) -> (B, P·(D_m + 1))
            fused = x1 if fused is None else (fused[:, :, None] * x1[:, None, :]).flatten(1)
        return fused
