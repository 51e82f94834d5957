"""Fixed sinusoidal position embeddings (Vaswani et al. 2017; fairseq layout used by MulT), cached per shape."""

from __future__ import annotations

import math

import torch
from torch._subclasses.fake_tensor import is_fake


def sinusoidal_positions(length: int, dim: int, *, offset: int = 1, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(length, dim)`` table: first half ``sin(p·ω_i)``, second half ``cos(p·ω_i)``.

    ``ω_i = 10000^(-i/(dim/2 - 1))``, positions ``p = offset .. offset+length-1`` (fairseq
    starts at 1, the padding index plus one); an odd ``dim`` gets a zero last column.
    """
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -scale)
    pos = torch.arange(offset, offset + length, device=device, dtype=torch.float32)
    angles = pos[:, None] * freqs[None, :]  # (T, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length, 1, device=device)], dim=1)
    return table.to(dtype)


_TABLES: dict[tuple, torch.Tensor] = {}


def cached_positions(length: int, dim: int, *, offset: int = 1, device=None, dtype=torch.float32) -> torch.Tensor:
    """:func:`sinusoidal_positions`, built once per (length, dim, offset, device, dtype) and reused.

    Under ``torch.compile`` the table is computed in the graph instead (no Python cache)."""
    if torch.compiler.is_compiling():
        return sinusoidal_positions(length, dim, offset=offset, device=device, dtype=dtype)
    key = (length, dim, offset, str(device), dtype)
    table = _TABLES.get(key)
    if table is None:
        table = sinusoidal_positions(length, dim, offset=offset, device=device, dtype=dtype)
        if not is_fake(table):  # made under a fake-tensor trace (the memory estimate): no data to keep
            if len(_TABLES) > 128:
                _TABLES.clear()
            _TABLES[key] = table
    return table
