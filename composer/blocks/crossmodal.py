"""Crossmodal transformer (MulT, Tsai et al., ACL 2019): a target sequence attends to a source.

``{target: (B, T_tgt, D_t), source: (B, T_src, D_s)} -> (B, T_tgt, d)``. Written on
:class:`composer.layers.mult.MulTEncoder`, the faithful MulT transformer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind
from composer.blocks._registry import register_block
from composer.graph.spec import Spec, sequence
from composer.layers.mult import MulTEncoder

__all__ = ["CrossmodalConfig", "CrossmodalTransformer", "key_padding", "crossmodal_encoder"]


class CrossmodalConfig(BlockConfig):
    type: Literal["crossmodal"] = "crossmodal"
    dim: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Model width d. An input whose width differs is first mapped to d by a bias-free Linear "
            "(MulT's Conv1d with kernel 1); default: the target's width."
        ),
    )
    heads: int = Field(default=5, ge=1, description="Attention heads; must divide d.")
    layers: int = Field(default=5, ge=1, description="Number of crossmodal attention layers.")
    attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    relu_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout after the feed-forward ReLU.")
    res_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on each residual branch.")
    embed_dropout: float = Field(
        default=0.25, ge=0.0, lt=1.0, description="Dropout on the scaled, position-encoded target and source."
    )
    causal: bool = Field(default=False, description="Mask attention to future steps (MulT's attn_mask).")
    positions: bool = Field(default=True, description="Add sinusoidal position embeddings to the scaled inputs.")


def crossmodal_encoder(dim: int, config: CrossmodalConfig | object, layers: int | None = None) -> MulTEncoder:
    """A :class:`MulTEncoder` with the heads, dropouts, causal and positions fields of ``config``."""
    return MulTEncoder(
        dim,
        config.heads,
        layers if layers is not None else config.layers,
        attn_dropout=config.attn_dropout,
        relu_dropout=config.relu_dropout,
        res_dropout=config.res_dropout,
        embed_dropout=config.embed_dropout,
        causal=config.causal,
        positions=config.positions,
    )


def key_padding(valid: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, T)`` True = valid -> ``(B, T)`` True = PAD (MulT's convention), or None.

    A sample without any valid step would leave every attention row empty (NaN); it may
    attend everywhere instead (its outputs are meaningless and masked by the caller).
    """
    if valid is None:
        return None
    return ~valid & valid.any(dim=1, keepdim=True)


@register_block(CrossmodalConfig, family="fusion")
class CrossmodalTransformer(Block):
    """Crossmodal transformer ``CM(source → target)``: ``{target (B, Tt, Dt), source (B, Ts, Ds)} -> (B, Tt, d)``.

    MulT §3.2, eq. (3)-(4): for each layer ``i``,
    ``Ẑ = CM(LN(Z^{i-1}), LN(X_src)) + Z^{i-1}``, ``Z^i = f(LN(Ẑ)) + Ẑ`` with the query from the
    target and key/value from the (fixed, layer-independent) source, as in the public code:
    ``√d`` input scaling, sinusoidal positions, embedding dropout, one LayerNorm shared by
    query/key/value, ReLU feed-forward ``d → 4d → d``, final LayerNorm, optional causal mask.

    Padding: the source's mask is the key padding mask (padded source steps are never
    attended to), padded target steps are set to zero in the output; the output keeps the
    target's time symbol (hence its mask). Inputs of width ``≠ d`` are projected by a
    bias-free Linear first. Parameters: projections ``D·d`` each (if any) ``+ layers·(12d² + 13d) + 2d``.
    """

    @classmethod
    def infer(cls, config: CrossmodalConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"target", "source"}:
            raise SpecError(
                f"crossmodal takes a mapping with ports 'target' and 'source', got {sorted(inputs)}", field="in"
            )
        for port in ("target", "source"):
            expect_kind(port, inputs[port], "sequence")
        width = config.dim or int(inputs["target"].features)
        if width % config.heads:
            raise SpecError(
                f"model width {width} is not divisible by heads={config.heads}"
                + ("" if config.dim else " (the width is the target's; set `dim` to project it)"),
                field="heads",
            )
        return {"out": inputs["target"].with_features(width)}

    @classmethod
    def examples(cls):
        return [
            ({"heads": 2, "layers": 1}, {"target": sequence("T_a", 4), "source": sequence("T_b", 4)}),
            (
                {"dim": 6, "heads": 3, "layers": 2, "attn_dropout": 0.1, "causal": True},
                {"target": sequence("T_a", 5), "source": sequence("T_b", 3)},
            ),
            ({"heads": 2, "layers": 1, "positions": False}, {"target": sequence(7, 4), "source": sequence("T_b", 2)}),
        ]

    def __init__(self, config: CrossmodalConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self._target, self._source = inputs["target"], inputs["source"]
        width = int(self.out_specs["out"].features)
        self.project_target = _projection(int(self._target.features), width)
        self.project_source = _projection(int(self._source.features), width)
        self.encoder = crossmodal_encoder(width, config)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        target = self.project_target(inputs["target"])  # (B, Tt, d)
        source = self.project_source(inputs["source"])  # (B, Ts, d)
        out = self.encoder(target, source, key_padding_mask=key_padding(ctx.mask(self._source)))  # (B, Tt, d)
        valid = ctx.mask(self._target)
        return out if valid is None else out.masked_fill(~valid[..., None], 0.0)


def _projection(width_in: int, width: int) -> nn.Module:
    return nn.Linear(width_in, width, bias=False) if width_in != width else nn.Identity()
