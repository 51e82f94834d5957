"""Aligning an unaligned sequence to another's time axis: MMSA's ``AlignSubNet`` modes
(config, shapes and equations: :mod:`composer.configs.align`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.align import AlignConfig
from composer.errors import DataError
from composer.spec import Spec

__all__ = ["Align", "interleaved_mean"]


def interleaved_mean(x: torch.Tensor, source_len: torch.Tensor, target_len: torch.Tensor, steps: int) -> torch.Tensor:
    """``y_j = (1/P) Σ_{p<P} x_{min(p·L + j, S-1)}`` with ``P = ⌈S/L⌉``, per sample.

    ``x (B, T_s, D)``, ``source_len`` S and ``target_len`` L ``(B,)`` (at least 1) -> ``(B, steps, D)``
    (steps at and after L are meaningless: the caller masks them). Each valid source step ``i``
    is added to slot ``i mod L``; the last step, repeated to fill ``P·L``, once more to the slots
    ``j >= S mod L`` (when ``L`` does not divide ``S``).
    """
    B, T, D = x.shape
    position = torch.arange(T, device=x.device)[None]  # (1, T_s)
    slot = torch.remainder(position, target_len[:, None])  # (B, T_s)
    slot = torch.where(position < source_len[:, None], slot, steps)  # padded source steps: a spare slot
    sums = x.new_zeros(B, steps + 1, D).scatter_add_(1, slot[..., None].expand(B, T, D), x)[:, :steps]  # (B, steps, D)
    rows = torch.div(source_len + target_len - 1, target_len, rounding_mode="floor")  # P = ceil(S / L)
    rest = torch.remainder(source_len, target_len)  # (B,)
    last = x.gather(1, (source_len - 1)[:, None, None].expand(B, 1, D))  # (B, 1, D): x_{S-1}
    slots = torch.arange(steps, device=x.device)[None]  # (1, steps)
    repeated = ((slots >= rest[:, None]) & (rest[:, None] > 0)).to(x.dtype)  # (B, steps)
    return (sums + repeated[..., None] * last) / rows[:, None, None].to(x.dtype)


class Align(Block):
    """MMSA's ``AlignSubNet`` for one source (:class:`~composer.configs.align.AlignConfig`)."""

    def __init__(self, config: AlignConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self._target, self._source = inputs["target"], inputs["source"]
        width = int(self._source.features)
        if config.mode == "ctc":
            self.ctc = nn.LSTM(width, config.steps + 1, num_layers=2, batch_first=True)  # position 0: the blank
        elif config.mode == "conv1d":
            self.conv = nn.Conv1d(config.source_steps, config.steps, kernel_size=1, bias=False)

    def _check(self, what: str, got: int, expected: int) -> None:
        if got != expected:
            raise DataError(
                f"align ({self.config.mode}): the {what} has {got} padded steps, but the block was built for {expected}; "
                "pad every batch to the modality's length"
            )

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        target, x = inputs["target"], inputs["source"]  # (B, T_t, ·), (B, T_s, D)
        B, T_t, T_s = x.shape[0], target.shape[1], x.shape[1]
        include = self.config.padding == "include"
        source_valid = None if include else ctx.mask(self._source)  # (B, T_s) or None
        target_valid = None if include else ctx.mask(self._target)  # (B, T_t) or None
        if source_valid is not None:
            x = x.masked_fill(~source_valid[..., None], 0.0)
        mode = self.config.mode
        if mode == "avg_pool":
            full = torch.full((B,), 1, dtype=torch.long, device=x.device)
            source_len = full * T_s if source_valid is None else source_valid.sum(1).clamp(min=1)
            target_len = full * T_t if target_valid is None else target_valid.sum(1).clamp(min=1)
            out = interleaved_mean(x, source_len, target_len, T_t)  # (B, T_t, D)
        elif mode == "ctc":
            self._check("target", T_t, self.config.steps)
            positions = self.ctc(x)[0].softmax(dim=-1)[..., 1:]  # (B, T_s, n): blank dropped
            if source_valid is not None:
                positions = positions * source_valid[..., None]
            out = positions.transpose(1, 2) @ x  # (B, n, T_s) @ (B, T_s, D) -> (B, n, D)
        else:
            self._check("target", T_t, self.config.steps)
            self._check("source", T_s, self.config.source_steps)
            out = self.conv(x)  # steps as channels: (B, T_s, D) -> (B, n, D)
        return out if target_valid is None else out.masked_fill(~target_valid[..., None], 0.0)
