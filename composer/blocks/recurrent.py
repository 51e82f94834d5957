"""Recurrent encoders: LSTM and GRU over a sequence, packed by lengths when a mask exists
(configs and output specs: :mod:`composer.configs.recurrent`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from composer.blocks._base import Block, Context
from composer.configs.recurrent import GRUConfig, LSTMConfig
from composer.spec import Spec

__all__ = ["LSTMEncoder", "GRUEncoder"]


class _RNNBlock(Block):
    """An ``nn.LSTM`` / ``nn.GRU`` over a sequence, packed by the padding mask (:mod:`composer.configs.recurrent`)."""

    rnn_class: type[nn.RNNBase]

    def __init__(self, config: LSTMConfig | GRUConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        self.rnn = self.rnn_class(
            self._spec.features,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context):
        (x,) = inputs.values()  # (B, T, D)
        lengths = ctx.packing_lengths(self._spec, x.shape[1]) if self.config.packed else None
        if lengths is not None and torch.compiler.is_compiling() and not self.config.bidirectional:
            return self._gathered(x, ctx)
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
            seq, state = self.rnn(packed)
            if self.config.output != "last":  # unpacking costs time; skip it when only h_T is used
                seq, _ = pad_packed_sequence(seq, batch_first=True, total_length=x.shape[1])  # (B, T, H*dirs)
        else:
            seq, state = self.rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers*dirs, B, H)
        if self.config.output == "sequence":
            return seq
        dirs = 2 if self.config.bidirectional else 1
        last = h_n[-1] if dirs == 1 else torch.cat([h_n[-2], h_n[-1]], dim=-1)  # (B, H*dirs)
        if self.config.output == "last":
            return last
        return {"seq": seq, "last": last}

    def _gathered(self, x: torch.Tensor, ctx: Context):
        """The packed result without packing, for ``torch.compile`` (which does not trace
        ``pack_padded_sequence``): a one-directional RNN never looks ahead, so on the padded
        input its outputs at valid steps are the packed ones; the last state is read at each
        sample's last valid step and padded outputs are zeroed, as packing leaves them."""
        seq, _ = self.rnn(x)  # (B, T, H)
        valid = ctx.mask(self._spec)  # (B, T)
        last_index = (valid.sum(1).clamp(min=1) - 1).long()  # (B,)
        last = seq.gather(1, last_index[:, None, None].expand(-1, 1, seq.shape[-1])).squeeze(1)  # (B, H)
        seq = seq * valid[..., None].to(seq.dtype)
        if self.config.output == "sequence":
            return seq
        if self.config.output == "last":
            return last
        return {"seq": seq, "last": last}


class LSTMEncoder(_RNNBlock):
    """Stacked LSTM, packed by the padding mask (:class:`~composer.configs.recurrent.LSTMConfig`)."""

    rnn_class = nn.LSTM


class GRUEncoder(_RNNBlock):
    """Stacked GRU, packed by the padding mask (:class:`~composer.configs.recurrent.GRUConfig`)."""

    rnn_class = nn.GRU
