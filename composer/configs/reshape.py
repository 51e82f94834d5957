"""Shape adapters between tokens and vectors: ``flatten``, ``unflatten``, ``stack``, ``select``, ``split``.

They move values between the kinds a graph uses (a few fixed steps as a sequence, one vector
per sample) without parameters, so a hybrid can feed GLoMo's ``n`` locals to a sequence
block, stack pooled codes into a token sequence for attention, or pick a part of a vector.
A sequence whose time axis is a symbol (padded per batch) cannot be flattened or indexed by
position: pool it first (``pool``, ``adaptive_max_pool``). Modules: :mod:`composer.blocks.reshape`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, expect_ports, shared_vector_width
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["FlattenConfig", "UnflattenConfig", "StackConfig", "SelectConfig", "SplitConfig"]

MODULES = "composer.blocks.reshape"


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


class _NoParameters(BlockConfig):
    """Shape adapters hold no parameters."""

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}


@block_type("other", implementation=f"{MODULES}:Flatten")
class FlattenConfig(_NoParameters):
    """``sequence (B, n, d) -> vector (B, n·d)``, steps joined in order (x_1 first), n fixed."""

    type: Literal["flatten"] = "flatten"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        port, spec = _one_input(inputs, "sequence")
        return {"out": vector(_fixed_steps(port, spec, "flatten") * int(spec.features))}

    @classmethod
    def examples(cls):
        return [({}, {"in": sequence(3, 4)})]


@block_type("other", implementation=f"{MODULES}:Unflatten")
class UnflattenConfig(_NoParameters):
    """``vector (B, n·d) -> sequence (B, n, d)``, the inverse of ``flatten`` (GLoMo's n locals as tokens)."""

    type: Literal["unflatten"] = "unflatten"
    steps: Width = Field(description="n: the vector (B, n·d) becomes n steps of width d.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        port, spec = _one_input(inputs, "vector")
        width = int(spec.features)
        if width % self.steps:
            raise SpecError(f"input '{port}' has {width} features, not a multiple of steps={self.steps}", field="steps")
        return {"out": sequence(self.steps, width // self.steps)}

    @classmethod
    def examples(cls):
        return [({"steps": 3}, {"in": vector(12)})]


@block_type("other", implementation=f"{MODULES}:Stack")
class StackConfig(_NoParameters):
    """``M`` vectors ``(B, d)`` -> ``sequence (B, M, d)``, one step per input in port order (no padding)."""

    type: Literal["stack"] = "stack"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        return {"out": sequence(len(inputs), shared_vector_width(inputs, "stacked vectors"))}

    @classmethod
    def examples(cls):
        return [({}, {"0": vector(4), "1": vector(4), "2": vector(4)}), ({}, {"text": vector(3), "audio": vector(3)})]


@block_type("other", implementation=f"{MODULES}:Select")
class SelectConfig(_NoParameters):
    """Pick a part: ``step: i`` takes step i of a fixed-length sequence ``(B, n, d) -> (B, d)``;
    ``features: [a, b]`` keeps features ``a..b-1`` of a vector or sequence (time axis and mask kept)."""

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

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if self.step is not None:
            port, spec = _one_input(inputs, "sequence")
            n = _fixed_steps(port, spec, "select.step")
            if not -n <= self.step < n:
                raise SpecError(f"step {self.step} is outside the {n} steps of input '{port}'", field="step")
            return {"out": vector(spec.features)}
        port, spec = _one_input(inputs, "vector", "sequence")
        start, stop = self.features
        if stop > int(spec.features):
            raise SpecError(f"features [{start}, {stop}) exceed the {spec.features} features of input '{port}'", field="features")
        return {"out": spec.with_features(stop - start)}

    @classmethod
    def examples(cls):
        return [({"step": -1}, {"in": sequence(3, 4)}), ({"features": [1, 3]}, {"in": vector(5)}), ({"features": [0, 2]}, {"in": sequence("T_x", 4)})]


@block_type("other", implementation=f"{MODULES}:Split")
class SplitConfig(_NoParameters):
    """Split the feature axis of a vector or sequence into parts of ``sizes`` widths, one output port each."""

    type: Literal["split"] = "split"
    sizes: list[Width] = Field(min_length=2, description="Feature widths of the parts, in order; they must add up to the input's width.")
    names: list[str] | None = Field(default=None, description="Port names of the parts (default: 0, 1, ...).")

    @model_validator(mode="after")
    def _names_match(self) -> "SplitConfig":
        if self.names is not None and (len(self.names) != len(self.sizes) or len(set(self.names)) != len(self.names)):
            raise ValueError(f"names needs {len(self.sizes)} distinct port names, one per size")
        return self

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        port, spec = _one_input(inputs, "vector", "sequence")
        if sum(self.sizes) != int(spec.features):
            raise SpecError(f"sizes add up to {sum(self.sizes)}, but input '{port}' has {spec.features} features", field="sizes")
        names = self.names or [str(i) for i in range(len(self.sizes))]
        return {name: spec.with_features(size) for name, size in zip(names, self.sizes)}

    @classmethod
    def examples(cls):
        return [({"sizes": [2, 3]}, {"in": vector(5)}), ({"sizes": [1, 3], "names": ["head", "tail"]}, {"in": sequence("T_x", 4)})]
