"""MFM's modality decoder ``F_m`` (Tsai et al., ICLR 2019; config, equations and shapes:
:mod:`composer.configs.generative`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.generative import LSTMDecoderConfig
from composer.spec import Spec

__all__ = ["LSTMDecoder"]


class LSTMDecoder(Block):
    """A sequence ``(B, T, D)`` generated from a code ``(B, C)``: the code at step 1, then the
    cell's own output (:class:`~composer.configs.generative.LSTMDecoderConfig`)."""

    def __init__(self, config: LSTMDecoderConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        code, width = int(inputs["code"].features), int(inputs["target"].features)
        self.cell = nn.LSTMCell(code, code)
        self.out = nn.Linear(code, width)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        code, target = inputs["code"], inputs["target"]  # (B, C), (B, T, D)
        h = c = torch.zeros_like(code)
        step, states = code, []
        for _ in range(target.shape[1]):
            h, c = self.cell(step, (h, c))  # (B, C) each
            states.append(h)
            step = h  # the next step reads this step's output
        decoded = self.out(torch.stack(states, dim=1))  # (B, T, C) -> (B, T, D)
        mask = ctx.mask(self.in_specs["target"])
        if self.config.padding == "exclude" and mask is not None:
            decoded = decoded * mask[..., None].to(decoded.dtype)
        return decoded
