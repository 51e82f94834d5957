"""GLoMo unimodal coding modules (§3.3, eqs. 1-4): a global and ``n`` local representations per
modality (configs, shapes and equations: :mod:`composer.configs.glomo.coding`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context
from composer.blocks.pooling import masked_pool
from composer.configs.glomo.coding import GLoMoCodingConfig, GLoMoTextCodingConfig
from composer.registry import get_block
from composer.spec import Spec

__all__ = ["GLoMoTextCoding", "GLoMoCoding"]


def _sub_block(config: BlockConfig, spec: Spec) -> Block:
    """Build a registered block on one input spec (composite blocks reuse the plain ones)."""
    return get_block(config.type).impl(config, {"in": spec})


class _LocalPool(nn.Module):
    """``sequence (B, T, d) -> (B, n·d)``: adaptive max pooling to n steps, then concatenation."""

    def __init__(self, config: BlockConfig, spec: Spec):
        super().__init__()
        self.pool = _sub_block(config, spec)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        pooled = self.pool({"in": x}, ctx)  # (B, n, d)
        return pooled.flatten(1)  # (B, n, d) -> (B, n·d)


class GLoMoTextCoding(Block):
    """GLoMo text coding, eqs. 1-2 (:class:`~composer.configs.glomo.coding.GLoMoTextCodingConfig`)."""

    def __init__(self, config: GLoMoTextCodingConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        layers = inputs["layers"]
        self.global_proj = nn.Linear(int(inputs["cls"].features), config.dim)
        self.conv = _sub_block(config.conv_config(), layers)
        self.local_pool = _LocalPool(config.pool_config(), self.conv.out_specs["out"])

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        local = self.conv({"in": inputs["layers"]}, ctx)  # (B, T', H) -> (B, T', d)
        return {"global": self.global_proj(inputs["cls"]), "local": self.local_pool(local, ctx)}


class GLoMoCoding(Block):
    """GLoMo audio/vision coding, eqs. 3-4 (:class:`~composer.configs.glomo.coding.GLoMoCodingConfig`)."""

    def __init__(self, config: GLoMoCodingConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (spec,) = inputs.values()
        self.conv = _sub_block(config.conv_config(), spec)
        hidden = self.conv.out_specs["out"]
        encoder = config.encoder_config()
        self.encoder = _sub_block(encoder, hidden) if encoder is not None else None
        self._hidden_spec = hidden
        self.local_pool = _LocalPool(config.pool_config(), hidden)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()  # (B, T, D)
        h = self.conv({"in": x}, ctx)  # (B, T, d)
        if self.encoder is not None:
            h = self.encoder({"in": h}, ctx)  # (B, T, d)
        valid = ctx.mask(self._hidden_spec)
        global_ = masked_pool(h, valid, "max")  # (B, d), eq. 3
        seq = h if valid is None else h.masked_fill(~valid[..., None], 0.0)  # the encoded sequence, padding zeroed
        return {"global": global_, "local": self.local_pool(h, ctx), "seq": seq}  # eq. 4
