"""Self-attention transformer encoder on a sequence (the MulT transformer, self-attention only)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind, expect_ports
from composer.blocks._registry import register_block
from composer.graph.spec import Spec, sequence
from composer.layers.mult import MulTEncoder

__all__ = ["TransformerConfig", "TransformerEncoder"]


class TransformerConfig(BlockConfig):
    type: Literal["transformer"] = "transformer"
    dim: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Model width d. When given and different from the input width, a bias-free Linear map "
            "(MulT's Conv1d with kernel 1) projects the input first; default: the input width."
        ),
    )
    heads: int = Field(default=4, ge=1, description="Attention heads; must divide the model width.")
    layers: int = Field(default=2, ge=1, description="Number of transformer layers.")
    attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    relu_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after the feed-forward ReLU.")
    res_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on each residual branch.")
    embed_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout on the scaled, position-encoded input."
    )
    causal: bool = Field(default=False, description="Mask attention to future steps.")
    positions: bool = Field(default=True, description="Add sinusoidal position embeddings to the scaled input.")


@register_block(TransformerConfig, family="encoder")
class TransformerEncoder(Block):
    """Self-attention encoder: ``sequence (B, T, D) -> (B, T, d)``.

    ``x -> [Linear(D, d, bias=False) if d != D] -> MulTEncoder(d, heads, layers)``: inputs
    scaled by ``√d`` plus sinusoidal positions, pre-LN layers of multi-head self-attention and
    a ``d -> 4d -> d`` ReLU feed-forward, final LayerNorm (see :mod:`composer.layers.mult`).
    The input projection is MulT's ``Conv1d(D, d, kernel_size=1, bias=False)``, written as the
    equivalent Linear on the feature axis.

    The padding mask of the input's time axis is passed as the key padding mask, so padded
    steps are never attended to and valid outputs do not depend on them; padded output
    steps are set to zero. The time symbol (and mask) is kept.
    Parameters: ``D·d`` (projection, if any) ``+ layers·(12d² + 13d) + 2d``.
    """

    @classmethod
    def infer(cls, config: TransformerConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        width = config.dim or int(spec.features)
        if width % config.heads:
            raise SpecError(
                f"model width {width} is not divisible by heads={config.heads}"
                + ("" if config.dim else " (the width is the input's; set `dim` to project it)"),
                field="heads",
            )
        return {"out": spec.with_features(width)}

    @classmethod
    def examples(cls):
        return [
            ({"heads": 2, "layers": 1}, {"in": sequence("T_x", 4)}),
            (
                {"dim": 6, "heads": 3, "layers": 2, "attn_dropout": 0.1, "relu_dropout": 0.1, "res_dropout": 0.1,
                 "embed_dropout": 0.1, "causal": True},
                {"in": sequence("T_x", 5)},
            ),
            ({"dim": 4, "heads": 2, "layers": 1, "positions": False}, {"in": sequence(7, 3)}),
        ]

    def __init__(self, config: TransformerConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        width_in = int(self._spec.features)
        width = config.dim or width_in
        self.project = nn.Linear(width_in, width, bias=False) if width != width_in else nn.Identity()
        self.encoder = MulTEncoder(
            width,
            config.heads,
            config.layers,
            attn_dropout=config.attn_dropout,
            relu_dropout=config.relu_dropout,
            res_dropout=config.res_dropout,
            embed_dropout=config.embed_dropout,
            causal=config.causal,
            positions=config.positions,
        )

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        x = self.project(x)  # (B, T, d)
        valid = ctx.mask(self._spec)  # (B, T) True = valid, or None
        if valid is None:
            return self.encoder(x)
        # A sample without any valid step would make every attention row empty (NaN): let it
        # attend everywhere; its outputs are zeroed below anyway.
        padding = ~valid & valid.any(dim=1, keepdim=True)  # (B, T) True = PAD, MulT's convention
        out = self.encoder(x, key_padding_mask=padding)
        return out.masked_fill(~valid[..., None], 0.0)
