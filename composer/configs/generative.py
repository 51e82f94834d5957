"""Decoders of generative multimodal models: MFM's modality decoders.

``lstm_decoder`` is the decoder ``F_m`` of the Multimodal Factorization Model (Tsai, Liang,
Zadeh, Morency, Salakhutdinov, "Learning Factorized Multimodal Representations", ICLR 2019),
as MMSA 2.2.1 writes it (``MMSA/models/singleTask/MFM.py``, ``decoderLSTM``).
MFM factorises a sample into a multimodal discriminative factor ``Z_y`` and one
modality-specific generative factor ``Z_{a_m}`` per modality; the decoder of modality ``m``
generates the whole sequence from the two, ``X̂_m = F_m(f_y(Z_y), f_{a_m}(Z_{a_m}))``,
while ``Ŷ = D(f_y(Z_y))`` predicts the label from the discriminative factor alone.
With ``s = [f_y; f_{a_m}]`` of width ``C`` (the code)::

    (h_1, c_1) = LSTMCell(s, (0, 0))                         the code is read once, at step 1
    (h_t, c_t) = LSTMCell(h_{t-1}, (h_{t-1}, c_{t-1}))       t = 2..T: the cell reads its own output
    x̂_t = W_out h_t + b_out                                 (B, D_m) at every step

The cell's width is the code's width ``C``; ``T`` and ``D_m`` are the reconstructed sequence's
(the ``target`` input, e.g. the modality itself): ``code (B, C)``, ``target (B, T, D_m)`` ->
``(B, T, D_m)``. Parameters: ``8C² + 8C`` (the cell) ``+ C·D_m + D_m``. Padded steps of the
target come out as zeros (``padding: exclude``); ``include`` keeps the decoder's output there,
as MMSA does (its MSE compares every step, padded ones included). The output at a real step
never depends on the padding. Module: :mod:`composer.blocks.generative`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import linear, lstm_cell, under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["LSTMDecoderConfig"]

MODULES = "composer.blocks.generative"


@block_type("head", implementation=f"{MODULES}:LSTMDecoder")
class LSTMDecoderConfig(BlockConfig):
    """MFM's modality decoder ``F_m`` (Tsai et al., ICLR 2019): a sequence generated from one code.

    Inputs (a mapping): ``code`` ``vector (B, C)`` (MFM: ``[f_y(Z_y); f_{a_m}(Z_{a_m})]``) and
    ``target`` ``sequence (B, T, D)`` (the sequence to reconstruct: its length, width and mask).
    ``h_1 = LSTMCell(code, 0)``, ``h_t = LSTMCell(h_{t-1}, h_{t-1}, c_{t-1})``, ``x̂_t = Linear(h_t)``;
    output ``(B, T, D)`` on the target's time axis. Submodules ``cell`` (``LSTMCell(C, C)``) and
    ``out`` (``Linear(C, D)``).
    """

    type: Literal["lstm_decoder"] = "lstm_decoder"
    shape_only_ports: ClassVar[tuple[str, ...]] = ("target",)  # its length, width and mask; never its values
    padding: Literal["exclude", "include"] = Field(
        default="exclude",
        description="exclude: zeros at the target's padded steps; include: the decoder's output there too (MMSA's decoderLSTM).",
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=2)
        if set(inputs) != {"code", "target"}:
            raise SpecError(
                f"give the inputs as a mapping with the ports 'code' (the vector to decode) and 'target' "
                f"(the sequence to reconstruct), got ports {sorted(inputs)}",
                field="in",
            )
        expect_kind("code", inputs["code"], "vector")
        expect_kind("target", inputs["target"], "sequence")
        for port in ("code", "target"):
            if not isinstance(inputs[port].features, int):
                raise SpecError(f"input '{port}' needs a known width, got {inputs[port]}", field="in")
        return {"out": inputs["target"]}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        code, width = int(inputs["code"].features), int(inputs["target"].features)
        return {**under("cell", lstm_cell(code, code)), **under("out", linear(code, width))}

    @classmethod
    def examples(cls):
        return [
            ({}, {"code": vector(5), "target": sequence("T_x", 3)}),
            ({"padding": "include"}, {"code": vector(4), "target": sequence(6, 2)}),
        ]
