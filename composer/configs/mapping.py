"""``map``: apply a vector block at every step of a sequence, with one set of weights.

``{type: map, in: seq, block: {type: moe, out: 16, experts: 3}}`` runs the nested block on
each valid step ``(B, T, D) -> (B, T, d)``: the valid steps of the whole batch are gathered
into one ``(N, D)`` batch, so the nested block sees no padded step at all (batch statistics
such as a mixture of experts' load stay padding-free), and the results are scattered back
with zeros on padded steps. The time axis (and its mask) is kept. Module: :mod:`composer.blocks.mapping`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from composer.configs._base import BlockConfig, Shapes, SpecError
from composer.configs._nested import nested_block_config, wire_nested
from composer.configs._shapes import under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["MapConfig"]

MODULES = "composer.blocks.mapping"


@block_type("other", implementation=f"{MODULES}:Map")
class MapConfig(BlockConfig):
    """Apply a vector block at every step: ``sequence (B, T, D) -> sequence (B, T, d)``, weights shared over steps.

    Submodule ``inner`` is the nested block built for ``vector (B, D)``; parameters are its own.
    The nested block runs once on every valid step of the batch (gathered), so its auxiliary
    losses (a ``moe``'s balance, GLoMo eq. 7) are over those steps; they are kept as ports
    ``block_<port>`` and join the training loss like any block's.
    """

    type: Literal["map"] = "map"
    block: dict[str, Any] = Field(description="The vector block applied at every step (a block config without `in`), e.g. {type: mlp, out: 8}.")
    port: str = Field(default="out", description="The nested block's output port to keep (its other outputs are dropped).")

    main_port: ClassVar[str | None] = "out"

    @field_validator("block")
    @classmethod
    def _block_is_a_block(cls, value: dict[str, Any]) -> dict[str, Any]:
        return nested_block_config(value, "block", "map feeds it one step at a time")

    def inner_config(self) -> BlockConfig:
        """The nested block's config, wired to one step (port ``in``)."""
        return wire_nested(self.block, "step")

    @staticmethod
    def inner_inputs(spec: Spec) -> dict[str, Spec]:
        """What the nested block reads: one step ``vector (B, D)`` of the sequence ``spec``."""
        return {"in": vector(spec.features)}

    def aux_ports(self) -> tuple[str, ...]:
        return tuple(f"block_{p}" for p in self.inner_config().aux_ports())

    def _inner_specs(self, spec: Spec) -> dict[str, Spec]:
        try:
            return self.inner_config().infer(self.inner_inputs(spec))
        except SpecError as exc:
            raise SpecError(f"block ({self.block['type']}): {exc.message}", field="block") from None

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if len(inputs) != 1:
            raise SpecError(f"expected 1 input, got {len(inputs)}", field="in")
        (port, spec), = inputs.items()
        if spec.kind != "sequence":
            raise SpecError(f"input '{port}' must be a sequence, got {spec}", field="in")
        inner = self._inner_specs(spec)
        if self.port not in inner:
            raise SpecError(f"the {self.block['type']} block has no output '{self.port}' (outputs: {', '.join(inner)})", field="port")
        out = inner[self.port]
        if out.kind != "vector":
            raise SpecError(f"the {self.block['type']} block's '{self.port}' is {out}; map needs a vector per step", field="port")
        specs = {"out": sequence(spec.time, out.features, batch=spec.batch)}
        for port in self.aux_ports():
            specs[port] = inner[port.removeprefix("block_")]
        return specs

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes | None:
        (spec,) = inputs.values()
        inner = self.inner_config().parameter_shapes(self.inner_inputs(spec))
        if inner is None:  # a plug-in block that only its built module knows
            return None
        return under("inner", inner)

    @classmethod
    def examples(cls):
        return [
            ({"block": {"type": "mlp", "hidden": [5], "out": 3}}, {"in": sequence("T_x", 4)}),
            ({"block": {"type": "moe", "out": 3, "experts": 3, "top_k": 2}}, {"in": sequence("T_x", 4)}),
            ({"block": {"type": "linear", "out": 2}}, {"in": sequence(5, 3)}),
        ]
