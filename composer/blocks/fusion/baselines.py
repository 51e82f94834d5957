"""Baseline fusion operators: element-wise sum, gated sum and Tensor Fusion (TFN).

``sum`` / ``gated_sum``: ``M`` inputs of one shape (vectors ``(B, D)`` or aligned sequences
``(B, T, D)``) -> that shape. ``tensor_fusion``: ``M`` vectors ``(B, D_m)`` ->
``(B, Π_m (D_m + 1))``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind, expect_ports
from composer.registry import register_block
from composer.spec import Spec, sequence, vector

__all__ = ["SumConfig", "SumFusion", "GatedSumConfig", "GatedSumFusion", "TensorFusionConfig", "TensorFusion"]


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


class SumConfig(BlockConfig):
    type: Literal["sum"] = "sum"
    weighted: bool = Field(default=False, description="Multiply each input by a learned scalar (initialised to 1).")


@register_block(SumConfig, family="fusion")
class SumFusion(Block):
    """Element-wise sum ``z = Σ_m w_m x_m`` of same-shaped inputs (``w_m = 1`` unless ``weighted``).

    ``M × (B, D) -> (B, D)`` or ``M × (B, T, D) -> (B, T, D)``. Parameters: ``M`` if weighted, else 0.
    """

    @classmethod
    def infer(cls, config: SumConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return {"out": same_shaped(inputs, "sum")}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(4), "1": vector(4), "2": vector(4)}),
            ({"weighted": True}, {"text": sequence("T", 3), "audio": sequence("T", 3)}),
        ]

    def __init__(self, config: SumConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.weights = nn.Parameter(torch.ones(len(inputs))) if config.weighted else None

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        stacked = torch.stack(list(inputs.values()), dim=0)  # (M, B, [T,] D)
        if self.weights is not None:
            stacked = stacked * self.weights.view(-1, *([1] * (stacked.dim() - 1)))
        return stacked.sum(dim=0)


class GatedSumConfig(BlockConfig):
    type: Literal["gated_sum"] = "gated_sum"


@register_block(GatedSumConfig, family="fusion")
class GatedSumFusion(Block):
    """Gated sum ``z = Σ_m σ(W_m [x_1; …; x_M] + b_m) ⊙ x_m`` of same-shaped inputs.

    Each input gets a per-feature sigmoid gate computed from all inputs concatenated, so the
    mix can change per sample (and per step for sequences). A simple learned baseline, not
    a paper operator. ``M × (B, [T,] D) -> (B, [T,] D)``; parameters ``M·(M·D·D + D)``.
    """

    @classmethod
    def infer(cls, config: GatedSumConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return {"out": same_shaped(inputs, "gated_sum")}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(4), "1": vector(4)}),
            ({}, {"text": sequence("T", 3), "audio": sequence("T", 3), "vision": sequence("T", 3)}),
        ]

    def __init__(self, config: GatedSumConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.count = len(inputs)
        width = int(next(iter(inputs.values())).features)
        self.gates = nn.Linear(self.count * width, self.count * width)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        xs = list(inputs.values())
        stacked = torch.stack(xs, dim=-2)  # (B, [T,] M, D)
        gates = torch.sigmoid(self.gates(torch.cat(xs, dim=-1)))  # (B, [T,] M·D)
        gates = gates.unflatten(-1, (self.count, -1))  # (B, [T,] M, D)
        return (gates * stacked).sum(dim=-2)


class TensorFusionConfig(BlockConfig):
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


@register_block(TensorFusionConfig, family="fusion")
class TensorFusion(Block):
    """Tensor Fusion (TFN, Zadeh et al. EMNLP 2017, §4.2 "Tensor Fusion Layer").

    ``z = [x_1; 1] ⊗ [x_2; 1] ⊗ … ⊗ [x_M; 1]`` flattened (the paper's
    ``z^m = [z^l; 1] ⊗ [z^v; 1] ⊗ [z^a; 1]`` for any number of modalities): vectors
    ``(B, D_m)`` -> ``vector (B, Π_m (D_m + 1))``, row-major with the first input slowest.
    Because of the appended 1, ``z`` contains every unimodal vector, every product of pairs
    (bimodal interactions), ... and the constant 1. No parameters; the size grows as the
    product of the widths, so keep the inputs small (widths 128/32/32, as in TFN, give
    129·33·33 = 140,481 features).
    """

    @classmethod
    def infer(cls, config: TensorFusionConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=2)
        for port, spec in inputs.items():
            expect_kind(port, spec, "vector")
        width = math.prod(int(s.features) + 1 for s in inputs.values())
        if width > config.max_features:
            dims = " × ".join(f"({s.features}+1)" for s in inputs.values())
            raise SpecError(
                f"tensor_fusion output would have {dims} = {width:,} features, over max_features="
                f"{config.max_features:,}; shrink the inputs or raise max_features",
                field="max_features",
            )
        first = next(iter(inputs.values()))
        return {"out": Spec("vector", (first.batch, width))}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(3), "1": vector(2)}),
            ({"one": "first"}, {"text": vector(4), "audio": vector(2), "vision": vector(3)}),
        ]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        fused = None
        for x in inputs.values():  # x: (B, D_m)
            ones = x.new_ones(x.shape[0], 1)
            x1 = torch.cat([x, ones] if self.config.one == "last" else [ones, x], dim=1)  # (B, D_m + 1)
            # (B, P) ⊗ (B, D_m + 1) -> (B, P, D_m + 1) -> (B, P·(D_m + 1))
            fused = x1 if fused is None else (fused[:, :, None] * x1[:, None, :]).flatten(1)
        return fused
