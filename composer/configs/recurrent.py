"""Recurrent encoders: LSTM and GRU over a sequence, packed by lengths when a mask exists.

``lstm`` / ``gru``: ``sequence (B, T, D) -> (B, T, H·dirs)`` and/or the last state
``(B, H·dirs)`` (see :func:`rnn_outputs`). Modules: :mod:`composer.blocks.recurrent`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, expect_kind, expect_ports
from composer.configs._shapes import rnn, under
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["LSTMConfig", "GRUConfig", "rnn_outputs"]

MODULES = "composer.blocks.recurrent"


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

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        return rnn_outputs(self, spec)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        return under("rnn", rnn(self.type, int(spec.features), self.hidden, self.layers, self.bidirectional))

    @classmethod
    def examples(cls):
        return [
            ({"hidden": 6}, {"in": sequence("T_x", 5)}),
            ({"hidden": 4, "layers": 2, "bidirectional": True, "output": "both"}, {"in": sequence("T_x", 3)}),
            ({"hidden": 4, "output": "last", "packed": False}, {"in": sequence(7, 3)}),
        ]


def rnn_outputs(config: _RNNConfig, spec: Spec) -> dict[str, Spec]:
    width = config.hidden * (2 if config.bidirectional else 1)
    seq = spec.with_features(width)
    last = Spec("vector", (spec.batch, width))
    return {"sequence": {"out": seq}, "last": {"out": last}, "both": {"seq": seq, "last": last}}[config.output]


@block_type("encoder", implementation=f"{MODULES}:LSTMEncoder")
class LSTMConfig(_RNNConfig):
    """Stacked LSTM. Input ``sequence (B, T, D)``; output ``(B, T, H·dirs)`` and/or last state ``(B, H·dirs)``.

    With a padding mask the sequence is packed, so the last state is the state at each
    sample's true last step and padded outputs are zero.
    """

    type: Literal["lstm"] = "lstm"


@block_type("encoder", implementation=f"{MODULES}:GRUEncoder")
class GRUConfig(_RNNConfig):
    """Stacked GRU. Input ``sequence (B, T, D)``; output ``(B, T, H·dirs)`` and/or last state ``(B, H·dirs)``."""

    type: Literal["gru"] = "gru"
