"""Pooling over time: ``pool`` (a sequence to a vector) and ``adaptive_max_pool`` (to a fixed
number of steps), both honouring the padding mask (configs and equations: :mod:`composer.configs.pooling`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.pooling import AdaptiveMaxPoolConfig, PoolConfig
from composer.spec import Spec

__all__ = ["Pool", "AdaptiveMaxPool", "masked_pool"]


def masked_pool(x: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, D)`` by mean, max, first or last over the valid steps.

    ``mask`` is ``(B, T)`` bool, True = valid, or None (all valid). ``last`` takes the step
    at index ``length - 1`` (right padding); a sample with no valid step pools to zeros.
    """
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    valid = mask[..., None]  # (B, T, 1)
    lengths = mask.sum(dim=1)  # (B,)
    if mode == "mean":
        total = x.masked_fill(~valid, 0.0).sum(dim=1)  # (B, D)
        return total / lengths.clamp(min=1)[:, None].to(x.dtype)
    if mode == "max":
        best = x.masked_fill(~valid, float("-inf")).amax(dim=1)  # (B, D)
        return best.masked_fill((lengths == 0)[:, None], 0.0)
    if mode in ("first", "last"):
        index = torch.zeros_like(lengths) if mode == "first" else (lengths - 1).clamp(min=0)
        picked = x.gather(1, index[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)  # (B, D)
        return picked.masked_fill((lengths == 0)[:, None], 0.0)
    raise ValueError(f"unknown pooling mode {mode!r}")


class Pool(Block):
    """Masked mean / max / first / last or additive-attention pooling over time (:class:`~composer.configs.pooling.PoolConfig`)."""

    def __init__(self, config: PoolConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        if config.mode == "attention":
            width = int(self._spec.features)
            hidden = config.hidden or width
            self.score = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        mask = ctx.mask(self._spec)
        if self.config.padding == "include":
            return x.mean(dim=1)  # every step, padded ones too (MMSA's averaging)
        if self.config.mode != "attention":
            return masked_pool(x, mask, self.config.mode)
        scores = self.score(x).squeeze(-1)  # (B, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
            scores = scores.masked_fill(~mask.any(dim=1, keepdim=True), 0.0)  # no valid step: uniform, zeroed below
        weights = scores.softmax(dim=1)  # (B, T)
        pooled = torch.einsum("bt,btd->bd", weights, x)  # (B, D)
        if mask is not None:
            pooled = pooled.masked_fill(~mask.any(dim=1)[:, None], 0.0)
        return pooled


class AdaptiveMaxPool(Block):
    """Adaptive max pooling over each sample's valid steps (:class:`~composer.configs.pooling.AdaptiveMaxPoolConfig`)."""

    def __init__(self, config: AdaptiveMaxPoolConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        B, T, _ = x.shape
        n = self.config.steps
        mask = ctx.mask(self._spec)
        lengths = (mask.sum(dim=1) if mask is not None else torch.full((B,), T, device=x.device)).clamp(min=1)
        i = torch.arange(n, device=x.device)
        start = torch.div(i[None] * lengths[:, None], n, rounding_mode="floor")  # (B, n)
        end = torch.div((i[None] + 1) * lengths[:, None] + n - 1, n, rounding_mode="floor")  # (B, n) ceil
        t = torch.arange(T, device=x.device)
        window = (t[None, None] >= start[..., None]) & (t[None, None] < end[..., None])  # (B, n, T)
        pooled = x[:, None].masked_fill(~window[..., None], float("-inf")).amax(dim=2)  # (B, n, T, D) -> (B, n, D)
        return pooled
