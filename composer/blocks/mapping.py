"""``map``: apply a vector block at every step of a sequence, with one set of weights.

``{type: map, in: seq, block: {type: moe, out: 16, experts: 3}}`` runs the nested block on
each valid step ``(B, T, D) -> (B, T, d)``: the valid steps of the whole batch are gathered
into one ``(N, D)`` batch, so the nested block sees no padded step at all (batch statistics
such as a mixture of experts' load stay padding-free), and the results are scattered back
with zeros on padded steps. The time axis (and its mask) is kept.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from composer.blocks._base import Block, BlockConfig, Context, SpecError
from composer.blocks._nested import nested_block_config, wire_nested
from composer.registry import get_block, register_block
from composer.spec import Spec, sequence, vector

__all__ = ["MapConfig", "Map"]


class MapConfig(BlockConfig):
    type: Literal["map"] = "map"
    block: dict[str, Any] = Field(description="The vector block applied at every step (a block config without `in`), e.g. {type: mlp, out: 8}.")
    port: str = Field(default="out", description="The nested block's output port to keep (its other outputs are dropped).")

    @field_validator("block")
    @classmethod
    def _block_is_a_block(cls, value: dict[str, Any]) -> dict[str, Any]:
        return nested_block_config(value, "block", "map feeds it one step at a time")


@register_block(MapConfig, family="other")
class Map(Block):
    """Apply a vector block at every step: ``sequence (B, T, D) -> sequence (B, T, d)``, weights shared over steps.

    Submodule ``inner`` is the nested block built for ``vector (B, D)``; parameters are its own.
    The nested block runs once on every valid step of the batch (gathered), so its auxiliary
    losses (a ``moe``'s balance, GLoMo eq. 7) are over those steps; they are kept as ports
    ``block_<port>`` and join the training loss like any block's.
    """

    main_port = "out"

    @classmethod
    def aux_ports(cls, config: MapConfig) -> tuple[str, ...]:
        impl = get_block(config.block["type"]).impl
        return tuple(f"block_{p}" for p in impl.aux_ports(wire_nested(config.block, "step")))

    @classmethod
    def _inner_specs(cls, config: MapConfig, spec: Spec) -> dict[str, Spec]:
        entry = get_block(config.block["type"])
        try:
            return entry.impl.infer(wire_nested(config.block, "step"), {"in": vector(spec.features)})
        except SpecError as exc:
            raise SpecError(f"block ({config.block['type']}): {exc.message}", field="block") from None

    @classmethod
    def infer(cls, config: MapConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if len(inputs) != 1:
            raise SpecError(f"expected 1 input, got {len(inputs)}", field="in")
        (port, spec), = inputs.items()
        if spec.kind != "sequence":
            raise SpecError(f"input '{port}' must be a sequence, got {spec}", field="in")
        inner = cls._inner_specs(config, spec)
        if config.port not in inner:
            raise SpecError(f"the {config.block['type']} block has no output '{config.port}' (outputs: {', '.join(inner)})", field="port")
        out = inner[config.port]
        if out.kind != "vector":
            raise SpecError(f"the {config.block['type']} block's '{config.port}' is {out}; map needs a vector per step", field="port")
        specs = {"out": sequence(spec.time, out.features, batch=spec.batch)}
        for port in cls.aux_ports(config):
            specs[port] = inner[port.removeprefix("block_")]
        return specs

    @classmethod
    def examples(cls):
        return [
            ({"block": {"type": "mlp", "hidden": [5], "out": 3}}, {"in": sequence("T_x", 4)}),
            ({"block": {"type": "moe", "out": 3, "experts": 3, "top_k": 2}}, {"in": sequence("T_x", 4)}),
            ({"block": {"type": "linear", "out": 2}}, {"in": sequence(5, 3)}),
        ]

    def __init__(self, config: MapConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        self.inner = get_block(config.block["type"]).impl(wire_nested(config.block, "step"), {"in": vector(self._spec.features)})
        self._width = int(self.out_specs["out"].features)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor | dict[str, torch.Tensor]:
        (x,) = inputs.values()  # (B, T, D)
        mask = ctx.mask(self._spec)
        rows = x.flatten(0, 1) if mask is None else x[mask]  # (B·T, D) or (N valid, D)
        result = self.inner({"in": rows}, ctx)
        steps = result[self.config.port] if isinstance(result, dict) else result  # (N, d)
        if mask is None:
            out = steps.unflatten(0, x.shape[:2])  # (B, T, d)
        else:
            out = x.new_zeros(x.shape[:2] + (self._width,))
            out[mask] = steps.to(out.dtype)
        aux = {port: result[port.removeprefix("block_")] for port in self.out_specs if port != "out"}
        return {"out": out, **aux} if aux else out
