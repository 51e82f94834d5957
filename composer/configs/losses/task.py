"""Configs of the task losses comparing a prediction with the label: L1, MSE, smooth-L1, CE, BCE.

``pred`` is a ``vector (B, K)``; ``target`` defaults to ``label``. Regression labels are
``labels (B,)`` (one output) or ``vector (B, K)``; classification labels are class indices
``labels (B,)``; multi-label (one-vs-rest) labels are ``vector (B, K)`` of 0/1. None of them
has parameters. The modules are in :mod:`composer.losses.task`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError
from composer.configs.losses._base import LossConfig
from composer.registry import loss_type
from composer.spec import Spec

__all__ = ["L1Config", "MSEConfig", "SmoothL1Config", "CrossEntropyConfig", "BCEConfig"]

MODULES = "composer.losses.task"


class _PredTargetConfig(LossConfig):
    pred: str = Field(description="Reference to the prediction, e.g. `head` or `incomplete:head`.")
    target: str = Field(default="label", description="Reference to the target (default: the batch label).")

    ref_fields: ClassVar[tuple[str, ...]] = ("pred", "target")
    per_sample: ClassVar[bool] = True  # one value per sample: `weight_from` applies

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        return {}


class _RegressionConfig(_PredTargetConfig):
    def check(self, specs: dict[str, Spec]) -> None:
        pred, target = specs["pred"], specs["target"]
        if pred.kind not in ("vector", "sequence", "labels"):
            raise SpecError(f"pred must be a vector prediction, got {pred}", field="pred")
        if target.kind == "labels" and pred.kind == "vector" and pred.features not in (1, "K"):
            raise SpecError(
                f"a per-sample target needs a prediction with 1 output, got {pred}", field="pred"
            )
        if target.kind == "vector" and pred.kind == "vector" and target.features != pred.features:
            raise SpecError(f"pred {pred} and target {target} differ in width", field="target")


@loss_type(implementation=f"{MODULES}:L1Loss")
class L1Config(_RegressionConfig):
    """Mean absolute error ``mean |pred - target|``."""

    type: Literal["l1"] = "l1"


@loss_type(implementation=f"{MODULES}:MSELoss")
class MSEConfig(_RegressionConfig):
    """Mean squared error ``mean (pred - target)^2``."""

    type: Literal["mse"] = "mse"


@loss_type(implementation=f"{MODULES}:SmoothL1Loss")
class SmoothL1Config(_RegressionConfig):
    """Huber-style smooth L1: quadratic below ``beta``, linear above."""

    type: Literal["smooth_l1"] = "smooth_l1"
    beta: float = Field(default=1.0, gt=0, description="Transition point between the quadratic and linear parts.")


@loss_type(implementation=f"{MODULES}:CrossEntropyLoss")
class CrossEntropyConfig(_PredTargetConfig):
    """Softmax cross-entropy between logits ``(B, C)`` and class indices ``(B,)``."""

    type: Literal["ce"] = "ce"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)

    def check(self, specs: dict[str, Spec]) -> None:
        if specs["pred"].kind != "vector":
            raise SpecError(f"pred must be logits vector (B, C), got {specs['pred']}", field="pred")
        if specs["target"].kind != "labels":
            raise SpecError(f"target must be class indices (B,), got {specs['target']}", field="target")


@loss_type(implementation=f"{MODULES}:BCELoss")
class BCEConfig(_PredTargetConfig):
    """Binary cross-entropy on logits, one independent decision per output (one-vs-rest)."""

    type: Literal["bce"] = "bce"
    pos_weight: float | None = Field(default=None, gt=0, description="Weight of positive examples.")

    def check(self, specs: dict[str, Spec]) -> None:
        if specs["pred"].kind != "vector":
            raise SpecError(f"pred must be logits vector (B, K), got {specs['pred']}", field="pred")
