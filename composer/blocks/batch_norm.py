"""Batch normalisation over features or over time positions, with statistics that skip padding
(config and equations: :mod:`composer.configs.batch_norm`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.batch_norm import BatchNormConfig
from composer.errors import ComposerError
from composer.spec import Spec

__all__ = ["BatchNorm", "weighted_batch_norm"]


def weighted_batch_norm(x: torch.Tensor, valid: torch.Tensor | None, norm: nn.BatchNorm1d) -> torch.Tensor:
    """Batch-normalise ``x (..., C)`` per channel (last axis) with ``norm``'s affine and running statistics.

    In training the statistics are taken over every axis but the last, counting only entries
    where ``valid`` (bool, broadcastable to ``x``) is True, and the running ones are updated as
    ``nn.BatchNorm1d`` does (unbiased variance); ``C`` may be fewer than ``norm``'s channels
    (the first ``C`` are used).
    """
    channels = x.shape[-1]
    weight, bias = norm.weight[:channels], norm.bias[:channels]
    if not norm.training:
        mean, var = norm.running_mean[:channels], norm.running_var[:channels]
        return (x - mean) / torch.sqrt(var + norm.eps) * weight + bias
    w = torch.ones_like(x) if valid is None else valid.to(x.dtype).expand_as(x)
    dims = tuple(range(x.dim() - 1))
    count = w.sum(dims)  # (C,)
    mean = (x * w).sum(dims) / count.clamp(min=1)
    var = ((x - mean).square() * w).sum(dims) / count.clamp(min=1)  # biased, for the output
    with torch.no_grad():
        unbiased = var * count / (count - 1).clamp(min=1)
        norm.running_mean[:channels].lerp_(mean, norm.momentum)
        norm.running_var[:channels].lerp_(unbiased, norm.momentum)
        norm.num_batches_tracked.add_(1)
    return (x - mean) / torch.sqrt(var + norm.eps) * weight + bias


class BatchNorm(Block):
    """``nn.BatchNorm1d`` over features or time positions, padding-aware (:class:`~composer.configs.batch_norm.BatchNormConfig`)."""

    config: BatchNormConfig

    def __init__(self, config: BatchNormConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        channels = config.steps if config.over == "steps" else int(self._spec.features)
        self.norm = nn.BatchNorm1d(channels, eps=config.eps, momentum=config.momentum)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        if self._spec.kind == "vector":  # (B, D)
            return self.norm(x)
        mask = ctx.mask(self._spec)  # (B, T) or None
        use = mask if self.config.padding == "exclude" else None
        if self.config.over == "features":  # (B, T, D), channels last
            return weighted_batch_norm(x, None if use is None else use[..., None], self.norm)
        return self._over_steps(x, mask, use)

    def _over_steps(self, x: torch.Tensor, mask: torch.Tensor | None, use: torch.Tensor | None) -> torch.Tensor:
        """``(B, T, D)`` with the first ``steps`` positions as channels; later positions must be padding."""
        steps = min(x.shape[1], self.config.steps)
        if x.shape[1] > steps and (mask is None or bool(mask[:, steps:].any())):
            raise ComposerError(
                f"batch_norm (over: steps) has {self.config.steps} positions but a sample has valid steps past them "
                f"(time axis {x.shape[1]}); set `steps` to the data's padded length"
            )
        head = x[:, :steps].transpose(1, 2)  # (B, n, D) -> (B, D, n): positions last
        valid = None if use is None else use[:, None, :steps]  # (B, 1, n)
        out = weighted_batch_norm(head, valid, self.norm).transpose(1, 2)  # (B, n, D)
        if steps < x.shape[1]:
            out = torch.cat([out, out.new_zeros(x.shape[0], x.shape[1] - steps, x.shape[2])], dim=1)
        return out
