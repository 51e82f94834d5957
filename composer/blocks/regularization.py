"""Regularisation and normalisation modules: ``dropout`` and ``layer_norm``
(configs and equations: :mod:`composer.configs.regularization`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.regularization import DropoutConfig, LayerNormConfig
from composer.spec import Spec

__all__ = ["Dropout", "LayerNorm"]


class Dropout(Block):
    """Element-wise dropout in training only (:class:`~composer.configs.regularization.DropoutConfig`)."""

    def __init__(self, config: DropoutConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.drop = nn.Dropout(config.p)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return self.drop(x)


class LayerNorm(Block):
    """LayerNorm over the feature axis (:class:`~composer.configs.regularization.LayerNormConfig`)."""

    def __init__(self, config: LayerNormConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (spec,) = inputs.values()
        self.norm = nn.LayerNorm(int(spec.features), eps=config.eps, elementwise_affine=config.affine)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return self.norm(x)
