"""Multi-head attention through ``F.scaled_dot_product_attention``, for MulT-style layers.

:class:`Attention` has the parameters of ``nn.MultiheadAttention`` (``in_proj_weight (3d, d)``,
``in_proj_bias (3d,)``, ``out_proj``), initialised in the same order with the same
distributions, so state dicts, parameter counts and seeded initialisations are unchanged; it
computes ``softmax(Q Kᵀ / √h_d + mask) V`` per head with PyTorch's fused kernels.

Two things make the fused kernels accept MulT's shapes:

* **Head dims padded to a multiple of 8.** MulT's head dims (5, 6, 10 ...) are refused by the
  memory-efficient and cuDNN kernels. Q, K and V are zero-padded on the head dim; zero columns
  add nothing to ``Q Kᵀ`` and give zero output columns, which are dropped, and the scale stays
  the original ``1/√h_d``. The result equals the unpadded attention.
* **One boolean mask.** The future (offset-triangular) mask and the key padding are combined
  once per encoder call into a ``(B, 1, Tq, Tk)`` mask (True = may attend), shared by every
  layer; the triangle itself is cached per (Tq, Tk, device).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import is_fake

__all__ = ["Attention", "attend_mask", "future_allowed", "HEAD_DIM_MULTIPLE"]

HEAD_DIM_MULTIPLE = 8


class Attention(nn.Module):
    """``softmax(Q Kᵀ/√h_d) V`` over ``heads`` heads: ``(B, Tq, d), (B, Tk, d), (B, Tk, d) -> (B, Tq, d)``."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} is not divisible by heads={heads}"
        self.embed_dim, self.num_heads, self.dropout = dim, heads, dropout
        self.head_dim = dim // heads
        self.padded_head_dim = -(-self.head_dim // HEAD_DIM_MULTIPLE) * HEAD_DIM_MULTIPLE
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)  # created (and drawn) before the in-projection, as nn.MultiheadAttention does
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, h: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """``(B, T, parts·d)`` -> ``parts`` × ``(B, H, T, h_d')``, head dims zero-padded."""
        h = h.unflatten(-1, (parts, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)  # (parts, B, H, T, h_d)
        pad = self.padded_head_dim - self.head_dim
        if pad:
            h = F.pad(h, (0, pad))  # zero columns: the same Q·K, zero extra output columns
        return list(h.unbind(0))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: bool, broadcastable to ``(B, H, Tq, Tk)``, True where a query may attend a key (or None)."""
        d, w, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        if key is query and value is query:  # self-attention: one projection for Q, K and V
            q, k, v = self._split(F.linear(query, w, b), 3)
        elif value is key:  # cross-attention: one projection for K and V
            (q,) = self._split(F.linear(query, w[:d], b[:d]), 1)
            k, v = self._split(F.linear(key, w[d:], b[d:]), 2)
        else:
            (q,) = self._split(F.linear(query, w[:d], b[:d]), 1)
            (k,) = self._split(F.linear(key, w[d : 2 * d], b[d : 2 * d]), 1)
            (v,) = self._split(F.linear(value, w[2 * d :], b[2 * d :]), 1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, scale=1.0 / math.sqrt(self.head_dim)
        )  # (B, H, Tq, h_d')
        out = out[..., : self.head_dim].transpose(1, 2).flatten(2)  # (B, H, Tq, h_d) -> (B, Tq, d)
        return self.out_proj(out)

    def extra_repr(self) -> str:
        return f"d={self.embed_dim}, heads={self.num_heads}, head_dim={self.head_dim} (kernels see {self.padded_head_dim})"


_TRIANGLES: dict[tuple[int, int, str], torch.Tensor] = {}


def future_allowed(query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
    """``(Tq, Tk)`` True where MulT's future mask allows attention (``j <= i + |Tk - Tq|``), cached."""
    if torch.compiler.is_compiling():  # traced lengths may be symbolic: build it in the graph, cache nothing
        return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(abs(key_len - query_len))
    key = (query_len, key_len, str(device))
    if key in _TRIANGLES:
        return _TRIANGLES[key]
    triangle = torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(abs(key_len - query_len))
    if not is_fake(triangle):  # made under a fake-tensor trace (the memory estimate): no data to keep
        if len(_TRIANGLES) > 64:
            _TRIANGLES.clear()
        _TRIANGLES[key] = triangle
    return triangle


def attend_mask(query_len: int, key_len: int, device: torch.device, *, causal: bool, key_padding: torch.Tensor | None) -> torch.Tensor | None:
    """One boolean mask for :class:`Attention` (True = may attend): MulT's future mask and/or the
    key padding ``(B, Tk)`` (True = padded, MulT's convention), as ``(B, 1, Tq, Tk)``, ``(Tq, Tk)`` or None."""
    allowed = future_allowed(query_len, key_len, device) if causal else None
    if key_padding is None:
        return allowed
    keys = ~key_padding[:, None, None, :]  # (B, 1, 1, Tk)
    return keys if allowed is None else keys & allowed
