"""Baseline fusion configs: element-wise sum, gated sum and Tensor Fusion (TFN).

``sum`` / ``gated_sum``: ``M`` inputs of one shape (vectors ``(B, D)`` or aligned sequences
``(B, T, D)``) -> that shape. ``tensor_fusion``: ``M`` vectors ``(B, D_m)`` ->
``(B, Π_m (D_m + 1))``. Modules: :mod:`composer.blocks.fusion.baselines`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import linear, under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["SumConfig", "GatedSumConfig", "TensorFusionConfig", "same_shaped"]

MODULES = "composer.blocks.fusion.baselines"


def same_shaped(inputs: dict[str, Spec], block: str) -> Spec:
    """The common spec of inputs that must all be vectors or sequences of one shape."""
    expect_ports(inputs, at_least=2)
    first_port, first = next(iter(inputs.items()))
    expect_kind(first_port, first, "vector", "sequence")
    for port, spec in inputs.items():
        if spec.kind != first.kind or spec.shape != first.shape:
            raise SpecError(
                f"{block} needs inputs of one shape: input '{port}' is {spec} but '{first_port}' is {first} "
                "(project them to one width first, e.g. with a `linear` block; sequences must share the time symbol)",
                field="in",
            )
    return first


@block_type("fusion", implementation=f"{MODULES}:SumFusion")
class SumConfig(BlockConfig):
    """Element-wise sum ``z = Σ_m w_m x_m`` of same-shaped inputs (``w_m = 1`` unless ``weighted``).

    ``M × (B, D) -> (B, D)`` or ``M × (B, T, D) -> (B, T, D)``. Parameters: ``M`` if weighted, else 0.
    """

    type: Literal["sum"] = "sum"
    weighted: bool = Field(default=False, description="Multiply each input by a learned scalar (initialised to 1).")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return {"out": same_shaped(inputs, "sum")}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {"weights": (len(inputs),)} if self.weighted else {}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(4), "1": vector(4), "2": vector(4)}),
            ({"weighted": True}, {"text": sequence("T", 3), "audio": sequence("T", 3)}),
        ]


@block_type("fusion", implementation=f"{MODULES}:GatedSumFusion")
class GatedSumConfig(BlockConfig):
    """Gated sum ``z = Σ_m σ(W_m [x_1; …; x_M] + b_m) ⊙ x_m`` of same-shaped inputs.

    Each input gets a per-feature sigmoid gate computed from all inputs concatenated, so the
    mix can change per sample (and per step for sequences). A simple learned baseline, not
    a paper operator. ``M × (B, [T,] D) -> (B, [T,] D)``; parameters ``M·(M·D·D + D)``.
    """

    type: Literal["gated_sum"] = "gated_sum"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return {"out": same_shaped(inputs, "gated_sum")}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        width = len(inputs) * int(next(iter(inputs.values())).features)
        return under("gates", linear(width, width))

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(4), "1": vector(4)}),
            ({}, {"text": sequence("T", 3), "audio": sequence("T", 3), "vision": sequence("T", 3)}),
        ]


@block_type("fusion", implementation=f"{MODULES}:TensorFusion")
class TensorFusionConfig(BlockConfig):
    """Tensor Fusion (TFN, Zadeh et al. EMNLP 2017, §4.2 "Tensor Fusion Layer").

    ``z = [x_1; 1] ⊗ [x_2; 1] ⊗ … ⊗ [x_M; 1]`` flattened (the paper's
    ``z^m = [z^l; 1] ⊗ [z^v; 1] ⊗ [z^a; 1]`` for any number of modalities): vectors
    ``(B, D_m)`` -> ``vector (B, Π_m (D_m + 1))``, row-major with the first input slowest.
    Because of the appended 1, ``z`` contains every unimodal vector, every product of pairs
    (bimodal interactions), ... and the constant 1. No parameters; the size grows as the
    product of the widths, so keep the inputs small (widths 128/32/32, as in TFN, give
    129·33·33 = 140,481 features).
    """

    type: Literal["tensor_fusion"] = "tensor_fusion"
    one: Literal["last", "first"] = Field(
        default="last",
        description=(
            "Where the constant 1 joins each vector: last = [x_m; 1] as in the paper; first = [1; x_m] "
            "as in the authors' public code (same features, another order)."
        ),
    )
    max_features: int = Field(
        default=1_000_000, ge=1, description="Refuse configurations whose fused width Π(D_m + 1) exceeds this."
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=2)
        for port, spec in inputs.items():
            expect_kind(port, spec, "vector")
        width = math.prod(int(s.features) + 1 for s in inputs.values())
        if width > self.max_features:
            dims = " × ".join(f"({s.features}+1)" for s in inputs.values())
            raise SpecError(
                f"tensor_fusion output would have {dims} = {width:,} features, over max_features="
                f"{self.max_features:,}; shrink the inputs or raise max_features",
                field="max_features",
            )
        first = next(iter(inputs.values()))
        return {"out": Spec("vector", (first.batch, width))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(3), "1": vector(2)}),
            ({"one": "first"}, {"text": vector(4), "audio": vector(2), "vision": vector(3)}),
        ]
