"""A user-defined loss: 1 - Lin's concordance correlation coefficient (CCC), the agreement measure
of continuous affect (valence, arousal) in AVEC and most emotion-regression papers.

``ccc = 2 cov(ŷ, y) / (var(ŷ) + var(y) + (mean(ŷ) - mean(y))²)`` (Lin, "A concordance correlation
coefficient to evaluate reproducibility", Biometrics 1989, eq. 2b, with population moments), so
the loss ``1 - ccc`` is 0 for perfect agreement, 1 for none, and at most 2. It is a statistic of
the whole batch (not a mean over samples), so it sets no ``per_sample`` and refuses ``weight_from``.

This file is the worked example of the loss plug-in protocol (docs/tutorials/custom-block.md, section 7,
"A loss of your own"). List it under ``plugins:`` and pass ``--allow-plugins`` to any command,
and ``type: ccc`` is a loss like any other.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from composer import SpecError, register_loss
from composer.configs.losses import LossConfig
from composer.losses import Loss
from composer.spec import Spec


class CCCConfig(LossConfig):
    """``1 - CCC(pred, target)`` over the batch: ``pred`` ``(B, 1)`` or ``(B,)``, ``target`` the label by default."""

    type: Literal["ccc"] = "ccc"
    pred: str = Field(description="Reference to the prediction, e.g. `head`.")
    target: str = Field(default="label", description="Reference to the target (default: the batch label).")
    eps: float = Field(default=1e-8, gt=0, description="Added to the denominator (a constant batch).")

    ref_fields: ClassVar[tuple[str, ...]] = ("pred", "target")

    def check(self, specs: dict[str, Spec]) -> None:
        super().check(specs)
        for name in ("pred", "target"):
            spec = specs[name]
            if not (spec.kind == "labels" or (spec.kind == "vector" and spec.features == 1)):
                raise SpecError(f"ccc compares one value per sample; {name} is {spec}", field=name)

    def parameter_shapes(self, specs: dict[str, Spec]) -> dict:
        return {}  # no network: nothing is trained by the loss itself


@register_loss(CCCConfig)
class CCCLoss(Loss):
    """The module: ``forward(values, ctx)`` gets the referenced tensors by field name, returns a scalar."""

    def forward(self, values: dict[str, torch.Tensor], ctx) -> torch.Tensor:
        pred = values["pred"].reshape(-1).float()
        target = values["target"].reshape(-1).float()
        pm, tm = pred.mean(), target.mean()
        cov = ((pred - pm) * (target - tm)).mean()
        ccc = 2 * cov / (pred.var(unbiased=False) + target.var(unbiased=False) + (pm - tm) ** 2 + self.config.eps)
        return 1 - ccc
