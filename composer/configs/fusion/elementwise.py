"""Element-wise combinations of same-shaped inputs: ``weighted_sum`` and ``product``.

``weighted_sum``: ``{weights (B, M), x_1..x_M}`` -> ``Σ_m w_m x_m`` with weights computed
elsewhere in the graph (GLoMo's MIXUP, eq. 12: the modality codes Z_m mixed by the weights
W_g the global ATTN computed; a ``router``'s or a ``softmax`` ``activation``'s); ``M = 1``
is a per-sample scaling. ``product``: ``Π_m x_m`` (GLoMo's MUL fusion ablation, Table 4);
an input ``vector (B, 1)`` is a per-sample factor broadcast over the others (a gate). Inputs
are vectors ``(B, D)`` or aligned sequences ``(B, T, D)`` of one shape; the output has that
shape. No parameters. Modules: :mod:`composer.blocks.fusion.elementwise`.
"""

from __future__ import annotations

from typing import Literal

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs.fusion.baselines import same_shaped
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["WeightedSumConfig", "ProductConfig", "WEIGHTS", "is_factor"]

MODULES = "composer.blocks.fusion.elementwise"

WEIGHTS = "weights"


@block_type("fusion", implementation=f"{MODULES}:WeightedSum")
class WeightedSumConfig(BlockConfig):
    """Sum weighted per sample: ``{weights (B, M), x_1..x_M} -> Σ_m weights[:, m] · x_m``.

    The port ``weights`` holds one weight per sample and input (used as given: no softmax;
    a ``router``'s ``weights`` or a ``softmax`` ``activation`` are normalised ones); the other
    ``M ≥ 1`` ports, in their order, are vectors ``(B, D)`` or sequences ``(B, T, D)`` of one
    shape, the output's (a sequence's weight is the same at every step, its time axis and
    mask are kept). GLoMo eq. 12: ``Z_2 = Σ_m W_g[m] Z_m``, with ``weights`` the
    ``attention_pool`` weights of the globals. No parameters.
    """

    type: Literal["weighted_sum"] = "weighted_sum"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if WEIGHTS not in inputs:
            raise SpecError(f"needs an input port '{WEIGHTS}' (B, M) besides the M inputs to weigh: give `in` as a mapping", field="in")
        weights = inputs[WEIGHTS]
        expect_kind(WEIGHTS, weights, "vector")
        values = {p: s for p, s in inputs.items() if p != WEIGHTS}
        out = same_shaped(values, "weighted_sum") if len(values) > 1 else _one_value(values)
        if int(weights.features) != len(values):
            raise SpecError(f"'{WEIGHTS}' has {weights.features} features for {len(values)} inputs to weigh (one weight each)", field="in")
        return {"out": out}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {WEIGHTS: vector(3), "text": vector(4), "audio": vector(4), "vision": vector(4)}),
            ({}, {WEIGHTS: vector(2), "a": sequence("T_x", 3), "b": sequence("T_x", 3)}),
            ({}, {WEIGHTS: vector(1), "a": sequence("T_x", 3)}),
        ]


@block_type("fusion", implementation=f"{MODULES}:Product")
class ProductConfig(BlockConfig):
    """Element-wise product ``z = x_1 ⊙ x_2 ⊙ … ⊙ x_M`` of same-shaped inputs.

    ``M × (B, D) -> (B, D)`` or ``M × (B, T, D) -> (B, T, D)`` (time axis and mask kept). An
    input ``vector (B, 1)`` is one factor per sample, broadcast over the features (and steps)
    of the others: ``{gate: (B, 1), x: (B, D)} -> (B, D)``. GLoMo's MUL ablation (Table 4): the
    product of the encoder's 2M output tokens. No parameters.
    """

    type: Literal["product"] = "product"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=2)
        for port, spec in inputs.items():
            expect_kind(port, spec, "vector", "sequence")
        full = {p: s for p, s in inputs.items() if not is_factor(s)}
        if not full:  # only (B, 1) factors
            return {"out": next(iter(inputs.values()))}
        return {"out": same_shaped(full, "product") if len(full) > 1 else next(iter(full.values()))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(4), "1": vector(4), "2": vector(4)}),
            ({}, {"text": sequence("T_x", 3), "audio": sequence("T_x", 3)}),
            ({}, {"gate": vector(1), "x": vector(4)}),
            ({}, {"x": sequence("T_x", 3), "gate": vector(1), "y": sequence("T_x", 3)}),
        ]


def is_factor(spec: Spec) -> bool:
    """True for a per-sample factor ``vector (B, 1)``, which ``product`` broadcasts."""
    return spec.kind == "vector" and spec.features == 1


def _one_value(values: dict[str, Spec]) -> Spec:
    """The spec of the single input of a ``weighted_sum`` (a vector or a sequence)."""
    (port, spec), = values.items()
    expect_kind(port, spec, "vector", "sequence")
    return spec
