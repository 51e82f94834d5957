"""Task losses comparing a prediction with the label: L1, MSE, smooth-L1, CE, BCE.

``pred`` is a ``vector (B, K)``; ``target`` defaults to ``label``. Regression labels are
``labels (B,)`` (one output) or ``vector (B, K)``; classification labels are class indices
``labels (B,)``; multi-label (one-vs-rest) labels are ``vector (B, K)`` of 0/1.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from composer.blocks._base import Context, SpecError
from composer.registry import register_loss
from composer.spec import Spec
from composer.losses._base import Loss, LossConfig


class _PredTargetConfig(LossConfig):
    pred: str = Field(description="Reference to the prediction, e.g. `head` or `incomplete:head`.")
    target: str = Field(default="label", description="Reference to the target (default: the batch label).")

    ref_fields: ClassVar[tuple[str, ...]] = ("pred", "target")


def _regression_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bring a ``(B,)`` target to the prediction's ``(B, K)`` layout."""
    target = target.to(pred.dtype)
    return target.view(pred.shape) if target.numel() == pred.numel() else target


class _RegressionLoss(Loss):
    @classmethod
    def check(cls, config, specs: dict[str, Spec]) -> None:
        pred, target = specs["pred"], specs["target"]
        if pred.kind not in ("vector", "sequence", "labels"):
            raise SpecError(f"pred must be a vector prediction, got {pred}", field="pred")
        if target.kind == "labels" and pred.kind == "vector" and pred.features not in (1, "K"):
            raise SpecError(
                f"a per-sample target needs a prediction with 1 output, got {pred}", field="pred"
            )
        if target.kind == "vector" and pred.kind == "vector" and target.features != pred.features:
            raise SpecError(f"pred {pred} and target {target} differ in width", field="target")


class L1Config(_PredTargetConfig):
    type: Literal["l1"] = "l1"


@register_loss(L1Config)
class L1Loss(_RegressionLoss):
    """Mean absolute error ``mean |pred - target|``."""

    def forward(self, values, ctx: Context) -> torch.Tensor:
        return F.l1_loss(values["pred"], _regression_target(values["pred"], values["target"]))


class MSEConfig(_PredTargetConfig):
    type: Literal["mse"] = "mse"


@register_loss(MSEConfig)
class MSELoss(_RegressionLoss):
    """Mean squared error ``mean (pred - target)^2``."""

    def forward(self, values, ctx: Context) -> torch.Tensor:
        return F.mse_loss(values["pred"], _regression_target(values["pred"], values["target"]))


class SmoothL1Config(_PredTargetConfig):
    type: Literal["smooth_l1"] = "smooth_l1"
    beta: float = Field(default=1.0, gt=0, description="Transition point between the quadratic and linear parts.")


@register_loss(SmoothL1Config)
class SmoothL1Loss(_RegressionLoss):
    """Huber-style smooth L1: quadratic below ``beta``, linear above."""

    def forward(self, values, ctx: Context) -> torch.Tensor:
        pred = values["pred"]
        return F.smooth_l1_loss(pred, _regression_target(pred, values["target"]), beta=self.config.beta)


class CrossEntropyConfig(_PredTargetConfig):
    type: Literal["ce"] = "ce"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)


@register_loss(CrossEntropyConfig)
class CrossEntropyLoss(Loss):
    """Softmax cross-entropy between logits ``(B, C)`` and class indices ``(B,)``."""

    @classmethod
    def check(cls, config, specs: dict[str, Spec]) -> None:
        if specs["pred"].kind != "vector":
            raise SpecError(f"pred must be logits vector (B, C), got {specs['pred']}", field="pred")
        if specs["target"].kind != "labels":
            raise SpecError(f"target must be class indices (B,), got {specs['target']}", field="target")

    def forward(self, values, ctx: Context) -> torch.Tensor:
        return F.cross_entropy(
            values["pred"], values["target"].long(), label_smoothing=self.config.label_smoothing
        )


class BCEConfig(_PredTargetConfig):
    type: Literal["bce"] = "bce"
    pos_weight: float | None = Field(default=None, gt=0, description="Weight of positive examples.")


@register_loss(BCEConfig)
class BCELoss(Loss):
    """Binary cross-entropy on logits, one independent decision per output (one-vs-rest)."""

    @classmethod
    def check(cls, config, specs: dict[str, Spec]) -> None:
        if specs["pred"].kind != "vector":
            raise SpecError(f"pred must be logits vector (B, K), got {specs['pred']}", field="pred")

    def forward(self, values, ctx: Context) -> torch.Tensor:
        pred = values["pred"]
        target = values["target"].to(pred.dtype).view(pred.shape)
        pos_weight = None
        if self.config.pos_weight is not None:
            pos_weight = torch.full_like(pred[0], self.config.pos_weight)
        return F.binary_cross_entropy_with_logits(pred, target, pos_weight=pos_weight)
