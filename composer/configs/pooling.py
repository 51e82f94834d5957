"""Pooling over time: a sequence to a vector (``pool``) or to a fixed number of steps
(``adaptive_max_pool``), both honouring the padding mask. Modules: :mod:`composer.blocks.pooling`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import linear, under
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["PoolConfig", "AdaptiveMaxPoolConfig"]

MODULES = "composer.blocks.pooling"


@block_type("pooling", implementation=f"{MODULES}:Pool")
class PoolConfig(BlockConfig):
    """Pool a sequence over time: ``sequence (B, T, D) -> vector (B, D)``.

    Padded steps (the input's mask) are ignored by every mode. ``attention`` learns
    ``a_t = softmax_t(vᵀ tanh(W x_t + b))`` over the valid steps and returns ``Σ_t a_t x_t``
    (additive attention pooling; parameters ``D·h + h + h``).
    """

    type: Literal["pool"] = "pool"
    mode: Literal["mean", "max", "last", "first", "attention"] = Field(
        default="mean",
        description=(
            "mean / max: over valid steps; first / last: the first / last valid step; attention: "
            "softmax(vᵀ tanh(W x_t)) weights over valid steps."
        ),
    )
    hidden: int | None = Field(
        default=None, ge=1, description="Width of W in attention mode (default: the input width); unused otherwise."
    )
    padding: Literal["exclude", "include"] = Field(
        default="exclude",
        description=(
            "exclude: pool the valid steps only; include (mode mean only): the mean over all T steps, padded ones "
            "too, as MMSA's data loader averages audio and vision (need_normalized). Depends on padding."
        ),
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        if self.hidden is not None and self.mode != "attention":
            raise SpecError(f"`hidden` is only used by mode 'attention', not '{self.mode}'", field="hidden")
        if self.padding == "include" and self.mode != "mean":
            raise SpecError(f"`padding: include` is only for mode 'mean', not '{self.mode}'", field="padding")
        return {"out": Spec("vector", (spec.batch, spec.features))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        if self.mode != "attention":
            return {}
        (spec,) = inputs.values()
        width = int(spec.features)
        hidden = self.hidden or width
        # score = Sequential(Linear(D, h), Tanh, Linear(h, 1, bias=False))
        return {**under("score.0", linear(width, hidden)), **under("score.2", linear(hidden, 1, bias=False))}

    @classmethod
    def examples(cls):
        return [
            ({"mode": mode}, {"in": sequence("T_x", 4)}) for mode in ("mean", "max", "last", "first", "attention")
        ] + [({"mode": "attention", "hidden": 3}, {"in": sequence(5, 4)}), ({"padding": "include"}, {"in": sequence(6, 4)})]


@block_type("pooling", implementation=f"{MODULES}:AdaptiveMaxPool")
class AdaptiveMaxPoolConfig(BlockConfig):
    """Adaptive max pooling over time: ``sequence (B, T, D) -> sequence (B, n, D)``.

    Output step ``i`` is the max over steps ``[⌊iL/n⌋, ⌈(i+1)L/n⌉)`` where ``L`` is each
    sample's valid length (``T`` without a mask) — ``nn.AdaptiveMaxPool1d`` applied to the
    unpadded sequence. The new time axis is the int ``n`` and has no padding. No parameters.
    """

    type: Literal["adaptive_max_pool"] = "adaptive_max_pool"
    steps: int = Field(ge=1, description="Output time steps n.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        return {"out": Spec("sequence", (spec.batch, self.steps, spec.features))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [({"steps": 3}, {"in": sequence("T_x", 4)}), ({"steps": 4}, {"in": sequence(10, 2)})]
