"""Self-attention transformer encoder on a sequence (the MulT transformer, self-attention only)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind, expect_ports
from composer.registry import register_block
from composer.spec import Spec, sequence
from composer.layers.mult import encoder_from, key_padding

__all__ = ["MulTLayerSettings", "MulTSettings", "TransformerConfig", "TransformerEncoder", "model_width", "input_projection"]


class MulTLayerSettings(BlockConfig):
    """Fields of the MulT transformer layers, shared by every block built on them
    (``transformer``, ``crossmodal``, ``hierarchical_crossmodal``); read by
    :func:`composer.layers.mult.encoder_from`."""

    heads: int = Field(default=4, ge=1, description="Attention heads; must divide the model width.")
    layers: int = Field(default=2, ge=1, description="Number of transformer layers.")
    attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    relu_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after the feed-forward ReLU.")
    res_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on each residual branch.")
    embed_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the scaled, position-encoded inputs.")
    causal: bool = Field(default=False, description="Mask attention to future steps (MulT's attn_mask).")
    positions: bool = Field(default=True, description="Add sinusoidal position embeddings to the scaled inputs.")


class MulTSettings(MulTLayerSettings):
    """Layer settings plus the model width, for blocks that project their inputs to it."""

    dim: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Model width d. An input whose width differs is first mapped to d by a bias-free Linear "
            "(MulT's Conv1d with kernel 1); default: the (target) input's width."
        ),
    )


def model_width(config: MulTSettings, spec: Spec, what: str = "input") -> int:
    """``dim`` or the input's width, checked against ``heads`` (raises SpecError)."""
    width = config.dim or int(spec.features)
    if width % config.heads:
        raise SpecError(
            f"model width {width} is not divisible by heads={config.heads}"
            + ("" if config.dim else f" (the width is the {what}'s; set `dim` to project it)"),
            field="heads",
        )
    return width


def input_projection(width_in: int, width: int) -> nn.Module:
    """MulT's ``Conv1d(D, d, kernel_size=1, bias=False)`` as the equivalent Linear, or identity."""
    return nn.Linear(width_in, width, bias=False) if width_in != width else nn.Identity()


class TransformerConfig(MulTSettings):
    type: Literal["transformer"] = "transformer"


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
        return {"out": spec.with_features(model_width(config, spec))}

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
