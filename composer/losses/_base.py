"""What every loss module is: an ``nn.Module`` built from its config and the referenced specs.

The config (reference fields, checks, parameter shapes) lives in
:mod:`composer.configs.losses` and imports no PyTorch; see
:mod:`composer.configs.losses._base` for the reference syntax. The model resolves the
references and calls ``forward(values, ctx)`` with a dict keyed by field name; the loss
returns a scalar.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from composer.blocks._base import Context
from composer.configs.losses._base import MAIN_VIEW, LossConfig, parse_ref
from composer.spec import Spec

__all__ = ["LossConfig", "Loss", "parse_ref", "MAIN_VIEW"]


class Loss(nn.Module):
    """Base class of losses. ``specs`` maps each reference field to the spec it resolves to."""

    config_class: ClassVar[type[LossConfig]]
    type_name: ClassVar[str]
    family: ClassVar[str] = "loss"

    def __init__(self, config: LossConfig, specs: dict[str, Spec]):
        super().__init__()
        self.config = config
        self.specs = dict(specs)
        config.check(specs)

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        raise NotImplementedError
