"""``limit_length``: a sequence read only as far as another input's valid length (config, shape
rule and MMSA's MISA reading it expresses: :mod:`composer.configs.lengths`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context, length_mask
from composer.configs.lengths import LimitLengthConfig
from composer.spec import Spec

__all__ = ["LimitLength"]


class LimitLength(Block):
    """``x`` on a new time axis valid for ``min(L_by, L_x)`` (or ``min(L_by, T)``) steps
    (:class:`~composer.configs.lengths.LimitLengthConfig`)."""

    config: LimitLengthConfig

    def __init__(self, config: LimitLengthConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self._x, self._by = inputs["x"], inputs["by"]
        self._time = self.out_specs["out"].time

    def _lengths(self, spec: Spec, ctx: Context, steps: int, batch: int, device) -> tuple[torch.Tensor, list[int] | None]:
        """Valid steps of one input ``(B,)`` (all ``steps`` without a mask) and, where the batch
        brought them, the same as Python ints."""
        lengths = ctx.lengths_of(spec)
        if lengths is None:
            return torch.full((batch,), steps, dtype=torch.long, device=device), [steps] * batch
        return lengths.to(device), ctx.host_lengths_of(spec)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        x, by = inputs["x"], inputs["by"]  # (B, T, D), (B, T') or (B, T', D')
        B, T = x.shape[0], x.shape[1]
        n, host = self._lengths(self._by, ctx, by.shape[1], B, x.device)  # L_by
        if self.config.padding == "exclude":
            own, own_host = self._lengths(self._x, ctx, T, B, x.device)  # L_x
            n = torch.minimum(n, own)
            host = [min(a, b) for a, b in zip(host, own_host)] if host is not None and own_host is not None else None
        n = n.clamp(max=T)  # (B,)
        valid = length_mask(n, T)  # (B, T)
        ctx.masks[self._time] = valid
        ctx.lengths[self._time] = n
        if host is not None:
            ctx.host_lengths[self._time] = [min(h, T) for h in host]
        return x.masked_fill(~valid[..., None], 0.0)  # steps past n_b zeroed
