"""Prediction heads: an MLP on a vector (or on each step of a sequence).

``mlp``: ``vector (B, D) -> (B, out)`` or ``sequence (B, T, D) -> (B, T, out)``.
Module: :mod:`composer.blocks.heads`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, Width, last_axis_output
from composer.configs._shapes import linear, mlp, under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["MLPConfig", "Activation"]

MODULES = "composer.blocks.heads"

#: Activation names (the modules are :data:`composer.blocks.heads.ACTIVATIONS`).
Activation = Literal["relu", "gelu", "tanh", "elu", "leaky_relu"]


@block_type("head", implementation=f"{MODULES}:MLP")
class MLPConfig(BlockConfig):
    """Multi-layer perceptron on the last axis.

    Input ``vector (B, D)`` or ``sequence (B, T, D)``; output the same kind with width ``out``.
    With ``residual``: ``y = Linear_out(x + MLP(x))`` where the MLP runs through ``hidden``
    and back to ``D`` (the projection-plus-residual head of MulT).
    """

    type: Literal["mlp"] = "mlp"
    hidden: list[Width] = Field(default_factory=list, description="Widths of the hidden layers.")
    out: int = Field(ge=1, description="Output width (e.g. 1 for regression, number of classes).")
    activation: Activation = "relu"
    negative_slope: float = Field(default=0.01, ge=0.0, description="leaky_relu only: the slope below zero (LNLN's discriminator: 0.1).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    residual: bool = Field(default=False, description="MulT head: out(x + MLP(x)) with the MLP mapping back to the input width.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return last_axis_output(inputs, self.out)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        width = int(next(iter(inputs.values())).features)
        dropout = bool(self.dropout)
        if self.residual:
            return {
                **under("residual", mlp(width, self.hidden, width, dropout=dropout)),
                **under("out", linear(width, self.out)),
            }
        return under("net", mlp(width, self.hidden, self.out, dropout=dropout))

    @classmethod
    def examples(cls):
        return [
            ({"hidden": [8], "out": 1, "dropout": 0.1}, {"in": vector(12)}),
            ({"hidden": [6], "out": 3, "residual": True}, {"in": sequence("T_x", 5)}),
        ]
