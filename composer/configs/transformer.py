"""Config of the self-attention transformer encoder on a sequence (the MulT transformer,
self-attention only), and the MulT layer settings shared by the blocks built on
:class:`composer.layers.mult.MulTEncoder`. Module: :mod:`composer.blocks.transformer`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import linear, mult_encoder, under
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["MulTLayerSettings", "MulTSettings", "TransformerConfig", "model_width", "projection_shapes"]

MODULES = "composer.blocks.transformer"


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


def projection_shapes(width_in: int, width: int) -> Shapes:
    """Parameters of :func:`composer.blocks.transformer.input_projection`: a bias-free Linear
    ``width_in -> width`` when the widths differ, else none (identity)."""
    return linear(width_in, width, bias=False) if width_in != width else {}


@block_type("encoder", implementation=f"{MODULES}:TransformerEncoder")
class TransformerConfig(MulTSettings):
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

    type: Literal["transformer"] = "transformer"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        return {"out": spec.with_features(model_width(self, spec))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        width = model_width(self, spec)
        return {
            **under("project", projection_shapes(int(spec.features), width)),
            **under("encoder", mult_encoder(width, self.layers)),
        }

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
