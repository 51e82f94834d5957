"""Symbolic tensor specifications used for shape inference before any tensor exists.

A :class:`Spec` records the *kind* of a value and its shape with the batch dimension
first. Dimensions are ints or symbols (``"B"``, ``"T_audio"``). Kinds:

=========== =================== ======================================================
kind        shape               meaning
=========== =================== ======================================================
sequence    ``(B, T, D)``       time-major features, channels last
vector      ``(B, D)``          one vector per sample
map         ``(B, C, *S)``      feature map, channels first (conv layout)
tokens      ``(B, T)``          integer token ids (``dtype="long"``)
labels      ``(B,)``            one class index (``dtype="long"``) or value per sample
scalar      ``()``              a loss value
=========== =================== ======================================================

A sequence whose time dimension is a symbol ``T_x`` carries the padding mask registered
under that symbol in the running model (see :mod:`composer.graph.model`), so blocks that
keep the time axis keep the mask without any bookkeeping of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Union

Dim = Union[int, str]

__all__ = ["Dim", "Spec", "sequence", "vector", "feature_map", "tokens", "labels", "scalar", "dim_str"]

KINDS = ("sequence", "vector", "map", "tokens", "labels", "scalar")


@dataclass(frozen=True)
class Spec:
    """Kind, shape and dtype of one value flowing along a blueprint edge."""

    kind: str
    shape: tuple[Dim, ...]
    dtype: str = "float"

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"unknown spec kind {self.kind!r}"
        expected = {"sequence": 3, "vector": 2, "tokens": 2, "labels": 1, "scalar": 0}.get(self.kind)
        assert expected is None or len(self.shape) == expected, f"{self.kind} needs rank {expected}: {self.shape}"
        assert self.kind != "map" or len(self.shape) >= 2, f"map needs rank >= 2: {self.shape}"

    # -- accessors -------------------------------------------------------------------
    @property
    def features(self) -> Dim:
        """Channel width: last dim of a sequence/vector, dim 1 of a feature map."""
        if self.kind in ("sequence", "vector"):
            return self.shape[-1]
        if self.kind == "map":
            return self.shape[1]
        raise ValueError(f"a {self.kind} has no feature dimension")

    @property
    def time(self) -> Dim:
        """Time dim of a sequence or token sequence."""
        if self.kind in ("sequence", "tokens"):
            return self.shape[1]
        raise ValueError(f"a {self.kind} has no time dimension")

    @property
    def batch(self) -> Dim:
        return self.shape[0]

    def with_features(self, features: Dim) -> "Spec":
        if self.kind in ("sequence", "vector"):
            return replace(self, shape=self.shape[:-1] + (features,))
        if self.kind == "map":
            return replace(self, shape=(self.shape[0], features) + self.shape[2:])
        raise ValueError(f"a {self.kind} has no feature dimension")

    def with_time(self, time: Dim) -> "Spec":
        assert self.kind in ("sequence", "tokens")
        return replace(self, shape=(self.shape[0], time) + self.shape[2:])

    def concrete(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """Shape with every symbol replaced from ``sizes``."""
        return tuple(d if isinstance(d, int) else sizes[d] for d in self.shape)

    def matches(self, shape: tuple[int, ...], sizes: dict[str, int] | None = None) -> bool:
        """True when a real tensor shape fits this spec (symbols match anything unless bound)."""
        if len(shape) != len(self.shape):
            return False
        for want, got in zip(self.shape, shape):
            if isinstance(want, int) and want != got:
                return False
            if isinstance(want, str) and sizes is not None and want in sizes and sizes[want] != got:
                return False
        return True

    def __str__(self) -> str:
        return f"{self.kind}[{', '.join(dim_str(d) for d in self.shape)}]"


def dim_str(d: Dim) -> str:
    return str(d)


def sequence(time: Dim, features: Dim, batch: Dim = "B") -> Spec:
    return Spec("sequence", (batch, time, features))


def vector(features: Dim, batch: Dim = "B") -> Spec:
    return Spec("vector", (batch, features))


def feature_map(channels: Dim, *spatial: Dim, batch: Dim = "B") -> Spec:
    return Spec("map", (batch, channels, *spatial))


def tokens(time: Dim, batch: Dim = "B") -> Spec:
    return Spec("tokens", (batch, time), dtype="long")


def labels(dtype: str = "long", batch: Dim = "B") -> Spec:
    return Spec("labels", (batch,), dtype=dtype)


def scalar() -> Spec:
    return Spec("scalar", ())
