"""``map``: a vector block applied at every valid step of a sequence, one set of weights
(config and shapes: :mod:`composer.configs.mapping`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.configs.mapping import MapConfig
from composer.registry import get_block
from composer.spec import Spec

__all__ = ["Map"]


class Map(Block):
    """The nested block (submodule ``inner``) run on the gathered valid steps (:class:`~composer.configs.mapping.MapConfig`)."""

    def __init__(self, config: MapConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        self.inner = get_block(config.block["type"]).impl(config.inner_config(), config.inner_inputs(self._spec))
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
