"""What every loss module is: an ``nn.Module`` built from its config and the referenced specs.

The config (reference fields, checks, parameter shapes) lives in
:mod:`composer.configs.losses` and imports no PyTorch; see
:mod:`composer.configs.losses._base` for the reference syntax. The model resolves the
references and calls ``forward(values, ctx)`` with a dict keyed by field name; the loss
returns a scalar.

A loss that is a mean of one value per sample (its config sets ``per_sample = True``)
implements :meth:`Loss.per_sample` instead of ``forward``: the base's ``forward`` then takes
the batch mean, or with ``weight_from`` the weighted mean of :func:`weighted_mean`. A loss
over the whole batch (CMD, orthogonality) implements ``forward`` itself.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from composer.blocks._base import Context
from composer.configs.losses._base import MAIN_VIEW, WEIGHT_FROM, LossConfig, parse_ref
from composer.spec import Spec

__all__ = ["LossConfig", "Loss", "parse_ref", "MAIN_VIEW", "weighted_mean"]


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

    def per_sample(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        """One loss value per sample, ``(B,)``; the losses with ``per_sample = True`` define it."""
        raise NotImplementedError(f"{type(self).__name__} must implement per_sample() or forward()")

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        """The batch mean of :meth:`per_sample`, weighted by ``weight_from`` when it is set."""
        losses = self.per_sample(values, ctx)  # (B,)
        weights = values.get(WEIGHT_FROM)
        if weights is None:
            return losses.mean()
        if self.config.detach_weight:
            weights = weights.detach()
        return weighted_mean(losses, weights, self.config.weight_mean)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor, mean: str = "weights") -> torch.Tensor:
    """``losses (B,)`` and ``weights (B,)`` or ``(B, 1)`` -> ``Σ w·ℓ / Σ w`` (``mean="weights"``)
    or ``Σ w·ℓ / B`` (``"batch"``). All-zero weights give 0 under ``"weights"``, not NaN."""
    weights = weights.reshape(losses.shape).to(losses.dtype)
    total = (weights * losses).sum()
    if mean == "batch":
        return total / losses.numel()
    norm = weights.sum()
    return total / torch.where(norm == 0, torch.ones_like(norm), norm)
