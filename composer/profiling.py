"""Counting multiply-accumulates (MACs) and FLOPs of a forward pass.

Convention: we count with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
the matrix products (``mm``, ``bmm``, ``addmm``, convolutions, scaled-dot-product attention)
as ``2 × MACs`` and ignores element-wise work (activations, normalisation, softmax, adds).
``count_macs`` reports ``FLOPs / 2``; papers that report "FLOPs" for such counters usually
mean MACs, so compare the ratio, not the convention, unless a paper states its own.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_macs"]


def count_flops(fn: Callable[[], Any]) -> int:
    """Matrix-product FLOPs of calling ``fn()`` (forward only; autograd stays on because the
    counter's module tracker hooks tensors that require gradients)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates of calling ``fn()`` (``count_flops // 2``)."""
    return count_flops(fn) // 2
