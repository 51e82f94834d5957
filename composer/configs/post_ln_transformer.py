"""``post_ln_transformer``: PyTorch's post-LN ``nn.TransformerEncoder`` on a sequence.

The encoder GLoMo's fusion runs over its global and local tokens (eq. 8): each layer is
``x = LN(x + Dropout(MHA(x)))``, ``x = LN(x + Dropout(Linear(Dropout(ReLU(Linear(x))))))``,
with no input scaling, no positions and no final LayerNorm — unlike the ``transformer`` block
(MulT's pre-LN encoder with scaled inputs, sinusoidal positions and a final LayerNorm).
Module: :mod:`composer.blocks.post_ln_transformer`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import torch_encoder_layer, under
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["PostLNTransformerConfig"]

MODULES = "composer.blocks.post_ln_transformer"


@block_type("encoder", implementation=f"{MODULES}:PostLNTransformer")
class PostLNTransformerConfig(BlockConfig):
    """Post-LN self-attention encoder: ``sequence (B, T, d) -> (B, T, d)`` (GLoMo eq. 8).

    ``layers`` × PyTorch's ``nn.TransformerEncoderLayer(d, heads, ff_dim, dropout, ReLU,
    batch_first=True)``: multi-head self-attention and a ``d -> ff_dim -> d`` ReLU feed-forward,
    each followed by residual addition and LayerNorm. The width is the input's (no projection,
    no scaling, no positions, no final LayerNorm). Submodule ``encoder`` is the
    ``nn.TransformerEncoder``, so its weights carry PyTorch's names.

    The padding mask of the input's time axis is the key padding mask: padded steps are never
    attended to, valid outputs do not depend on them, and padded output steps are zero. The
    time symbol (and mask) is kept. Parameters ``layers·(4d² + 4d + 2·d·ff_dim + ff_dim + 5d)``.
    """

    type: Literal["post_ln_transformer"] = "post_ln_transformer"
    heads: int = Field(default=4, ge=1, description="Attention heads; must divide the input width.")
    layers: int = Field(default=2, ge=1, description="Number of encoder layers.")
    ff_dim: int = Field(default=2048, ge=1, description="Feed-forward width (PyTorch's default 2048).")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on attention weights, in the feed-forward and on both residual branches.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        if int(spec.features) % self.heads:
            raise SpecError(f"input '{port}' has width {spec.features}, not divisible by heads={self.heads}", field="heads")
        return {"out": spec}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        shapes: Shapes = {}
        for k in range(self.layers):  # nn.TransformerEncoder deep-copies the layer into `layers`
            shapes.update(under(f"encoder.layers.{k}", torch_encoder_layer(int(spec.features), self.ff_dim)))
        return shapes

    @classmethod
    def examples(cls):
        return [
            ({"heads": 2, "layers": 1, "ff_dim": 8}, {"in": sequence("T_x", 4)}),
            ({"heads": 3, "layers": 2, "ff_dim": 5, "dropout": 0.0}, {"in": sequence("T_x", 6)}),
            ({"heads": 2, "ff_dim": 8}, {"in": sequence(6, 4)}),
        ]
