"""Feature projection of HCT-MG (§4): a 1-D convolution to the hidden width, then a GRU
(config, shapes and equations: :mod:`composer.configs.conv_gru`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.blocks.projection import Conv1dProjection
from composer.blocks.recurrent import GRUEncoder
from composer.configs.conv_gru import ConvGRUConfig
from composer.spec import Spec

__all__ = ["ConvGRU"]


class ConvGRU(Block):
    """``conv1d`` then ``gru`` on one sequence (:class:`~composer.configs.conv_gru.ConvGRUConfig`)."""

    def __init__(self, config: ConvGRUConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.conv = Conv1dProjection(config.conv_config(), inputs)
        self.gru = GRUEncoder(config.gru_config(), self.conv.out_specs)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        h = self.conv({"in": x}, ctx)  # (B, T', d)
        return self.gru({"in": h}, ctx)  # (B, T', d)
