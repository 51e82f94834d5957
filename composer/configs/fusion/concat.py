"""Concatenation fusion config: join several inputs along the feature axis.

Module: :mod:`composer.blocks.fusion.concat`.
"""

from __future__ import annotations

from typing import Literal

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_ports
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["ConcatConfig"]

MODULES = "composer.blocks.fusion.concat"


@block_type("fusion", implementation=f"{MODULES}:Concat")
class ConcatConfig(BlockConfig):
    """Concatenate inputs of the same kind along features.

    Vectors ``(B, D_i)`` -> ``(B, ΣD_i)``; aligned sequences ``(B, T, D_i)`` (same time
    symbol) -> ``(B, T, ΣD_i)``. Early fusion of aligned features and late fusion of
    utterance vectors are both this block.
    """

    type: Literal["concat"] = "concat"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        specs = list(inputs.values())
        first = specs[0]
        if first.kind not in ("vector", "sequence"):
            raise SpecError(f"concat joins vectors or sequences, got {first}", field="in")
        for port, spec in inputs.items():
            if spec.kind != first.kind or spec.shape[:-1] != first.shape[:-1]:
                raise SpecError(
                    f"cannot concatenate {spec} (input '{port}') with {first}: all inputs need the same kind and "
                    "leading dims (for sequences the same time symbol, i.e. aligned modalities)",
                    field="in",
                )
        width = sum(int(s.features) for s in specs)
        return {"out": first.with_features(width)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {"0": vector(4), "1": vector(6), "2": vector(2)}),
            ({}, {"text": sequence("T", 4), "audio": sequence("T", 3)}),
        ]
