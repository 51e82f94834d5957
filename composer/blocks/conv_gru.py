"""Feature projection of HCT-MG (§4): a 1-D convolution to the hidden width, then a GRU
(config, shapes and equations: :mod:`composer.configs.conv_gru`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.blocks.projection import Conv1dProjection
from composer.blocks.recurrent import GRUEncoder
from composer.configs.conv_gru import ConvGRUConfig
from composer.registry import get_block
from composer.spec import Spec

__all__ = ["ConvGRU"]


class ConvGRU(Block):
    """``conv1d`` then ``gru`` on one sequence (:class:`~composer.configs.conv_gru.ConvGRUConfig`)."""

    def __init__(self, config: ConvGRUConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        # the classes through the registry, which attaches their type names (used by repr)
        conv_class: type[Conv1dProjection] = get_block("conv1d").impl
        gru_class: type[GRUEncoder] = get_block("gru").impl
        self.conv = conv_class(config.conv_config(), inputs)
        self.gru = gru_class(config.gru_config(), self.conv.out_specs)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        h = self.conv({"in": x}, ctx)  # (B, T', d)
        return self.gru({"in": h}, ctx)  # (B, T', d)
