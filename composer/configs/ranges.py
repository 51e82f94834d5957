"""Bounded outputs: ``sigmoid_range`` squashes a prediction into ``(low, high)`` (TFN's regression
output as MMSA runs it). Module: :mod:`composer.blocks.ranges`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from composer.configs._base import BlockConfig, Shapes, last_axis_output
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["SigmoidRangeConfig"]

MODULES = "composer.blocks.ranges"


@block_type("head", implementation=f"{MODULES}:SigmoidRange")
class SigmoidRangeConfig(BlockConfig):
    """``y = low + (high - low) · σ(x)``, element-wise: a prediction kept inside ``(low, high)``.

    MMSA's TFN ends its regression this way (``sigmoid(output) · 6 - 3`` for sentiment in
    ``[-3, 3]``, ``output_range`` and ``output_shift`` frozen). ``vector`` or ``sequence`` -> the
    same spec; no parameters (the bounds are constants of the config).
    """

    type: Literal["sigmoid_range"] = "sigmoid_range"
    low: float = Field(default=-3.0, description="Lower bound (the limit at x -> -inf).")
    high: float = Field(default=3.0, description="Upper bound (the limit at x -> +inf).")

    @model_validator(mode="after")
    def _ordered(self) -> "SigmoidRangeConfig":
        if not self.low < self.high:
            raise ValueError(f"sigmoid_range needs low < high, got low={self.low}, high={self.high}")
        return self

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return last_axis_output(inputs)  # elementwise: the input's spec

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [({}, {"in": vector(1)}), ({"low": 0.0, "high": 1.0}, {"in": sequence("T_x", 2)})]
