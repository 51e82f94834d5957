"""Crossmodal transformer (MulT, Tsai et al., ACL 2019): a target sequence attends to a source
(config, shapes and equations: :mod:`composer.configs.crossmodal`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.blocks.transformer import input_projection
from composer.configs.crossmodal import CrossmodalConfig
from composer.layers.mult import encoder_from, key_padding
from composer.spec import Spec

__all__ = ["CrossmodalTransformer"]


class CrossmodalTransformer(Block):
    """MulT crossmodal transformer ``CM(source → target)`` (:class:`~composer.configs.crossmodal.CrossmodalConfig`)."""

    def __init__(self, config: CrossmodalConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self._target, self._source = inputs["target"], inputs["source"]
        width = int(self.out_specs["out"].features)
        self.project_target = input_projection(int(self._target.features), width)
        self.project_source = input_projection(int(self._source.features), width)
        self.encoder = encoder_from(width, config)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        target = self.project_target(inputs["target"])  # (B, Tt, d)
        source = self.project_source(inputs["source"])  # (B, Ts, d)
        out = self.encoder(target, source, key_padding_mask=key_padding(ctx.mask(self._source)))  # (B, Tt, d)
        valid = ctx.mask(self._target)
        return out if valid is None else out.masked_fill(~valid[..., None], 0.0)
