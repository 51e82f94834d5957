"""Pooling over time: a sequence to a vector (``pool``) or to a fixed number of steps
(``adaptive_max_pool``), both honouring the padding mask."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind, expect_ports
from composer.registry import register_block
from composer.spec import Spec, sequence

__all__ = ["PoolConfig", "Pool", "AdaptiveMaxPoolConfig", "AdaptiveMaxPool", "masked_pool"]


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


class PoolConfig(BlockConfig):
    type: Literal["pool"] = "pool"
    mode: Literal["mean", "max", "last", "first", "attention"] = Field(
        default="mean",
        description=(
            "mean / max: over valid steps; first / last: the first / last valid step; attention: "
            "softmax(vᵀ tanh(W x_t)) weights over valid steps."
        ),
    )
    hidden: int | None = Field(
        default=None, ge=1, description="Width of W in attention mode (default: the input width); unused otherwise."
    )


@register_block(PoolConfig, family="pooling")
class Pool(Block):
    """Pool a sequence over time: ``sequence (B, T, D) -> vector (B, D)``.

    Padded steps (the input's mask) are ignored by every mode. ``attention`` learns
    ``a_t = softmax_t(vᵀ tanh(W x_t + b))`` over the valid steps and returns ``Σ_t a_t x_t``
    (additive attention pooling; parameters ``D·h + h + h``).
    """

    @classmethod
    def infer(cls, config: PoolConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        if config.hidden is not None and config.mode != "attention":
            raise SpecError(f"`hidden` is only used by mode 'attention', not '{config.mode}'", field="hidden")
        return {"out": Spec("vector", (spec.batch, spec.features))}

    @classmethod
    def examples(cls):
        return [
            ({"mode": mode}, {"in": sequence("T_x", 4)}) for mode in ("mean", "max", "last", "first", "attention")
        ] + [({"mode": "attention", "hidden": 3}, {"in": sequence(5, 4)})]

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


class AdaptiveMaxPoolConfig(BlockConfig):
    type: Literal["adaptive_max_pool"] = "adaptive_max_pool"
    steps: int = Field(ge=1, description="Output time steps n.")


@register_block(AdaptiveMaxPoolConfig, family="pooling")
class AdaptiveMaxPool(Block):
    """Adaptive max pooling over time: ``sequence (B, T, D) -> sequence (B, n, D)``.

    Output step ``i`` is the max over steps ``[⌊iL/n⌋, ⌈(i+1)L/n⌉)`` where ``L`` is each
    sample's valid length (``T`` without a mask) — ``nn.AdaptiveMaxPool1d`` applied to the
    unpadded sequence. The new time axis is the int ``n`` and has no padding. No parameters.
    """

    @classmethod
    def infer(cls, config: AdaptiveMaxPoolConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        return {"out": Spec("sequence", (spec.batch, config.steps, spec.features))}

    @classmethod
    def examples(cls):
        return [({"steps": 3}, {"in": sequence("T_x", 4)}), ({"steps": 4}, {"in": sequence(10, 2)})]

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
