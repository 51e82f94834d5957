"""Recurrent encoders: LSTM and GRU over a sequence, packed by lengths when a mask exists."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from composer.blocks._base import Block, BlockConfig, Context, expect_kind, expect_ports
from composer.registry import register_block
from composer.spec import Spec, sequence


class _RNNConfig(BlockConfig):
    hidden: int = Field(ge=1, description="Hidden width per direction.")
    layers: int = Field(default=1, ge=1)
    bidirectional: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout between stacked layers.")
    output: Literal["sequence", "last", "both"] = Field(
        default="sequence",
        description="sequence: all steps (B, T, H); last: final state (B, H); both: ports `seq` and `last`.",
    )
    packed: bool = Field(default=True, description="Skip padded steps using the input's mask (pack_padded_sequence).")


def rnn_outputs(config: _RNNConfig, spec: Spec) -> dict[str, Spec]:
    width = config.hidden * (2 if config.bidirectional else 1)
    seq = spec.with_features(width)
    last = Spec("vector", (spec.batch, width))
    return {"sequence": {"out": seq}, "last": {"out": last}, "both": {"seq": seq, "last": last}}[config.output]


class _RNNBlock(Block):
    rnn_class: type[nn.RNNBase]

    @classmethod
    def infer(cls, config: _RNNConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        return rnn_outputs(config, spec)

    @classmethod
    def examples(cls):
        return [
            ({"hidden": 6}, {"in": sequence("T_x", 5)}),
            ({"hidden": 4, "layers": 2, "bidirectional": True, "output": "both"}, {"in": sequence("T_x", 3)}),
            ({"hidden": 4, "output": "last", "packed": False}, {"in": sequence(7, 3)}),
        ]

    def __init__(self, config: _RNNConfig, inputs: dict[str, Spec]):
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
        lengths = ctx.lengths_of(self._spec) if self.config.packed else None
        if lengths is not None:
            host = ctx.host_lengths_of(self._spec)  # Python ints from Composer's loaders: no device read
            lengths = torch.tensor(host) if host is not None else lengths.cpu()
            if host is not None and min(host) >= x.shape[1]:
                lengths = None  # nothing is padded: packing would change nothing
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


class LSTMConfig(_RNNConfig):
    type: Literal["lstm"] = "lstm"


@register_block(LSTMConfig, family="encoder")
class LSTMEncoder(_RNNBlock):
    """Stacked LSTM. Input ``sequence (B, T, D)``; output ``(B, T, H·dirs)`` and/or last state ``(B, H·dirs)``.

    With a padding mask the sequence is packed, so the last state is the state at each
    sample's true last step and padded outputs are zero.
    """

    rnn_class = nn.LSTM


class GRUConfig(_RNNConfig):
    type: Literal["gru"] = "gru"


@register_block(GRUConfig, family="encoder")
class GRUEncoder(_RNNBlock):
    """Stacked GRU. Input ``sequence (B, T, D)``; output ``(B, T, H·dirs)`` and/or last state ``(B, H·dirs)``."""

    rnn_class = nn.GRU
