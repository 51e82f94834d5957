"""Regularisation and normalisation primitives: ``dropout`` and ``layer_norm``.

Both keep their input's kind and shape (vector, sequence or feature map), so they can sit
anywhere in a graph and be switched off with ``enabled: false``; a sequence keeps its time
symbol and with it its padding mask. Modules: :mod:`composer.blocks.regularization`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, expect_kind, expect_ports
from composer.configs._shapes import layer_norm, under
from composer.registry import block_type
from composer.spec import Spec, feature_map, sequence, vector

__all__ = ["DropoutConfig", "LayerNormConfig"]

MODULES = "composer.blocks.regularization"


def _same_as_input(inputs: dict[str, Spec], *kinds: str) -> dict[str, Spec]:
    expect_ports(inputs, exactly=1)
    (port, spec), = inputs.items()
    expect_kind(port, spec, *kinds)
    return {"out": spec}


@block_type("regularizer", implementation=f"{MODULES}:Dropout")
class DropoutConfig(BlockConfig):
    """Dropout: ``x -> x ⊙ m / (1 - p)``, ``m ~ Bernoulli(1 - p)`` per element, in training only.

    Any vector ``(B, D)``, sequence ``(B, T, D)`` or map ``(B, C, *S)`` keeps its shape (EMT-DLFR's
    head has dropout on its input). No parameters.
    """

    type: Literal["dropout"] = "dropout"
    p: float = Field(default=0.1, ge=0.0, lt=1.0, description="Probability of zeroing an element (training only).")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return _same_as_input(inputs, "vector", "sequence", "map")

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [({"p": 0.3}, {"in": sequence("T_x", 4)}), ({}, {"in": vector(5)}), ({"p": 0.5}, {"in": feature_map(3, 4)})]


@block_type("regularizer", implementation=f"{MODULES}:LayerNorm")
class LayerNormConfig(BlockConfig):
    """Layer normalisation over the feature axis: ``(x - μ) / √(σ² + ε) · γ + β``.

    Vector ``(B, D)`` or sequence ``(B, T, D)`` (each step normalised on its own, so padded
    steps never touch valid ones); parameters ``2D`` with ``affine``, else none.
    """

    type: Literal["layer_norm"] = "layer_norm"
    eps: float = Field(default=1e-5, gt=0.0, description="Added to the variance.")
    affine: bool = Field(default=True, description="Learn a scale γ and shift β per feature.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return _same_as_input(inputs, "vector", "sequence")

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        return under("norm", layer_norm(int(spec.features))) if self.affine else {}

    @classmethod
    def examples(cls):
        return [({}, {"in": sequence("T_x", 4)}), ({"affine": False, "eps": 1e-6}, {"in": vector(3)})]
