"""Mutual Promotion Unit (EMT-DLFR, Sun et al., eq. 5): the attention layers EMT is built from,
and the ``mpu`` block (config, shapes and equations: :mod:`composer.configs.mpu`).

:class:`MultiHeadAttention`, :class:`FeedForward` and :class:`PromotionUnit` (one directional
sub-MPU) are plain ``nn.Module``s that :mod:`composer.blocks.fusion.emt` wires into the three
fusion strategies; :class:`MPU` is one directional MPU as a block of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.mpu import FFNKind, MPUConfig
from composer.layers.mult import key_padding
from composer.spec import Spec

__all__ = ["MultiHeadAttention", "FeedForward", "PromotionUnit", "MPU"]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``heads`` heads (eqs. 2-3).

    ``forward(x (B, Tq, d), context (B, Tk, d), key_padding (B, Tk) True = PAD | None)``
    returns ``(B, Tq, d)``. Dropout acts on the attention weights.
    """

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        assert dim % heads == 0, f"width {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.to_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        B, Tq, d = x.shape
        Tk = context.shape[1]
        h = self.heads
        q = self.to_q(x).view(B, Tq, h, d // h).transpose(1, 2)  # (B, Tq, d) -> (B, h, Tq, d/h)
        k, v = self.to_kv(context).chunk(2, dim=-1)  # 2 × (B, Tk, d)
        k = k.reshape(B, Tk, h, d // h).transpose(1, 2)  # (B, h, Tk, d/h)
        v = v.reshape(B, Tk, h, d // h).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale  # (B, h, Tq, Tk)
        if key_padding is not None:
            key_padding = key_padding & ~key_padding.all(dim=-1, keepdim=True)  # an all-padded row attends to all (no NaN)
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v)  # (B, h, Tq, d/h)
        return self.to_out(out.transpose(1, 2).reshape(B, Tq, d))  # (B, Tq, d)


class FeedForward(nn.Module):
    """Position-wise feed-forward network ``(B, T, d) -> (B, T, d)`` (see :mod:`composer.configs.mpu`)."""

    def __init__(self, dim: int, expansion: int, kind: FFNKind = "relu", dropout: float = 0.0):
        super().__init__()
        hidden = dim * expansion
        self.kind = kind
        self.fc1 = nn.Linear(dim, 2 * hidden if kind == "geglu" else hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.kind == "geglu":
            value, gate = h.chunk(2, dim=-1)  # (B, T, 2·e·d) -> 2 × (B, T, e·d)
            h = value * F.gelu(gate)
        elif self.kind == "gelu":
            h = F.gelu(h)
        else:
            h = F.relu(h)
        return self.dropout(self.fc2(h))


class PromotionUnit(nn.Module):
    """One directional MPU, ``MPU_{n→m}(H_m, H_n) -> H_{n→m}`` (eq. 5, pre-LN).

    ``forward(h (B, Tm, d), context (B, Tn, d), h_padding (B, Tm) | None,
    context_padding (B, Tn) | None) -> (B, Tm, d)``; masks are True on padded steps.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        expansion: int = 4,
        ffn: FFNKind = "relu",
        attn_dropout: float = 0.0,
        ffn_dropout: float = 0.0,
        qkv_bias: bool = False,
    ):
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, heads, dropout=attn_dropout, qkv_bias=qkv_bias)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, heads, dropout=attn_dropout, qkv_bias=qkv_bias)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, expansion, ffn, ffn_dropout)

    def forward(
        self,
        h: torch.Tensor,
        context: torch.Tensor,
        h_padding: torch.Tensor | None = None,
        context_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = h + self.cross_attn(self.norm_query(h), self.norm_context(context), context_padding)  # H'
        normed = self.norm_self(h)
        h = h + self.self_attn(normed, normed, h_padding)  # H''
        return h + self.ffn(self.norm_ffn(h))


# -- the `mpu` block ---------------------------------------------------------------------


class MPU(Block):
    """One directional Mutual Promotion Unit as a block (:class:`~composer.configs.mpu.MPUConfig`)."""

    def __init__(self, config: MPUConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.unit = PromotionUnit(
            int(inputs["target"].features), config.heads, expansion=config.ffn_expansion, ffn=config.ffn,
            attn_dropout=config.attn_dropout, ffn_dropout=config.ffn_dropout, qkv_bias=config.qkv_bias,
        )

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        valid = ctx.mask(self.in_specs["target"])
        out = self.unit(inputs["target"], inputs["source"], key_padding(valid), key_padding(ctx.mask(self.in_specs["source"])))
        return out if valid is None else out.masked_fill(~valid[..., None], 0.0)  # (B, Tm, d), padded steps zeroed
