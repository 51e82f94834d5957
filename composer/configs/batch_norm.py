"""Batch normalisation: ``batch_norm`` over the features of a vector or sequence, or over the
steps of a sequence (EF-LSTM as MMSA runs it). Module: :mod:`composer.blocks.batch_norm`.

``vector (B, D)`` / ``sequence (B, T, D)`` -> the same spec. Training statistics skip padded
entries unless ``padding: include``; in evaluation the running statistics make the block a
fixed affine map per channel, so padded steps never touch valid ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, expect_ports
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["BatchNormConfig"]

MODULES = "composer.blocks.batch_norm"


@block_type("regularizer", implementation=f"{MODULES}:BatchNorm")
class BatchNormConfig(BlockConfig):
    """Batch normalisation ``y = (x - μ_c) / √(σ²_c + ε) · γ_c + β_c`` per channel ``c`` (Ioffe & Szegedy 2015, Alg. 1).

    ``over: features``: the channels are the ``D`` features; ``μ, σ²`` are taken over the batch
    (and the valid steps of a sequence) in training and tracked as running statistics
    (``momentum``) for evaluation: TFN's modality subnetworks (``nn.BatchNorm1d(D)`` on a vector).
    ``over: steps``: the channels are the first ``steps`` time positions, statistics over the
    batch and the features, as MMSA's EF-LSTM applies ``nn.BatchNorm1d(seq_len)`` to a
    ``(B, T, D)`` batch; positions past ``steps`` must be padding (they come out as zeros).
    Parameters ``2C`` (``C = D`` or ``steps``), plus the running statistics as buffers.
    """

    type: Literal["batch_norm"] = "batch_norm"
    over: Literal["features", "steps"] = Field(default="features", description="What a channel is: a feature, or a time position.")
    steps: Width | None = Field(default=None, description="over: steps: the number of time positions (the data's padded length).")
    padding: Literal["exclude", "include"] = Field(
        default="exclude",
        description="exclude: training statistics over valid entries only; include: padded entries too (MMSA, depends on padding).",
    )
    momentum: float = Field(default=0.1, gt=0.0, le=1.0, description="Weight of the batch in the running statistics.")
    eps: float = Field(default=1e-5, gt=0.0, description="Added to the variance.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "vector", "sequence")
        if self.over == "steps":
            if spec.kind != "sequence":
                raise SpecError(f"over: steps normalises time positions, but input '{port}' is {spec}", field="over")
            if self.steps is None:
                raise SpecError("over: steps needs `steps`, the padded length (e.g. 50 for MOSI's aligned_50)", field="steps")
        elif self.steps is not None:
            raise SpecError("`steps` is only used with over: steps", field="steps")
        return {"out": spec}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        channels = self.steps if self.over == "steps" else int(spec.features)
        return {"norm.weight": (channels,), "norm.bias": (channels,)}

    @classmethod
    def examples(cls):
        return [
            ({}, {"in": vector(4)}),
            ({}, {"in": sequence("T_x", 3)}),
            ({"over": "steps", "steps": 16}, {"in": sequence("T_x", 3)}),
            ({"over": "steps", "steps": 5, "padding": "include"}, {"in": sequence(5, 3)}),
        ]
