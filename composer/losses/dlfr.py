"""Dual-Level Feature Restoration loss modules (EMT-DLFR §3.5; configs and equations:
:mod:`composer.configs.losses.dlfr`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Context
from composer.configs.losses.dlfr import LLFRConfig, SimSiamConfig
from composer.spec import Spec
from composer.losses._base import Loss

__all__ = ["LLFRLoss", "SimSiamLoss", "negative_cosine"]


class LLFRLoss(Loss):
    """Low-level feature reconstruction (eq. 11; :class:`~composer.configs.losses.dlfr.LLFRConfig`)."""

    def __init__(self, config: LLFRConfig, specs: dict[str, Spec]):
        super().__init__(config, specs)
        self.decoder = (
            nn.Linear(int(specs["input"].features), int(specs["target"].features)) if config.decoder == "linear" else nn.Identity()
        )

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        recon = self.decoder(values["input"])  # (B, T, d) -> (B, T, D_m)
        target = values["target"].to(recon.dtype)
        if self.config.detach_target:
            target = target.detach()
        masked = values["mask"].bool()  # (B, T) True = dropped
        valid = ctx.mask(self.specs["target"])
        if valid is not None:
            masked = masked & valid
        per_step = F.smooth_l1_loss(recon, target, reduction="none", beta=self.config.beta).mean(dim=-1)  # (B, T)
        count = masked.sum()
        return (per_step * masked).sum() / count.clamp(min=1)


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 14, batch mean: ``-mean_b cos(prediction_b, target_b)``."""
    return -F.cosine_similarity(prediction, target, dim=-1).mean()


class SimSiamLoss(Loss):
    """Symmetric SimSiam attraction (eqs. 13-14; :class:`~composer.configs.losses.dlfr.SimSiamConfig`)."""

    def __init__(self, config: SimSiamConfig, specs: dict[str, Spec]):
        super().__init__(config, specs)
        width = int(specs["a"].features)
        hidden = config.hidden or max(width // 2, 1)
        self.projector = (
            nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width, affine=False)) if config.projector else nn.Identity()
        )
        self.predictor = nn.Sequential(
            nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, width)
        ) if config.predictor else nn.Identity()

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        z_a, z_b = self.projector(values["a"]), self.projector(values["b"])  # (B, D) each
        target = (lambda z: z.detach()) if self.config.stop_gradient else (lambda z: z)
        # eq. 13: each view's prediction chases the other's projection, which is a constant (sg)
        return 0.5 * (negative_cosine(self.predictor(z_b), target(z_a)) + negative_cosine(self.predictor(z_a), target(z_b)))
