"""Regularisation and normalisation primitives: ``dropout`` and ``layer_norm``.

Both keep their input's kind and shape (vector, sequence or feature map), so they can sit
anywhere in a graph and be switched off with ``enabled: false``; a sequence keeps its time
symbol and with it its padding mask.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, expect_kind, expect_ports
from composer.registry import register_block
from composer.spec import Spec, feature_map, sequence, vector

__all__ = ["DropoutConfig", "Dropout", "LayerNormConfig", "LayerNorm"]


def _same_as_input(inputs: dict[str, Spec], *kinds: str) -> dict[str, Spec]:
    expect_ports(inputs, exactly=1)
    (port, spec), = inputs.items()
    expect_kind(port, spec, *kinds)
    return {"out": spec}


class DropoutConfig(BlockConfig):
    type: Literal["dropout"] = "dropout"
    p: float = Field(default=0.1, ge=0.0, lt=1.0, description="Probability of zeroing an element (training only).")


@register_block(DropoutConfig, family="regularizer")
class Dropout(Block):
    """Dropout: ``x -> x ⊙ m / (1 - p)``, ``m ~ Bernoulli(1 - p)`` per element, in training only.

    Any vector ``(B, D)``, sequence ``(B, T, D)`` or map ``(B, C, *S)`` keeps its shape (EMT-DLFR's
    head has dropout on its input). No parameters.
    """

    @classmethod
    def infer(cls, config: DropoutConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return _same_as_input(inputs, "vector", "sequence", "map")

    @classmethod
    def examples(cls):
        return [({"p": 0.3}, {"in": sequence("T_x", 4)}), ({}, {"in": vector(5)}), ({"p": 0.5}, {"in": feature_map(3, 4)})]

    def __init__(self, config: DropoutConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.drop = nn.Dropout(config.p)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return self.drop(x)


class LayerNormConfig(BlockConfig):
    type: Literal["layer_norm"] = "layer_norm"
    eps: float = Field(default=1e-5, gt=0.0, description="Added to the variance.")
    affine: bool = Field(default=True, description="Learn a scale γ and shift β per feature.")


@register_block(LayerNormConfig, family="regularizer")
class LayerNorm(Block):
    """Layer normalisation over the feature axis: ``(x - μ) / √(σ² + ε) · γ + β``.

    Vector ``(B, D)`` or sequence ``(B, T, D)`` (each step normalised on its own, so padded
    steps never touch valid ones); parameters ``2D`` with ``affine``, else none.
    """

    @classmethod
    def infer(cls, config: LayerNormConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return _same_as_input(inputs, "vector", "sequence")

    @classmethod
    def examples(cls):
        return [({}, {"in": sequence("T_x", 4)}), ({"affine": False, "eps": 1e-6}, {"in": vector(3)})]

    def __init__(self, config: LayerNormConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (spec,) = inputs.values()
        self.norm = nn.LayerNorm(int(spec.features), eps=config.eps, elementwise_affine=config.affine)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return self.norm(x)
