"""Feature projection of HCT-MG (§4): a 1-D convolution to the hidden width, then a GRU.

``conv_gru``: ``sequence (B, T, D) -> (B, T', d)``, built from the ``conv1d`` and ``gru``
configs (:mod:`composer.configs.projection`, :mod:`composer.configs.recurrent`).
Module: :mod:`composer.blocks.conv_gru`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, expect_kind, expect_ports
from composer.configs._shapes import under
from composer.configs.projection import Conv1dConfig, Padding
from composer.configs.recurrent import GRUConfig
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["ConvGRUConfig"]

MODULES = "composer.blocks.conv_gru"


@block_type("encoder", implementation=f"{MODULES}:ConvGRU")
class ConvGRUConfig(BlockConfig):
    """Conv1d then GRU, per modality: ``sequence (B, T, D) -> (B, T', d)``.

    HCT-MG §4 *Feature Projection*: ``Conv1d(D → d, kernel)`` integrates local context and
    projects every modality to the same width; a GRU ``d → d`` encodes global context. Built
    from the ``conv1d`` and ``gru`` blocks, so the time rules are theirs: ``T' = T`` and the
    time symbol (and padding mask) is kept when the convolution keeps the length (kernel 1,
    or ``same`` padding at stride 1); padded steps are zeroed before the convolution and
    skipped by the packed GRU (padded outputs are zero).
    Parameters: ``k·D·d (+ d)`` + ``gru_layers · 3(2d² + 2d)``.
    """

    type: Literal["conv_gru"] = "conv_gru"
    hidden: int = Field(ge=1, description="Hidden width d (Conv1d output channels and GRU hidden size).")
    kernel: int = Field(default=1, ge=1, description="Conv1d kernel size (HCT-MG Table 8: 1 for every modality).")
    padding: Padding = Field(
        default="same", description="Conv1d padding: same (keeps the length), valid, or an int per side."
    )
    bias: bool = Field(default=True, description="Conv1d bias.")
    gru_layers: int = Field(default=1, ge=1, description="Stacked GRU layers.")
    packed: bool = Field(default=True, description="Run the GRU on packed sequences using the padding mask.")

    def conv_config(self) -> Conv1dConfig:
        """The ``conv1d`` config of submodule ``conv``."""
        return Conv1dConfig(inputs="in", out=self.hidden, kernel=self.kernel, padding=self.padding, bias=self.bias)

    def gru_config(self) -> GRUConfig:
        """The ``gru`` config of submodule ``gru`` (fed by the convolution's output)."""
        return GRUConfig(inputs="in", hidden=self.hidden, layers=self.gru_layers, packed=self.packed)

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        projected = self.conv_config().infer(inputs)
        return {"out": projected["out"]}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        conv = self.conv_config()
        return {
            **under("conv", conv.parameter_shapes(inputs)),
            **under("gru", self.gru_config().parameter_shapes(conv.infer(inputs))),
        }

    @classmethod
    def examples(cls):
        return [
            ({"hidden": 4}, {"in": sequence("T_x", 6)}),
            ({"hidden": 4, "kernel": 3, "bias": False, "gru_layers": 2}, {"in": sequence("T_x", 3)}),
            ({"hidden": 3, "kernel": 3, "padding": "valid", "packed": False}, {"in": sequence(8, 5)}),
        ]
