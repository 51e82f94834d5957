"""Prediction heads: an MLP on a vector (or on each step of a sequence)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, last_axis_output, Width
from composer.registry import register_block
from composer.spec import Spec, sequence, vector

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
Activation = Literal["relu", "gelu", "tanh", "elu", "leaky_relu"]


def make_mlp(in_features: int, hidden: list[int], out: int, activation: str = "relu", dropout: float = 0.0, *, bias: bool = True) -> nn.Sequential:
    """``in -> [Linear -> act -> Dropout] * len(hidden) -> Linear -> out`` as one Sequential."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h, bias=bias), ACTIVATIONS[activation]()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out, bias=bias))
    return nn.Sequential(*layers)


class MLPConfig(BlockConfig):
    type: Literal["mlp"] = "mlp"
    hidden: list[Width] = Field(default_factory=list, description="Widths of the hidden layers.")
    out: int = Field(ge=1, description="Output width (e.g. 1 for regression, number of classes).")
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    residual: bool = Field(default=False, description="MulT head: out(x + MLP(x)) with the MLP mapping back to the input width.")


@register_block(MLPConfig, family="head")
class MLP(Block):
    """Multi-layer perceptron on the last axis.

    Input ``vector (B, D)`` or ``sequence (B, T, D)``; output the same kind with width ``out``.
    With ``residual``: ``y = Linear_out(x + MLP(x))`` where the MLP runs through ``hidden``
    and back to ``D`` (the projection-plus-residual head of MulT).
    """

    @classmethod
    def infer(cls, config: MLPConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return last_axis_output(inputs, config.out)

    @classmethod
    def examples(cls):
        return [
            ({"hidden": [8], "out": 1, "dropout": 0.1}, {"in": vector(12)}),
            ({"hidden": [6], "out": 3, "residual": True}, {"in": sequence("T_x", 5)}),
        ]

    def __init__(self, config: MLPConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        width = next(iter(inputs.values())).features
        if config.residual:
            self.residual = make_mlp(width, config.hidden, width, config.activation, config.dropout)
            self.out = nn.Linear(width, config.out)
        else:
            self.net = make_mlp(width, config.hidden, config.out, config.activation, config.dropout)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        if self.config.residual:
            return self.out(x + self.residual(x))
        return self.net(x)
