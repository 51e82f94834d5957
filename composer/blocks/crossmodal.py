"""Crossmodal transformer (MulT, Tsai et al., ACL 2019): a target sequence attends to a source.

``{target: (B, T_tgt, D_t), source: (B, T_src, D_s)} -> (B, T_tgt, d)``. Written on
:class:`composer.layers.mult.MulTEncoder`, the faithful MulT transformer.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from composer.blocks._base import Block, Context, SpecError, expect_kind
from composer.registry import register_block
from composer.spec import Spec, sequence
from composer.blocks.transformer import MulTSettings, input_projection, model_width
from composer.layers.mult import encoder_from, key_padding

__all__ = ["CrossmodalConfig", "CrossmodalTransformer"]


class CrossmodalConfig(MulTSettings):
    type: Literal["crossmodal"] = "crossmodal"
    # MulT's defaults for its crossmodal transformers
    heads: int = Field(default=5, ge=1, description="Attention heads; must divide d.")
    layers: int = Field(default=5, ge=1, description="Number of crossmodal attention layers.")
    relu_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout after the feed-forward ReLU.")
    res_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on each residual branch.")
    embed_dropout: float = Field(default=0.25, ge=0.0, lt=1.0, description="Dropout on the scaled, position-encoded target and source.")


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
        return {"out": inputs["target"].with_features(model_width(config, inputs["target"], "target"))}

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
        self.project_target = input_projection(int(self._target.features), width)
        self.project_source = input_projection(int(self._source.features), width)
        self.encoder = encoder_from(width, config)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        target = self.project_target(inputs["target"])  # (B, Tt, d)
        source = self.project_source(inputs["source"])  # (B, Ts, d)
        out = self.encoder(target, source, key_padding_mask=key_padding(ctx.mask(self._source)))  # (B, Tt, d)
        valid = ctx.mask(self._target)
        return out if valid is None else out.masked_fill(~valid[..., None], 0.0)

