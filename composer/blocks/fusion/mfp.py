"""Multistage Fusion Process (MFP) module of RMFN: HIGHLIGHT, FUSE and SUMMARIZE over K stages
(config, shapes and equations: :mod:`composer.configs.fusion.mfp`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.blocks.heads import make_mlp
from composer.configs.fusion.mfp import MFPConfig
from composer.spec import Spec

__all__ = ["MultistageFusion"]


class MultistageFusion(Block):
    """RMFN's Multistage Fusion Process, eqs. 1-6 (:class:`~composer.configs.fusion.mfp.MFPConfig`)."""

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
