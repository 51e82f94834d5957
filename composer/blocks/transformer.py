"""Self-attention transformer encoder on a sequence (the MulT transformer, self-attention only;
config, shapes and equations: :mod:`composer.configs.transformer`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.transformer import TransformerConfig
from composer.layers.mult import encoder_from, key_padding
from composer.spec import Spec

__all__ = ["TransformerEncoder", "input_projection"]


def input_projection(width_in: int, width: int) -> nn.Module:
    """MulT's ``Conv1d(D, d, kernel_size=1, bias=False)`` as the equivalent Linear, or identity."""
    return nn.Linear(width_in, width, bias=False) if width_in != width else nn.Identity()


class TransformerEncoder(Block):
    """MulT self-attention encoder on a sequence (:class:`~composer.configs.transformer.TransformerConfig`)."""

    def __init__(self, config: TransformerConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        width = int(self.out_specs["out"].features)
        self.project = input_projection(int(self._spec.features), width)
        self.encoder = encoder_from(width, config)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        x = self.project(x)  # (B, T, d)
        valid = ctx.mask(self._spec)  # (B, T) True = valid, or None
        if valid is None:
            return self.encoder(x)
        out = self.encoder(x, key_padding_mask=key_padding(valid))  # padded outputs zeroed below
        return out.masked_fill(~valid[..., None], 0.0)
