"""Shape adapters between tokens and vectors: ``flatten``, ``unflatten``, ``stack``, ``select``, ``split``.

They move values between the kinds a graph uses (a few fixed steps as a sequence, one vector
per sample) without parameters, so a hybrid can feed GLoMo's ``n`` locals to a sequence
block, stack pooled codes into a token sequence for attention, or pick a part of a vector.
A sequence whose time axis is a symbol (padded per batch) cannot be flattened or indexed by
position: pool it first (``pool``, ``adaptive_max_pool``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from composer.blocks._base import Block, BlockConfig, Context, SpecError, Width, expect_kind, expect_ports, shared_vector_width
from composer.registry import register_block
from composer.spec import Spec, sequence, vector

__all__ = ["FlattenConfig", "Flatten", "UnflattenConfig", "Unflatten", "StackConfig", "Stack", "SelectConfig", "Select", "SplitConfig", "Split"]


def _one_input(inputs: dict[str, Spec], *kinds: str) -> tuple[str, Spec]:
    expect_ports(inputs, exactly=1)
    (port, spec), = inputs.items()
    expect_kind(port, spec, *kinds)
    return port, spec


def _fixed_steps(port: str, spec: Spec, what: str) -> int:
    if not isinstance(spec.time, int):
        raise SpecError(
            f"{what} needs a fixed number of steps, but input '{port}' is {spec} (padded per batch); "
            "pool it to fixed steps first (pool, adaptive_max_pool)",
            field="in",
        )
    return spec.time


class FlattenConfig(BlockConfig):
    type: Literal["flatten"] = "flatten"


@register_block(FlattenConfig, family="other")
class Flatten(Block):
    """``sequence (B, n, d) -> vector (B, n·d)``, steps joined in order (x_1 first), n fixed."""

    @classmethod
    def infer(cls, config: FlattenConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        port, spec = _one_input(inputs, "sequence")
        return {"out": vector(_fixed_steps(port, spec, "flatten") * int(spec.features))}

    @classmethod
    def examples(cls):
        return [({}, {"in": sequence(3, 4)})]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return x.flatten(1)  # (B, n, d) -> (B, n·d)


class UnflattenConfig(BlockConfig):
    type: Literal["unflatten"] = "unflatten"
    steps: Width = Field(description="n: the vector (B, n·d) becomes n steps of width d.")


@register_block(UnflattenConfig, family="other")
class Unflatten(Block):
    """``vector (B, n·d) -> sequence (B, n, d)``, the inverse of ``flatten`` (GLoMo's n locals as tokens)."""

    @classmethod
    def infer(cls, config: UnflattenConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        port, spec = _one_input(inputs, "vector")
        width = int(spec.features)
        if width % config.steps:
            raise SpecError(f"input '{port}' has {width} features, not a multiple of steps={config.steps}", field="steps")
        return {"out": sequence(config.steps, width // config.steps)}

    @classmethod
    def examples(cls):
        return [({"steps": 3}, {"in": vector(12)})]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        return x.unflatten(1, (self.config.steps, -1))  # (B, n·d) -> (B, n, d)


class StackConfig(BlockConfig):
    type: Literal["stack"] = "stack"


@register_block(StackConfig, family="other")
class Stack(Block):
    """``M`` vectors ``(B, d)`` -> ``sequence (B, M, d)``, one step per input in port order (no padding)."""

    @classmethod
    def infer(cls, config: StackConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        return {"out": sequence(len(inputs), shared_vector_width(inputs, "stacked vectors"))}

    @classmethod
    def examples(cls):
        return [({}, {"0": vector(4), "1": vector(4), "2": vector(4)}), ({}, {"text": vector(3), "audio": vector(3)})]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        return torch.stack(list(inputs.values()), dim=1)  # M × (B, d) -> (B, M, d)


class SelectConfig(BlockConfig):
    type: Literal["select"] = "select"
    step: int | None = Field(default=None, description="A sequence with fixed steps: the step to take (negative counts from the end).")
    features: tuple[int, int] | None = Field(default=None, description="A vector or sequence: the feature range [start, stop) to keep.")

    @model_validator(mode="after")
    def _one_choice(self) -> "SelectConfig":
        if (self.step is None) == (self.features is None):
            raise ValueError("give exactly one of `step` (a step of a sequence) or `features: [start, stop]`")
        if self.features is not None and not 0 <= self.features[0] < self.features[1]:
            raise ValueError(f"features [{self.features[0]}, {self.features[1]}) is not a range 0 <= start < stop")
        return self


@register_block(SelectConfig, family="other")
class Select(Block):
    """Pick a part: ``step: i`` takes step i of a fixed-length sequence ``(B, n, d) -> (B, d)``;
    ``features: [a, b]`` keeps features ``a..b-1`` of a vector or sequence (time axis and mask kept)."""

    @classmethod
    def infer(cls, config: SelectConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if config.step is not None:
            port, spec = _one_input(inputs, "sequence")
            n = _fixed_steps(port, spec, "select.step")
            if not -n <= config.step < n:
                raise SpecError(f"step {config.step} is outside the {n} steps of input '{port}'", field="step")
            return {"out": vector(spec.features)}
        port, spec = _one_input(inputs, "vector", "sequence")
        start, stop = config.features
        if stop > int(spec.features):
            raise SpecError(f"features [{start}, {stop}) exceed the {spec.features} features of input '{port}'", field="features")
        return {"out": spec.with_features(stop - start)}

    @classmethod
    def examples(cls):
        return [({"step": -1}, {"in": sequence(3, 4)}), ({"features": [1, 3]}, {"in": vector(5)}), ({"features": [0, 2]}, {"in": sequence("T_x", 4)})]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        if self.config.step is not None:
            return x[:, self.config.step]  # (B, n, d) -> (B, d)
        start, stop = self.config.features
        return x[..., start:stop]


class SplitConfig(BlockConfig):
    type: Literal["split"] = "split"
    sizes: list[Width] = Field(min_length=2, description="Feature widths of the parts, in order; they must add up to the input's width.")
    names: list[str] | None = Field(default=None, description="Port names of the parts (default: 0, 1, ...).")

    @model_validator(mode="after")
    def _names_match(self) -> "SplitConfig":
        if self.names is not None and (len(self.names) != len(self.sizes) or len(set(self.names)) != len(self.names)):
            raise ValueError(f"names needs {len(self.sizes)} distinct port names, one per size")
        return self


@register_block(SplitConfig, family="other")
class Split(Block):
    """Split the feature axis of a vector or sequence into parts of ``sizes`` widths, one output port each."""

    @classmethod
    def infer(cls, config: SplitConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        port, spec = _one_input(inputs, "vector", "sequence")
        if sum(config.sizes) != int(spec.features):
            raise SpecError(f"sizes add up to {sum(config.sizes)}, but input '{port}' has {spec.features} features", field="sizes")
        names = config.names or [str(i) for i in range(len(config.sizes))]
        return {name: spec.with_features(size) for name, size in zip(names, config.sizes)}

    @classmethod
    def examples(cls):
        return [({"sizes": [2, 3]}, {"in": vector(5)}), ({"sizes": [1, 3], "names": ["head", "tail"]}, {"in": sequence("T_x", 4)})]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()
        return dict(zip(self.out_specs, x.split(self.config.sizes, dim=-1)))
