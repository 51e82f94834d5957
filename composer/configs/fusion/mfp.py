"""Multistage Fusion Process (MFP) of RMFN (Liang et al., EMNLP 2018, §3.1-3.2, eqs. 1-6).

The MFP fuses a set of per-modality vectors ``h = [h_1; ...; h_M]`` in ``K`` stages:

* HIGHLIGHT (eqs. 1-4): a decoder LSTM over stages whose memory starts at ``M(h)``
  (eq. 2) and whose input at stage ``k`` is the previous attention ``a^{k-1}`` (zeros at
  ``k = 1``); its output is softmax-normalised over the dimensions of ``h`` (eq. 3) and
  highlights ``h̃^k = h ⊙ a^k`` (eq. 4).
* FUSE (eq. 5): an LSTM over stages on ``h̃^k``; its input gate does the local fusion, its
  forget and output gates the integration with earlier stages. Its initial memory is a
  learned vector initialised orthogonally (the paper: "random orthogonal matrices").
* SUMMARIZE (eq. 6): ``z = S(s^{1:K})``, an MLP on the concatenated stage states (or on
  the last one with ``summarize_input: last``) ending in ``tanh``.

Used alone it fuses utterance vectors; inside ``lsthm_system`` it runs at every time step
and its ``z_t`` feeds the LSTHMs at ``t + 1`` (see :mod:`composer.blocks.lsthm`).
Module: :mod:`composer.blocks.fusion.mfp`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, expect_ports
from composer.configs._shapes import lstm_cell, mlp, under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["MFPConfig"]

MODULES = "composer.blocks.fusion.mfp"


@block_type("fusion", implementation=f"{MODULES}:MultistageFusion")
class MFPConfig(BlockConfig):
    """Multistage Fusion Process: HIGHLIGHT, FUSE and SUMMARIZE over K stages (RMFN eqs. 1-6).

    Inputs: one or more vectors ``(B, D_m)`` (a list or a mapping), concatenated to
    ``h (B, d)`` with ``d = Σ D_m``. Outputs: ``out`` = ``z (B, out)`` and, with HIGHLIGHT on,
    ``attention`` ``(B, K, d)``: the softmax weights of every stage (each row sums to 1).
    """

    type: Literal["mfp"] = "mfp"
    stages: int = Field(default=3, ge=1, description="Number of fusion stages K (RMFN Table 4: 1..6, best 3 on MOSI).")
    hidden: int = Field(default=128, ge=1, description="Width of the FUSE LSTM state s^k.")
    out: int = Field(default=128, ge=1, description="Width of the cross-modal code z (RMFN's hybrid size).")
    highlight: bool = Field(
        default=True, description="HIGHLIGHT module on; false = the 'no HIGHLIGHT' ablation (FUSE sees h at every stage)."
    )
    rescale: bool = Field(
        default=False,
        description="Not in the paper: highlight with d·a^k instead of a^k, so uniform attention keeps h's scale.",
    )
    memory_hidden: list[Width] = Field(
        default_factory=list, description="Hidden widths of M, the network giving the HIGHLIGHT LSTM's initial memory (eq. 2)."
    )
    summarize_hidden: list[Width] = Field(default_factory=lambda: [128], description="Hidden widths of S (eq. 6).")
    summarize_input: Literal["all", "last"] = Field(
        default="all", description="S reads all stage states s^{1:K} (eq. 6) or only the last one s^K."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after the hidden layers of M and S.")

    main_port: ClassVar[str | None] = "out"  # a bare reference to the block means this output

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        batch = None
        for port, spec in inputs.items():
            expect_kind(port, spec, "vector")
            if not isinstance(spec.features, int):
                raise SpecError(f"input '{port}' needs a known width, got {spec}", field="in")
            batch = spec.batch if batch is None else batch
        width = sum(int(s.features) for s in inputs.values())
        outputs = {"out": vector(self.out, batch=batch)}
        if self.highlight:
            outputs["attention"] = sequence(self.stages, width, batch=batch)
        return outputs

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        d = sum(int(s.features) for s in inputs.values())
        dropout = bool(self.dropout)  # make_mlp adds Dropout layers only for a non-zero rate
        shapes: Shapes = {"fuse_memory": (1, self.hidden)}
        if self.highlight:
            shapes.update(under("memory_init", mlp(d, self.memory_hidden, d, dropout=dropout)))  # M, eq. 2
            shapes.update(under("highlight", lstm_cell(d, d)))  # eqs. 1 and 3
        shapes.update(under("fuse", lstm_cell(d, self.hidden)))  # eq. 5
        summarized = self.hidden * (self.stages if self.summarize_input == "all" else 1)
        shapes.update(under("summarize.0", mlp(summarized, self.summarize_hidden, self.out, dropout=dropout)))  # S, eq. 6
        return shapes

    @classmethod
    def examples(cls):
        return [
            ({"stages": 2, "hidden": 6, "out": 5, "summarize_hidden": [4], "rescale": True}, {"text": vector(4), "audio": vector(3)}),
            ({"stages": 3, "hidden": 4, "out": 3, "highlight": False, "memory_hidden": [5]}, {"0": vector(4), "1": vector(2)}),
            ({"stages": 1, "hidden": 4, "out": 4, "summarize_input": "last", "dropout": 0.2}, {"in": vector(6)}),
        ]
