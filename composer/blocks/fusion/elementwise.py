"""Element-wise combinations of same-shaped inputs: ``weighted_sum`` and ``product``.

``weighted_sum``: ``{weights (B, M), x_1..x_M}`` -> ``Σ_m w_m x_m`` with weights computed
elsewhere in the graph (GLoMo's MIXUP, eq. 12: the modality codes Z_m mixed by the weights
W_g the global ATTN computed). ``product``: ``Π_m x_m`` (GLoMo's MUL fusion ablation,
Table 4). Inputs are vectors ``(B, D)`` or aligned sequences ``(B, T, D)`` of one shape; the
output has that shape. No parameters.
"""

from __future__ import annotations

from typing import Literal

import torch

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind
from composer.registry import register_block
from composer.blocks.fusion.baselines import same_shaped
from composer.spec import Spec, sequence, vector

__all__ = ["WeightedSumConfig", "WeightedSum", "ProductConfig", "Product"]

WEIGHTS = "weights"


class WeightedSumConfig(BlockConfig):
    type: Literal["weighted_sum"] = "weighted_sum"


@register_block(WeightedSumConfig, family="fusion")
class WeightedSum(Block):
    """Sum weighted per sample: ``{weights (B, M), x_1..x_M} -> Σ_m weights[:, m] · x_m``.

    The port ``weights`` holds one weight per sample and input (used as given: no softmax);
    the other ``M`` ports, in their order, are vectors ``(B, D)`` or sequences ``(B, T, D)``
    of one shape, the output's (a sequence's weight is the same at every step, its time axis
    and mask are kept). GLoMo eq. 12: ``Z_2 = Σ_m W_g[m] Z_m``, with ``weights`` the
    ``attention_pool`` weights of the globals. No parameters.
    """

    @classmethod
    def infer(cls, config: WeightedSumConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if WEIGHTS not in inputs:
            raise SpecError(f"needs an input port '{WEIGHTS}' (B, M) besides the M inputs to weigh: give `in` as a mapping", field="in")
        weights = inputs[WEIGHTS]
        expect_kind(WEIGHTS, weights, "vector")
        values = {p: s for p, s in inputs.items() if p != WEIGHTS}
        out = same_shaped(values, "weighted_sum")
        if int(weights.features) != len(values):
            raise SpecError(f"'{WEIGHTS}' has {weights.features} features for {len(values)} inputs to weigh (one weight each)", field="in")
        return {"out": out}

    @classmethod
    def examples(cls):
        return [
            ({}, {WEIGHTS: vector(3), "text": vector(4), "audio": vector(4), "vision": vector(4)}),
            ({}, {WEIGHTS: vector(2), "a": sequence("T_x", 3), "b": sequence("T_x", 3)}),
        ]

    def __init__(self, config: WeightedSumConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports = [p for p in inputs if p != WEIGHTS]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        stacked = torch.stack([inputs[p] for p in self.ports], dim=1)  # (B, M, [T,] D)
        weights = inputs[WEIGHTS]  # (B, M)
        return (weights.view(*weights.shape, *([1] * (stacked.dim() - 2))) * stacked).sum(dim=1)


class ProductConfig(BlockConfig):
    type: Literal["product"] = "product"


@register_block(ProductConfig, family="fusion")
class Product(Block):
    """Element-wise product ``z = x_1 ⊙ x_2 ⊙ … ⊙ x_M`` of same-shaped inputs.

    ``M × (B, D) -> (B, D)`` or ``M × (B, T, D) -> (B, T, D)`` (time axis and mask kept).
    GLoMo's MUL ablation (Table 4): the product of the encoder's 2M output tokens. No parameters.
    """

    @classmethod
    def infer(cls, config: ProductConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return {"out": same_shaped(inputs, "product")}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(4), "1": vector(4), "2": vector(4)}),
            ({}, {"text": sequence("T_x", 3), "audio": sequence("T_x", 3)}),
        ]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        return torch.stack(list(inputs.values()), dim=1).prod(dim=1)  # (B, M, [T,] D) -> (B, [T,] D)
