"""TFR-Net's reconstruction loss (config and equation: :mod:`composer.configs.losses.tfr`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch import nn

from composer.blocks._base import Context
from composer.configs.losses.tfr import TFRReconstructionConfig
from composer.losses._base import Loss
from composer.spec import Spec
from composer.losses.representation import central_moment_discrepancy

__all__ = ["TFRReconstructionLoss"]


class TFRReconstructionLoss(Loss):
    """Masked smooth-L1 + λ_sim · CMD over ``N·D + ε`` (:class:`~composer.configs.losses.tfr.TFRReconstructionConfig`)."""

    def __init__(self, config: TFRReconstructionConfig, specs: dict[str, Spec]):
        super().__init__(config, specs)
        width, target = int(specs["pred"].features), int(specs["target"].features)
        self.generator = nn.Linear(width, target) if config.generator == "linear" else nn.Identity()

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        c = self.config
        pred = self.generator(values["pred"])  # (B, T, d) -> (B, T, D)
        target = values["target"].to(pred.dtype)
        if c.detach_target:
            target = target.detach()
        dropped = values["mask"].bool()  # (B, T)
        valid = ctx.mask(self.specs["target"])
        if valid is not None:
            dropped = dropped & valid
        g = dropped[..., None].expand_as(pred).to(pred.dtype)  # (B, T, D)
        pred, target = pred * g, target * g
        count = g.sum() + c.eps
        loss = F.smooth_l1_loss(pred, target, reduction="sum", beta=c.beta) / count
        if c.similarity:
            width = pred.shape[-1]
            loss = loss + c.similarity * central_moment_discrepancy(pred.reshape(-1, width), target.reshape(-1, width), c.moments, norm_eps=c.norm_eps) / count
        return loss
