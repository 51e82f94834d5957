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
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind, expect_ports, Width
from composer.registry import register_block
from composer.blocks.heads import make_mlp
from composer.spec import Spec, sequence, vector

__all__ = ["MFPConfig", "MultistageFusion"]


class MFPConfig(BlockConfig):
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


@register_block(MFPConfig, family="fusion")
class MultistageFusion(Block):
    """Multistage Fusion Process: HIGHLIGHT, FUSE and SUMMARIZE over K stages (RMFN eqs. 1-6).

    Inputs: one or more vectors ``(B, D_m)`` (a list or a mapping), concatenated to
    ``h (B, d)`` with ``d = Σ D_m``. Outputs: ``out`` = ``z (B, out)`` and, with HIGHLIGHT on,
    ``attention`` ``(B, K, d)``: the softmax weights of every stage (each row sums to 1).
    """

    main_port = "out"  # a bare reference to the block means this output

    @classmethod
    def infer(cls, config: MFPConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        batch = None
        for port, spec in inputs.items():
            expect_kind(port, spec, "vector")
            if not isinstance(spec.features, int):
                raise SpecError(f"input '{port}' needs a known width, got {spec}", field="in")
            batch = spec.batch if batch is None else batch
        width = sum(int(s.features) for s in inputs.values())
        outputs = {"out": vector(config.out, batch=batch)}
        if config.highlight:
            outputs["attention"] = sequence(config.stages, width, batch=batch)
        return outputs

    @classmethod
    def examples(cls):
        return [
            ({"stages": 2, "hidden": 6, "out": 5, "summarize_hidden": [4], "rescale": True}, {"text": vector(4), "audio": vector(3)}),
            ({"stages": 3, "hidden": 4, "out": 3, "highlight": False, "memory_hidden": [5]}, {"0": vector(4), "1": vector(2)}),
            ({"stages": 1, "hidden": 4, "out": 4, "summarize_input": "last", "dropout": 0.2}, {"in": vector(6)}),
        ]

    def __init__(self, config: MFPConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.width = sum(int(s.features) for s in inputs.values())
        d, cfg = self.width, config
        if cfg.highlight:
            self.memory_init = make_mlp(d, cfg.memory_hidden, d, "tanh", cfg.dropout)  # M, eq. 2
            self.highlight = nn.LSTMCell(d, d)  # decoder over stages, eqs. 1 and 3
        self.fuse = nn.LSTMCell(d, cfg.hidden)  # eq. 5
        self.fuse_memory = nn.Parameter(torch.empty(1, cfg.hidden))
        nn.init.orthogonal_(self.fuse_memory)
        summarized = cfg.hidden * (cfg.stages if cfg.summarize_input == "all" else 1)
        summarize_mlp = make_mlp(summarized, cfg.summarize_hidden, cfg.out, "relu", cfg.dropout)
        self.summarize = nn.Sequential(summarize_mlp, nn.Tanh())  # S, eq. 6

    def describe_inside(self) -> list[dict]:
        """Parts for ``composer render``: the three modules, repeated over K stages."""
        from composer.blocks._inside import _count

        k, d, cfg = self.config.stages, self.width, self.config
        summarized = f"[s1..s{k}]" if cfg.summarize_input == "all" else f"s{k}"
        parts = []
        if cfg.highlight:
            parts.append({"name": "memory_init", "label": f"M: h {d} → HIGHLIGHT memory (eq. 2)", "params": _count(self.memory_init)})
            parts.append({
                "name": "highlight",
                "label": f"HIGHLIGHT LSTM {d}→{d}, softmax over h, × {k} stages (eqs. 1-4)",
                "params": _count(self.highlight),
                "inputs": ["memory_init"],
            })
        parts.append({
            "name": "fuse",
            "label": f"FUSE LSTM {d}→{cfg.hidden}, orthogonal initial memory, × {k} stages (eq. 5)",
            "params": _count(self.fuse) + self.fuse_memory.numel(),
            "inputs": ["highlight"] if cfg.highlight else [],
        })
        parts.append({
            "name": "summarize",
            "label": f"SUMMARIZE S: {summarized} → z {cfg.out} (eq. 6)",
            "params": _count(self.summarize),
            "inputs": ["fuse"],
        })
        return parts

    def fuse_vectors(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``h (B, d)`` -> ``z (B, out)`` and the stage attentions ``(B, K, d)`` (None without HIGHLIGHT)."""
        batch = h.shape[0]
        s, s_memory = h.new_zeros(batch, self.config.hidden), self.fuse_memory.expand(batch, -1)
        if self.config.highlight:
            attention = h.new_zeros(batch, self.width)  # a^0: the decoder's first input
            hl_state = (h.new_zeros(batch, self.width), self.memory_init(h))  # eq. 2
        states, attentions = [], []
        for _ in range(self.config.stages):
            if self.config.highlight:
                hl_state = self.highlight(attention, hl_state)  # eq. 1: a^k depends on a^{1:k-1}
                attention = torch.softmax(hl_state[0], dim=-1)  # eq. 3, over the d dims of h
                attentions.append(attention)
                highlighted = h * attention * (self.width if self.config.rescale else 1.0)  # eq. 4
            else:
                highlighted = h
            s, s_memory = self.fuse(highlighted, (s, s_memory))  # eq. 5
            states.append(s)
        summary_in = torch.cat(states, dim=-1) if self.config.summarize_input == "all" else s  # (B, K·hidden) or (B, hidden)
        z = self.summarize(summary_in)  # eq. 6
        return z, (torch.stack(attentions, dim=1) if attentions else None)  # (B, K, d)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context):
        h = torch.cat(list(inputs.values()), dim=-1)  # (B, d)
        z, attention = self.fuse_vectors(h)
        if attention is None:
            return z
        return {"out": z, "attention": attention}
