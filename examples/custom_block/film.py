"""A user-defined block: FiLM, feature-wise linear modulation (Perez et al., AAAI 2018).

One modality conditions another: a vector ``cond (B, E)`` predicts a scale ``γ`` and a shift
``β`` per feature of ``x``, and ``out = γ ⊙ x + β`` (FiLM, eq. 1–2 of the paper: ``γ = f(cond)``,
``β = h(cond)``, here one Linear map ``E -> 2D``). ``x`` is a vector ``(B, D)``, a sequence
``(B, T, D)`` (the same γ, β at every step) or a feature map ``(B, D, *S)``; ``out`` has the
spec of ``x``. With ``delta_gamma`` (the default) the map predicts ``γ - 1``, so that a layer
whose weights are zero is the identity.

This file is the worked example of the tutorial "Write a block in Python" (docs/tutorials/
custom-block.md). Import it (or list it under ``plugins:`` and pass ``--allow-plugins``) and
``type: film`` is a block like any other.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer import Block, BlockConfig, Context, Spec, SpecError, register_block
from composer.blocks._base import Shapes, expect_kind
from composer.configs._shapes import linear, under
from composer.spec import feature_map, sequence, vector


class FiLMConfig(BlockConfig):
    """Feature-wise linear modulation: ``{x, cond (B, E)} -> γ(cond) ⊙ x + β(cond)``, the spec of ``x``.

    ``x``: vector ``(B, D)``, sequence ``(B, T, D)`` or map ``(B, D, *S)``. Parameters ``2·(E·D + D)``.
    Padded steps of a sequence stay zero (the output keeps the time symbol of ``x``, hence its mask).
    """

    type: Literal["film"] = "film"
    delta_gamma: bool = Field(default=True, description="Predict γ - 1 instead of γ (a zero map is the identity).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the conditioning vector.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if sorted(inputs) != ["cond", "x"]:
            raise SpecError(f"film takes the named inputs x and cond, got {sorted(inputs)}", field="in")
        expect_kind("x", inputs["x"], "vector", "sequence", "map")
        expect_kind("cond", inputs["cond"], "vector")
        return {"out": inputs["x"]}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        """Optional: lets `composer validate` count the block without building it."""
        return under("to_gamma_beta", linear(int(inputs["cond"].features), 2 * int(inputs["x"].features)))

    @classmethod
    def examples(cls):
        return [
            ({}, {"x": sequence("T_x", 6), "cond": vector(4)}),
            ({"delta_gamma": False, "dropout": 0.1}, {"x": vector(5), "cond": vector(3)}),
            ({}, {"x": feature_map(3, 4, 4), "cond": vector(2)}),
        ]


@register_block(FiLMConfig, family="fusion")
class FiLM(Block):
    """The FiLM module: one Linear map ``E -> 2D`` from the condition to ``(γ, β)``."""

    def __init__(self, config: FiLMConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.features = int(inputs["x"].features)
        self.drop = nn.Dropout(config.dropout)
        self.to_gamma_beta = nn.Linear(int(inputs["cond"].features), 2 * self.features)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        x, spec = inputs["x"], self.in_specs["x"]
        gamma, beta = self.to_gamma_beta(self.drop(inputs["cond"])).chunk(2, dim=-1)  # (B, D) each
        if self.config.delta_gamma:
            gamma = gamma + 1.0
        if spec.kind == "sequence":  # (B, D) -> (B, 1, D): the same modulation at every step
            gamma, beta = gamma[:, None, :], beta[:, None, :]
        elif spec.kind == "map":  # (B, D) -> (B, D, 1, ..., 1)
            extra = (1,) * (x.dim() - 2)
            gamma, beta = gamma.view(*gamma.shape, *extra), beta.view(*beta.shape, *extra)
        out = gamma * x + beta
        mask = ctx.mask(spec)  # (B, T) True on real steps, or None
        return out if mask is None else out * mask[..., None]
