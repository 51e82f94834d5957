"""``post_ln_transformer``: PyTorch's post-LN ``nn.TransformerEncoder`` on a sequence (config,
shapes and equations: :mod:`composer.configs.post_ln_transformer`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.post_ln_transformer import PostLNTransformerConfig
from composer.layers.mult import key_padding
from composer.spec import Spec

__all__ = ["PostLNTransformer"]


class PostLNTransformer(Block):
    """Post-LN ``nn.TransformerEncoder`` (:class:`~composer.configs.post_ln_transformer.PostLNTransformerConfig`)."""

    def __init__(self, config: PostLNTransformerConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        layer = nn.TransformerEncoderLayer(int(self._spec.features), config.heads, config.ff_dim, config.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, d)
        valid = ctx.mask(self._spec)  # (B, T) True = valid, or None
        if valid is None:
            return self.encoder(x)
        out = self.encoder(x, src_key_padding_mask=key_padding(valid))  # padded outputs zeroed below
        return out.masked_fill(~valid[..., None], 0.0)
