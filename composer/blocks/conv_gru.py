"""Feature projection of HCT-MG (§4): a 1-D convolution to the hidden width, then a GRU."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from composer.blocks._base import Block, BlockConfig, Context, expect_kind, expect_ports
from composer.registry import register_block
from composer.blocks.projection import Conv1dConfig, Conv1dProjection, Padding
from composer.blocks.recurrent import GRUConfig, GRUEncoder
from composer.spec import Spec, sequence

__all__ = ["ConvGRUConfig", "ConvGRU"]


class ConvGRUConfig(BlockConfig):
    type: Literal["conv_gru"] = "conv_gru"
    hidden: int = Field(ge=1, description="Hidden width d (Conv1d output channels and GRU hidden size).")
    kernel: int = Field(default=1, ge=1, description="Conv1d kernel size (HCT-MG Table 8: 1 for every modality).")
    padding: Padding = Field(
        default="same", description="Conv1d padding: same (keeps the length), valid, or an int per side."
    )
    bias: bool = Field(default=True, description="Conv1d bias.")
    gru_layers: int = Field(default=1, ge=1, description="Stacked GRU layers.")
    packed: bool = Field(default=True, description="Run the GRU on packed sequences using the padding mask.")


@register_block(ConvGRUConfig, family="encoder")
class ConvGRU(Block):
    """Conv1d then GRU, per modality: ``sequence (B, T, D) -> (B, T', d)``.

    HCT-MG §4 *Feature Projection*: ``Conv1d(D → d, kernel)`` integrates local context and
    projects every modality to the same width; a GRU ``d → d`` encodes global context. Built
    from the ``conv1d`` and ``gru`` blocks, so the time rules are theirs: ``T' = T`` and the
    time symbol (and padding mask) is kept when the convolution keeps the length (kernel 1,
    or ``same`` padding at stride 1); padded steps are zeroed before the convolution and
    skipped by the packed GRU (padded outputs are zero).
    Parameters: ``k·D·d (+ d)`` + ``gru_layers · 3(2d² + 2d)``.
    """

    @classmethod
    def infer(cls, config: ConvGRUConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        projected = Conv1dProjection.infer(cls._conv_config(config), inputs)
        return {"out": projected["out"]}

    @classmethod
    def examples(cls):
        return [
            ({"hidden": 4}, {"in": sequence("T_x", 6)}),
            ({"hidden": 4, "kernel": 3, "bias": False, "gru_layers": 2}, {"in": sequence("T_x", 3)}),
            ({"hidden": 3, "kernel": 3, "padding": "valid", "packed": False}, {"in": sequence(8, 5)}),
        ]

    @staticmethod
    def _conv_config(config: ConvGRUConfig) -> Conv1dConfig:
        return Conv1dConfig(inputs="in", out=config.hidden, kernel=config.kernel, padding=config.padding, bias=config.bias)

    def __init__(self, config: ConvGRUConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.conv = Conv1dProjection(self._conv_config(config), inputs)
        gru_config = GRUConfig(inputs="in", hidden=config.hidden, layers=config.gru_layers, packed=config.packed)
        self.gru = GRUEncoder(gru_config, self.conv.out_specs)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        h = self.conv({"in": x}, ctx)  # (B, T', d)
        return self.gru({"in": h}, ctx)  # (B, T', d)
