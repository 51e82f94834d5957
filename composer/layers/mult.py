"""The transformer of MulT (Tsai et al., ACL 2019), self- and cross-modal.

Faithful to the public implementation: inputs scaled by ``√d`` plus sinusoidal positions and
embedding dropout (drawn independently for the key and the value copies of the source, as
the public code embeds ``x_k`` and ``x_v`` separately); each layer is pre-LN where *one*
LayerNorm normalises query, key and value, multi-head attention, residual dropout, then
``fc1 (d→4d) → ReLU → dropout → fc2`` with a second pre-LN; a final LayerNorm; key and value
are not updated across layers; Xavier-uniform weights (attention input *and* output
projections, feed-forward) with zero biases. Optional causal mask and key padding masks.

Differences from the public code, on purpose: the public code derives positions from the
first feature channel treated as a token id, so a step whose first feature is exactly 0 gets
the (zero) padding position; here every step gets its position, and padding is handled by
``key_padding_mask`` instead (the public code has no padding masks).

Parameters per layer: ``12d² + 13d``; plus ``2d`` for the final LayerNorm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from composer.layers.attention import Attention, attend_mask, future_allowed
from composer.layers.positional import cached_positions

__all__ = ["MulTLayer", "MulTEncoder", "future_mask", "key_padding", "encoder_from"]


def future_mask(query_len: int, key_len: int, device=None) -> torch.Tensor:
    """Bool ``(Tq, Tk)`` mask, True where attention is forbidden (MulT's buffered_future_mask)."""
    return ~future_allowed(query_len, key_len, torch.device(device or "cpu"))


def _linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MulTLayer(nn.Module):
    """One pre-LN (cross-)attention layer: ``x + Attn(LN(x), LN(k), LN(v))`` then ``x + FFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0, relu_dropout: float = 0.0, res_dropout: float = 0.0):
        super().__init__()
        self.attn = Attention(dim, heads, dropout=attn_dropout)
        nn.init.xavier_uniform_(self.attn.out_proj.weight)  # MulT resets out_proj like in_proj
        self.fc1 = _linear(dim, 4 * dim)
        self.fc2 = _linear(4 * dim, dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.relu_dropout = relu_dropout
        self.res_dropout = res_dropout

    def forward(
        self,
        x: torch.Tensor,
        source: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x (B, Tq, d)``, ``source (B, Tk, d)`` or None (self-attention); ``mask`` from
        :func:`~composer.layers.attention.attend_mask` (True = may attend) or None.

        ``value (B, Tk, d)``: a separate value copy of the source (default: the source itself).
        """
        residual = x
        q = self.norms[0](x)
        k = q if source is None else self.norms[0](source)
        v = k if value is None else self.norms[0](value)
        h = self.attn(q, k, v, mask)
        x = residual + F.dropout(h, self.res_dropout, self.training)
        residual = x
        h = F.relu(self.fc1(self.norms[1](x)))
        h = self.fc2(F.dropout(h, self.relu_dropout, self.training))
        return residual + F.dropout(h, self.res_dropout, self.training)


class MulTEncoder(nn.Module):
    """A stack of :class:`MulTLayer`; cross-modal when a source is given.

    ``forward(x (B, Tq, d), source (B, Tk, d) | None, key_padding_mask (B, Tk) True=pad)``
    returns ``(B, Tq, d)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        *,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        causal: bool = False,
        positions: bool = True,
    ):
        super().__init__()
        self.dim = dim
        self.scale = math.sqrt(dim)
        self.embed_dropout = embed_dropout
        self.causal = causal
        self.positions = positions
        self.layers = nn.ModuleList(
            MulTLayer(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``√d · x + positions``, then embedding dropout."""
        x = self.scale * x
        if self.positions:
            x = x + cached_positions(x.shape[1], self.dim, device=x.device, dtype=x.dtype)[None]
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(x)  # (B, Tq, d)
        key = value = None
        if source is not None:
            key = self.embed(source)  # (B, Tk, d)
            # The public code embeds key and value separately: distinct dropout masks in training.
            value = self.embed(source) if self.training and self.embed_dropout > 0 else None
        key_len = (key if key is not None else x).shape[1]
        mask = attend_mask(x.shape[1], key_len, x.device, causal=self.causal, key_padding=key_padding_mask)  # one mask, every layer
        for layer in self.layers:
            x = layer(x, key, mask=mask, value=value)
        return self.norm(x)


def key_padding(valid: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, T)`` True = valid -> ``(B, T)`` True = PAD (MulT's convention), or None.

    A sample without any valid step would leave every attention row empty (NaN); it may
    attend everywhere instead (its outputs are meaningless and masked by the caller).
    """
    if valid is None:
        return None
    return ~valid & valid.any(dim=1, keepdim=True)


def encoder_from(width: int, settings, layers: int | None = None) -> MulTEncoder:
    """A :class:`MulTEncoder` from a config with ``heads``, ``layers``, dropouts, ``causal``, ``positions``."""
    return MulTEncoder(
        width,
        settings.heads,
        layers if layers is not None else settings.layers,
        attn_dropout=settings.attn_dropout,
        relu_dropout=settings.relu_dropout,
        res_dropout=settings.res_dropout,
        embed_dropout=settings.embed_dropout,
        causal=settings.causal,
        positions=settings.positions,
    )
