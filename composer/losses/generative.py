"""MFM's MMD prior penalty (config, source and equations: :mod:`composer.configs.losses.generative`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Context
from composer.losses._base import Loss

__all__ = ["gaussian_kernel", "mmd_to_normal", "MMDLoss"]


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, D), (M, D) -> (N, M)``: ``exp(-‖a_i - b_j‖² / D²)`` (MMSA's ``compute_kernel``)."""
    width = a.shape[1]
    return torch.exp(-(a[:, None, :] - b[None, :, :]).pow(2).mean(dim=2) / width)


def mmd_to_normal(z: torch.Tensor) -> torch.Tensor:
    """The biased MMD between ``z (B, D)`` and a fresh ``N(0, I)`` sample of its size, drawn on the CPU
    from the global generator and moved to ``z``'s device, as MMSA draws it (so a seed gives MMSA's sample)."""
    prior = torch.randn(z.shape).to(device=z.device, dtype=z.dtype)  # (B, D)
    return gaussian_kernel(prior, prior).mean() + gaussian_kernel(z, z).mean() - 2.0 * gaussian_kernel(prior, z).mean()


class MMDLoss(Loss):
    """MMD of codes to ``N(0, I)`` (:class:`~composer.configs.losses.generative.MMDConfig`)."""

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        return mmd_to_normal(values["x"])
