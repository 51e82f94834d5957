"""Counting multiply-accumulates (MACs) and FLOPs of a forward pass.

Convention: we count with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
the matrix products (``mm``, ``bmm``, ``addmm``, convolutions, scaled-dot-product attention)
as ``2 × MACs`` and ignores element-wise work (activations, normalisation, softmax, adds).
The fused recurrent kernels of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` are invisible to that
counter, so when ``module`` is given their products are added by formula: per real (unpadded)
step, layer and direction ``gates · (D_in·H + H·H)`` MACs with 4 gates (LSTM), 3 (GRU), 1 (RNN).
``count_macs`` reports ``FLOPs / 2``; papers that report "FLOPs" for such counters usually
mean MACs, so compare the ratio, not the convention, unless a paper states its own.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "count_macs"]


GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _rnn_macs(rnn: nn.RNNBase, x: Any) -> int:
    """MACs of one call of a recurrent module on ``x`` (a tensor or a PackedSequence)."""
    if isinstance(x, PackedSequence):
        steps = int(x.batch_sizes.sum())
    else:
        steps = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    gates, hidden, dirs = GATES[rnn.mode.split("_")[0]], rnn.hidden_size, 2 if rnn.bidirectional else 1
    total = 0
    for layer in range(rnn.num_layers):
        width_in = rnn.input_size if layer == 0 else hidden * dirs
        total += dirs * steps * gates * (width_in * hidden + hidden * hidden)
    return total


def count_flops(fn: Callable[[], Any], module: nn.Module | None = None) -> int:
    """Matrix-product FLOPs of calling ``fn()`` (forward only; autograd stays on because the
    counter's module tracker hooks tensors that require gradients). With ``module``, the
    recurrent layers inside it are counted by formula (see the module docstring)."""
    extra = [0]
    hooks = []
    if module is not None:
        for sub in module.modules():
            if isinstance(sub, nn.RNNBase):
                hooks.append(sub.register_forward_hook(lambda m, args, out: extra.__setitem__(0, extra[0] + 2 * _rnn_macs(m, args[0]))))
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        for h in hooks:
            h.remove()
    return int(counter.get_total_flops()) + extra[0]


def count_macs(fn: Callable[[], Any], module: nn.Module | None = None) -> int:
    """Multiply-accumulates of calling ``fn()`` (``count_flops // 2``)."""
    return count_flops(fn, module) // 2
