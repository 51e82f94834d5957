"""Prediction heads: an MLP on a vector or on each step of a sequence
(config, shapes and equations: :mod:`composer.configs.heads`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.heads import Activation, MLPConfig
from composer.spec import Spec

__all__ = ["MLP", "ACTIVATIONS", "make_mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU,
}


def make_mlp(in_features: int, hidden: list[int], out: int, activation: Activation = "relu", dropout: float = 0.0, *, bias: bool = True,
             negative_slope: float = 0.01) -> nn.Sequential:
    """``in -> [Linear -> act -> Dropout] * len(hidden) -> Linear -> out`` as one Sequential
    (``negative_slope``: the leaky ReLU's, PyTorch's default 0.01)."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        act = nn.LeakyReLU(negative_slope) if activation == "leaky_relu" else ACTIVATIONS[activation]()
        layers += [nn.Linear(width, h, bias=bias), act]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out, bias=bias))
    return nn.Sequential(*layers)


class MLP(Block):
    """Multi-layer perceptron on the last axis, optionally residual (:class:`~composer.configs.heads.MLPConfig`)."""

    def __init__(self, config: MLPConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        width = next(iter(inputs.values())).features
        if config.residual:
            self.residual = make_mlp(width, config.hidden, width, config.activation, config.dropout, negative_slope=config.negative_slope)
            self.out = nn.Linear(width, config.out)
        else:
            self.net = make_mlp(width, config.hidden, config.out, config.activation, config.dropout, negative_slope=config.negative_slope)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        if self.config.residual:
            return self.out(x + self.residual(x))
        return self.net(x)
