"""Shape adapters between tokens and vectors: ``flatten``, ``unflatten``, ``stack``, ``select``,
``split``; no parameters (configs and shape rules: :mod:`composer.configs.reshape`)."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.configs.reshape import FlattenConfig, SelectConfig, SplitConfig, StackConfig, UnflattenConfig

__all__ = ["Flatten", "Unflatten", "Stack", "Select", "Split"]


class Flatten(Block):
    """``(B, n, d) -> (B, n·d)`` (:class:`~composer.configs.reshape.FlattenConfig`)."""

    config: FlattenConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return x.flatten(1)  # (B, n, d) -> (B, n·d)


class Unflatten(Block):
    """``(B, n·d) -> (B, n, d)`` (:class:`~composer.configs.reshape.UnflattenConfig`)."""

    config: UnflattenConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return x.unflatten(1, (self.config.steps, -1))  # (B, n·d) -> (B, n, d)


class Stack(Block):
    """``M × (B, d) -> (B, M, d)`` (:class:`~composer.configs.reshape.StackConfig`)."""

    config: StackConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        return torch.stack(list(inputs.values()), dim=1)  # M × (B, d) -> (B, M, d)


class Select(Block):
    """One step or a feature range (:class:`~composer.configs.reshape.SelectConfig`)."""

    config: SelectConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        if self.config.step is not None:
            return x[:, self.config.step]  # (B, n, d) -> (B, d)
        start, stop = self.config.features
        return x[..., start:stop]


class Split(Block):
    """The feature axis split into parts, one port each (:class:`~composer.configs.reshape.SplitConfig`)."""

    config: SplitConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()
        return dict(zip(self.out_specs, x.split(self.config.sizes, dim=-1)))
