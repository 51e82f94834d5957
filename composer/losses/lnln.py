"""LNLN's adversarial loss (config and equation: :mod:`composer.configs.losses.lnln`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from composer.blocks._base import Context
from composer.losses._base import Loss

__all__ = ["DiscriminatorLoss"]


class DiscriminatorLoss(Loss):
    """Mean cross-entropy, ``positive`` rows against class 1 and ``negative`` rows against class 0."""

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        positive = values["positive"].reshape(-1, 2)  # (B·n, 2)
        negative = values["negative"].reshape(-1, 2)
        logits = torch.cat([positive, negative])
        classes = torch.cat([positive.new_ones(len(positive), dtype=torch.long), negative.new_zeros(len(negative), dtype=torch.long)])
        return F.cross_entropy(logits, classes)
