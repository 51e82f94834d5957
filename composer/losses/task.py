"""Task loss modules (configs: :mod:`composer.configs.losses.task`): each gives one value per
sample (:meth:`~composer.losses._base.Loss.per_sample`); the base takes the (weighted) batch mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from composer.blocks._base import Context
from composer.losses._base import Loss

__all__ = ["L1Loss", "MSELoss", "SmoothL1Loss", "CrossEntropyLoss", "BCELoss"]


def _regression_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bring a ``(B,)`` target to the prediction's ``(B, K)`` layout."""
    target = target.to(pred.dtype)
    return target.view(pred.shape) if target.numel() == pred.numel() else target


def _sample_means(elementwise: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` element losses -> ``(B,)``: each sample's mean (their batch mean is the plain mean)."""
    return elementwise.reshape(elementwise.shape[0], -1).mean(dim=1)


class L1Loss(Loss):
    """Mean absolute error (:class:`~composer.configs.losses.task.L1Config`)."""

    def per_sample(self, values, ctx: Context) -> torch.Tensor:
        pred = values["pred"]
        return _sample_means(F.l1_loss(pred, _regression_target(pred, values["target"]), reduction="none"))


class MSELoss(Loss):
    """Mean squared error (:class:`~composer.configs.losses.task.MSEConfig`)."""

    def per_sample(self, values, ctx: Context) -> torch.Tensor:
        pred = values["pred"]
        return _sample_means(F.mse_loss(pred, _regression_target(pred, values["target"]), reduction="none"))


class SmoothL1Loss(Loss):
    """Smooth L1 (:class:`~composer.configs.losses.task.SmoothL1Config`)."""

    def per_sample(self, values, ctx: Context) -> torch.Tensor:
        pred = values["pred"]
        target = _regression_target(pred, values["target"])
        return _sample_means(F.smooth_l1_loss(pred, target, beta=self.config.beta, reduction="none"))


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy (:class:`~composer.configs.losses.task.CrossEntropyConfig`)."""

    def per_sample(self, values, ctx: Context) -> torch.Tensor:
        return F.cross_entropy(
            values["pred"], values["target"].long(), label_smoothing=self.config.label_smoothing, reduction="none"
        )


class BCELoss(Loss):
    """Binary cross-entropy on logits (:class:`~composer.configs.losses.task.BCEConfig`)."""

    def per_sample(self, values, ctx: Context) -> torch.Tensor:
        pred = values["pred"]
        target = values["target"].to(pred.dtype).view(pred.shape)
        pos_weight = None
        if self.config.pos_weight is not None:
            pos_weight = torch.full_like(pred[0], self.config.pos_weight)
        return _sample_means(F.binary_cross_entropy_with_logits(pred, target, pos_weight=pos_weight, reduction="none"))
