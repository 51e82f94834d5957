"""MCTN's translation, regression head and feature padding (Pham et al., AAAI 2019, §3; configs,
equations and shapes: :mod:`composer.configs.translation`).

The recurrent parts work on batch-first tensors ``(N, L, D)``: with ``recur_over: time`` these are
``(B, T, D)`` (recurrence over time, padding masked); with ``batch`` they are the transposed
``(T, B, D)``, so the recurrence runs over the samples as MMSA 2.2.1's LSTMs do (no mask).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from composer.blocks._base import Block, Context
from composer.configs.translation import PadFeaturesConfig, RecurrentAttentionHeadConfig, TranslationDecoderConfig, TranslationEncoderConfig
from composer.spec import Spec

__all__ = ["TranslationEncoder", "TranslationDecoder", "RecurrentAttentionHead", "PadFeatures", "run_lstm"]


def run_lstm(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (N, L, D)`` -> outputs ``(N, L, H·dirs)`` and final hidden states ``(dirs, N, H)``;
    packed by the CPU ``lengths`` (N,) when given (:meth:`Context.packing_lengths`; padded outputs
    zero, final states at each sample's last step)."""
    if lengths is None:
        out, (h_n, _) = rnn(x)
        return out, h_n
    packed = pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
    out, (h_n, _) = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h_n


def _layout(x: torch.Tensor, recur_over: str) -> torch.Tensor:
    """``(B, T, D)`` -> the recurrent layout ``(N, L, D)`` (and back: the map is its own inverse)."""
    return x.transpose(0, 1) if recur_over == "batch" else x


class TranslationEncoder(Block):
    """MCTN's encoder (:class:`~composer.configs.translation.TranslationEncoderConfig`)."""

    def __init__(self, config: TranslationEncoderConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        self.rnn = nn.LSTM(int(self._spec.features), config.hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()  # (B, T, D)
        lengths = ctx.packing_lengths(self._spec, x.shape[1]) if self.config.recur_over == "time" else None
        directions, _ = run_lstm(self.rnn, _layout(x, self.config.recur_over), lengths)
        directions = _layout(directions, self.config.recur_over)  # (B, T, 2H)
        h = self.config.hidden
        return {"out": self.dropout(directions[..., :h] + directions[..., h:]), "directions": directions}


class TranslationDecoder(Block):
    """MCTN's teacher-forced attention decoder (:class:`~composer.configs.translation.TranslationDecoderConfig`)."""

    def __init__(self, config: TranslationDecoderConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        h, d_t = int(inputs["memory"].features), int(inputs["target"].features)
        self.state = nn.Linear(h, h, bias=False)  # W_s
        self.attention = nn.ModuleDict({"attn": nn.Linear(2 * h, h, bias=False), "v": nn.Linear(h, 1, bias=False)})
        self.rnn = nn.LSTM(d_t + h, h, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * h, d_t)  # W_o

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        recur_over = self.config.recur_over
        mask = ctx.mask(self.in_specs["target"]) if recur_over == "time" else None  # (B, T) or None
        memory, directions, target = (_layout(inputs[p], recur_over) for p in ("memory", "directions", "target"))  # (N, L, ·)
        h = memory.shape[-1]
        last = (mask.sum(1) - 1).clamp(min=0) if mask is not None else torch.full((memory.shape[0],), memory.shape[1] - 1)
        forward_end = directions[torch.arange(directions.shape[0]), last.to(directions.device), :h]  # h→ at the last step, (N, H)
        s = torch.tanh(self.state(forward_end + directions[:, 0, h:]))  # s_1 from h→_T + h←_1, (N, H)
        steps = [torch.zeros_like(target[:, 0])]  # ŷ_1 = 0: the target's first step is the first input
        for t in range(1, target.shape[1]):
            context = self._context(s, memory, mask)  # c_t, (N, H)
            decoded, _ = self.rnn(torch.cat([target[:, t - 1], context], dim=-1)[:, None])  # one step from zero, (N, 1, 2H)
            d = decoded[:, 0, :h] + decoded[:, 0, h:]  # d_t, (N, H)
            steps.append(self.out(torch.cat([d, context], dim=-1)))  # ŷ_t, (N, D_t)
            s = d
        translation = torch.stack(steps, dim=1)  # (N, L, D_t)
        if mask is not None:
            translation = translation * mask[..., None].to(translation.dtype)
        return _layout(translation, recur_over)

    def _context(self, s: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``c = Σ_j softmax_j(v · tanh(W_a [s; e_j])) e_j`` over the valid steps j."""
        query = s[:, None].expand(-1, memory.shape[1], -1)  # (N, L, H)
        scores = self.attention["v"](torch.tanh(self.attention["attn"](torch.cat([query, memory], dim=-1)))).squeeze(-1)  # (N, L)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.bmm(F.softmax(scores, dim=1)[:, None], memory)[:, 0]  # (N, H)


class RecurrentAttentionHead(Block):
    """MCTN's regression on the joint representation (:class:`~composer.configs.translation.RecurrentAttentionHeadConfig`)."""

    def __init__(self, config: RecurrentAttentionHeadConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        width = config.width(self._spec)
        self.rnn = nn.LSTM(int(self._spec.features), width, batch_first=True)
        self.score = nn.Linear(width, 1)
        self.out = nn.Linear(width, config.out)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        mask = ctx.mask(self._spec) if self.config.recur_over == "time" else None
        lengths = ctx.packing_lengths(self._spec, x.shape[1]) if mask is not None else None
        states, _ = run_lstm(self.rnn, _layout(x, self.config.recur_over), lengths)
        states = _layout(states, self.config.recur_over)  # (B, T, H)
        scores = torch.tanh(self.score(states)).squeeze(-1)  # (B, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        pooled = (states * F.softmax(scores, dim=1)[..., None]).sum(dim=1)  # Σ_t α_t r_t, (B, H)
        return self.out(pooled)


class PadFeatures(Block):
    """Zeros appended to the last axis (:class:`~composer.configs.translation.PadFeaturesConfig`)."""

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return F.pad(x, (0, self.config.width - x.shape[-1]))
