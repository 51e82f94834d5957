"""Projection modules: a Linear map on the feature axis and a 1-D convolution over time
(configs, shapes and equations: :mod:`composer.configs.projection`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Block, Context, length_mask
from composer.blocks.heads import ACTIVATIONS
from composer.configs.projection import Conv1dConfig, LinearConfig
from composer.spec import Spec

__all__ = ["LinearProjection", "Conv1dProjection"]


class LinearProjection(Block):
    """``LN(Dropout(act(x Wᵀ + b)))`` on the last axis (:class:`~composer.configs.projection.LinearConfig`)."""

    def __init__(self, config: LinearConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (spec,) = inputs.values()
        self.linear = nn.Linear(int(spec.features), config.out, bias=config.bias)
        self.activation = ACTIVATIONS[config.activation]() if config.activation else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.out) if config.norm else nn.Identity()

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, D) or (B, T, D)
        return self.norm(self.dropout(self.activation(self.linear(x))))


class Conv1dProjection(Block):
    """1-D convolution over time, padded steps zeroed first (:class:`~composer.configs.projection.Conv1dConfig`)."""

    def __init__(self, config: Conv1dConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        self.conv = nn.Conv1d(
            int(self._spec.features), config.out, config.kernel, stride=config.stride,
            dilation=config.dilation, bias=config.bias,
        )

    def _pads(self, time: int) -> tuple[int, int]:
        """(left, right) zero padding for a length ``time``."""
        c = self.config
        span = c.dilation * (c.kernel - 1)
        if c.padding == "same":
            target = -(-time // c.stride)  # ceil(time / stride) in integers (a traced length stays exportable)
            total = max((target - 1) * c.stride + span + 1 - time, 0)
            return total // 2, total - total // 2
        pad = 0 if c.padding == "valid" else int(c.padding)
        return pad, pad

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        mask = ctx.mask(self._spec)
        if mask is not None:
            x = x.masked_fill(~mask[..., None], 0.0)
        left, right = self._pads(x.shape[1])
        h = F.pad(x.transpose(1, 2), (left, right))  # (B, D, T) -> (B, D, left + T + right)
        out = self.conv(h).transpose(1, 2)  # (B, d, T') -> (B, T', d)
        new_time = self.out_specs["out"].time
        if mask is not None and new_time != self._spec.time:  # a symbol T±n: L±n valid steps (at least 1)
            shift = out.shape[1] - x.shape[1]
            ctx.masks[new_time] = length_mask((mask.sum(1) + shift).clamp(min=1), out.shape[1])
        return out
