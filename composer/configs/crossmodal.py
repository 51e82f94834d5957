"""Config of the crossmodal transformer (MulT, Tsai et al., ACL 2019): a target sequence attends
to a source.

``{target: (B, T_tgt, D_t), source: (B, T_src, D_s)} -> (B, T_tgt, d)``. Written on
:class:`composer.layers.mult.MulTEncoder`, the faithful MulT transformer.
Module: :mod:`composer.blocks.crossmodal`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError, expect_kind
from composer.configs._shapes import mult_encoder, under
from composer.configs.transformer import MulTSettings, model_width, projection_shapes
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["CrossmodalConfig"]

MODULES = "composer.blocks.crossmodal"


@block_type("fusion", implementation=f"{MODULES}:CrossmodalTransformer")
class CrossmodalConfig(MulTSettings):
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

    type: Literal["crossmodal"] = "crossmodal"
    # MulT's defaults for its crossmodal transformers
    heads: int = Field(default=5, ge=1, description="Attention heads; must divide d.")
    layers: int = Field(default=5, ge=1, description="Number of crossmodal attention layers.")
    relu_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout after the feed-forward ReLU.")
    res_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on each residual branch.")
    embed_dropout: float = Field(default=0.25, ge=0.0, lt=1.0, description="Dropout on the scaled, position-encoded target and source.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"target", "source"}:
            raise SpecError(
                f"crossmodal takes a mapping with ports 'target' and 'source', got {sorted(inputs)}", field="in"
            )
        for port in ("target", "source"):
            expect_kind(port, inputs[port], "sequence")
        return {"out": inputs["target"].with_features(model_width(self, inputs["target"], "target"))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        width = model_width(self, inputs["target"], "target")
        return {
            **under("project_target", projection_shapes(int(inputs["target"].features), width)),
            **under("project_source", projection_shapes(int(inputs["source"].features), width)),
            **under("encoder", mult_encoder(width, self.layers)),
        }

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
