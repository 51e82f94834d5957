"""Low-rank Multimodal Fusion (LMF): ``M`` vectors ``(B, D_m)`` -> ``vector (B, out)`` through
modality-specific low-rank factors of TFN's weight tensor. Module: :mod:`composer.blocks.fusion.low_rank`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, Width, expect_kind, expect_ports
from composer.registry import block_type
from composer.spec import Spec, vector

__all__ = ["LowRankFusionConfig"]

MODULES = "composer.blocks.fusion.low_rank"


@block_type("fusion", implementation=f"{MODULES}:LowRankFusion")
class LowRankFusionConfig(BlockConfig):
    """Low-rank Multimodal Fusion (LMF, Liu et al. ACL 2018, §3.2-3.3).

    TFN's layer ``h = W · Z + b`` on ``Z = ⊗_m [z_m; 1]`` (eq. 1-2), with the weight tensor
    decomposed into ``r`` rank-one terms of modality-specific factors
    ``W = Σ_{i=1}^r ⊗_m w_m^{(i)}`` (eq. 3), computed without ever forming ``Z``:
    ``h = Σ_{i=1}^r λ_i ⊙_{m=1}^M ([z_m; 1] · w_m^{(i)}) + b`` (eq. 6; ``λ_i`` the learned
    weights of the rank terms that the authors' code adds to the paper's plain sum).
    ``M × (B, D_m) -> (B, out)``; parameters ``r·Σ_m (D_m + 1)·out + r + out``: factors
    ``factors.<port>`` ``(r, D_m + 1, out)``, ``weights (1, r)``, ``bias (1, out)``, initialised
    as the authors do (Xavier-normal factors and weights, zero bias).
    """

    type: Literal["low_rank_fusion"] = "low_rank_fusion"
    rank: Width = Field(description="r, the number of rank-one terms (LMF uses 1-16; MMSA's MOSI setting 3).")
    out: Width = Field(description="Output width (1 for regression).")
    one: Literal["last", "first"] = Field(
        default="last",
        description="Where the constant 1 joins each vector: last = [z_m; 1] as in the paper; first = [1; z_m] as in the authors' code and MMSA.",
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=2)
        for port, spec in inputs.items():
            expect_kind(port, spec, "vector")
        first = next(iter(inputs.values()))
        return {"out": Spec("vector", (first.batch, self.out))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        factors = {f"factors.{port}": (self.rank, int(spec.features) + 1, self.out) for port, spec in inputs.items()}
        return {**factors, "weights": (1, self.rank), "bias": (1, self.out)}

    @classmethod
    def examples(cls):
        return [
            ({"rank": 2, "out": 1}, {"0": vector(3), "1": vector(2)}),
            ({"rank": 3, "out": 4, "one": "first"}, {"text": vector(4), "audio": vector(2), "vision": vector(3)}),
        ]
