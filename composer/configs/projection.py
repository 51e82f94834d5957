"""Projection configs: a Linear map on the feature axis and a 1-D convolution over time.

``linear``: ``vector (B, D) -> (B, d)`` or ``sequence (B, T, D) -> (B, T, d)``.
``conv1d``: ``sequence (B, T, D) -> (B, T', d)``, ``T'`` inferred from kernel, stride,
dilation and padding (see :func:`conv_output_time`). Modules: :mod:`composer.blocks.projection`.
"""

from __future__ import annotations

import math
from typing import Literal, Union

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports, last_axis_output
from composer.configs._shapes import conv1d, layer_norm, linear, under
from composer.configs.heads import Activation
from composer.registry import block_type
from composer.spec import Dim, Spec, sequence, vector

__all__ = ["LinearConfig", "Conv1dConfig", "conv_output_time", "shifted_time", "Padding"]

MODULES = "composer.blocks.projection"


@block_type("projection", implementation=f"{MODULES}:LinearProjection")
class LinearConfig(BlockConfig):
    """Linear map on the last axis: ``(B, D) -> (B, d)`` or ``(B, T, D) -> (B, T, d)``.

    ``y = LN(Dropout(act(x Wᵀ + b)))`` where each of bias, activation, dropout and LayerNorm
    is optional. A sequence keeps its time symbol, hence its padding mask.
    Parameters: ``D·d (+ d bias) (+ 2d LayerNorm)``.
    """

    type: Literal["linear"] = "linear"
    out: int = Field(ge=1, description="Output width d.")
    bias: bool = Field(default=True, description="Add a learned bias.")
    activation: Activation | None = Field(
        default=None, description="Activation after the Linear map (none by default)."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the output (after the activation).")
    norm: bool = Field(default=False, description="LayerNorm over the output features (applied last).")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return last_axis_output(inputs, self.out)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        return {
            **under("linear", linear(int(spec.features), self.out, self.bias)),
            **(under("norm", layer_norm(self.out)) if self.norm else {}),
        }

    @classmethod
    def examples(cls):
        return [
            ({"out": 4}, {"in": vector(6)}),
            ({"out": 5, "bias": False, "activation": "gelu", "dropout": 0.1, "norm": True}, {"in": sequence("T_x", 3)}),
        ]


Padding = Union[Literal["same", "valid"], int]


def conv_output_time(time: Dim, kernel: int, stride: int, dilation: int, padding: Padding) -> Dim:
    """``T'`` of a 1-D convolution; a symbol is kept only where the length is preserved.

    * ``same``: ``T' = ceil(T / s)``; ``T`` itself at stride 1.
    * ``valid`` / int ``p``: ``T' = floor((T + 2p - dil·(k-1) - 1) / s) + 1``; ``T`` itself
      when ``s = 1`` and ``2p = dil·(k-1)``; at ``s = 1`` on a symbol ``T`` otherwise a new symbol
      ``T-n`` (``n = dil·(k-1) - 2p`` steps fewer; ``T+n`` when longer, see :func:`shifted_time`)
      whose mask the block sets: a sample with ``L`` valid steps has ``L - n`` valid outputs
      (at least 1), each computed from valid steps and the convolution's own zero padding only
      (MulT as MMSA runs it: ``Conv1d(kernel_size=5, padding=0)`` shortens every sequence by 4).

    Raises :class:`SpecError` when ``T`` is a symbol and the length would change at a stride
    above 1 (the new length depends on each batch in a way no prefix mask describes).
    """
    span = dilation * (kernel - 1)
    if padding == "same":
        if stride == 1:
            return time
        if isinstance(time, int):
            return math.ceil(time / stride)
    else:
        pad = 0 if padding == "valid" else int(padding)
        if stride == 1 and 2 * pad == span:
            return time
        if stride == 1 and isinstance(time, str):
            return shifted_time(time, 2 * pad - span)
        if isinstance(time, int):
            out = (time + 2 * pad - span - 1) // stride + 1
            if out < 1:
                raise SpecError(
                    f"conv1d with kernel {kernel}, dilation {dilation}, padding {padding!r} needs at least "
                    f"{span + 1 - 2 * pad} time steps, got {time}",
                    field="kernel",
                )
            return out
    raise SpecError(
        f"conv1d with stride {stride}, kernel {kernel}, dilation {dilation} and padding {padding!r} changes the "
        f"length of the time axis '{time}', whose size is only known per batch; use padding 'same' with stride 1 "
        "(or an int padding equal to dilation·(kernel-1)/2), or give the modality a fixed length",
        field="padding",
    )


def shifted_time(time: str, shift: int) -> str:
    """The symbol of a padded time axis ``shift`` steps longer (``T_text-4``, ``T_text+2``)."""
    return f"{time}{shift:+d}"


@block_type("projection", implementation=f"{MODULES}:Conv1dProjection")
class Conv1dConfig(BlockConfig):
    """1-D convolution over time: ``sequence (B, T, D) -> (B, T', d)``.

    Runs ``Conv1d(D, d, kernel, stride, dilation)`` on ``(B, D, T)``. ``T'`` follows
    :func:`conv_output_time`: the time symbol (and so the padding mask) is kept when the
    length is preserved, an int is computed for an int ``T``, a stride-1 length change of a
    symbol gives the symbol ``T±n`` with its own mask (``L ± n`` valid steps), anything else is a SpecError.
    Padded steps are zeroed before the convolution, so valid outputs equal those of the
    unpadded sequence with zero padding. ``same`` pads ``P = max((T'-1)·s + dil·(k-1) + 1 - T, 0)``
    zeros, ``⌊P/2⌋`` on the left and the rest on the right (TensorFlow's convention; at
    stride 1, ``P = dil·(k-1)``). Parameters: ``k·D·d (+ d bias)``.
    """

    type: Literal["conv1d"] = "conv1d"
    out: int = Field(ge=1, description="Output channels d.")
    kernel: int = Field(default=3, ge=1, description="Kernel size (time steps).")
    stride: int = Field(default=1, ge=1, description="Stride over time.")
    dilation: int = Field(default=1, ge=1, description="Dilation of the kernel.")
    padding: Padding = Field(
        default="same",
        description=(
            "same: zero-pad so T' = ceil(T / stride) (T' = T at stride 1); valid: no padding; "
            "an int p: p zeros on each side."
        ),
    )
    bias: bool = Field(default=True, description="Add a learned bias per output channel.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        if isinstance(self.padding, int) and self.padding < 0:
            raise SpecError(f"padding must be 'same', 'valid' or an int >= 0, got {self.padding}", field="padding")
        time = conv_output_time(spec.time, self.kernel, self.stride, self.dilation, self.padding)
        return {"out": Spec("sequence", (spec.batch, time, self.out))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        return under("conv", conv1d(int(spec.features), self.out, self.kernel, self.bias))

    @classmethod
    def examples(cls):
        return [
            ({"out": 4}, {"in": sequence("T_x", 3)}),
            ({"out": 4, "kernel": 4, "bias": False}, {"in": sequence("T_x", 3)}),
            ({"out": 2, "kernel": 3, "stride": 2, "padding": "valid"}, {"in": sequence(9, 3)}),
            ({"out": 2, "kernel": 2, "stride": 3, "padding": "same"}, {"in": sequence(7, 3)}),
            ({"out": 2, "kernel": 5, "dilation": 2, "padding": 4}, {"in": sequence("T_x", 3)}),
            ({"out": 3, "kernel": 3, "padding": "valid", "bias": False}, {"in": sequence("T_x", 2)}),
        ]
