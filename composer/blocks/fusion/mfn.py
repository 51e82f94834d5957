"""Memory Fusion Network and Graph-MFN, MFN §3 eqs. 1-5 and Graph-MFN §4 (config, equations and
shapes: :mod:`composer.configs.fusion.mfn`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from composer.blocks._base import Block, Context
from composer.blocks.fusion.dfg import DynamicFusionGraph
from composer.configs.fusion.mfn import MFNConfig
from composer.spec import Spec

__all__ = ["MFN", "GatedMemory"]


def _network(d_in: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    """One ``D`` of MFN: Linear, ReLU, Dropout, Linear (indices 0 and 3 whatever the dropout)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class GatedMemory(nn.Module):
    """MFN's Multi-view Gated Memory (§3.3, eqs. 3-5): ``ĉ (B, K)``, ``u_{t-1} (B, U)`` -> ``u_t (B, U)``.

    ``û = tanh(D_u(ĉ))``, ``γ1 = σ(D_γ1([ĉ; u]))``, ``γ2 = σ(D_γ2([ĉ; u]))``, ``u_t = γ1 ⊙ u + γ2 ⊙ û``.
    """

    def __init__(self, code: int, memory: int, config: MFNConfig):
        super().__init__()
        self.proposal = _network(code, config.proposal_hidden, memory, config.proposal_dropout)
        self.retain = _network(code + memory, config.retain_hidden, memory, config.retain_dropout)
        self.update = _network(code + memory, config.update_hidden, memory, config.update_dropout)

    def forward(self, code: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        proposal = torch.tanh(self.proposal(code))  # û_t, eq. 3
        both = torch.cat([code, memory], dim=-1)  # (B, K + U)
        retain, update = torch.sigmoid(self.retain(both)), torch.sigmoid(self.update(both))  # γ1, γ2, eq. 4
        return retain * memory + update * proposal  # eq. 5


class MFN(Block):
    """A System of LSTMs with DMAN (or the DFG) and the gated memory (:class:`~composer.configs.fusion.mfn.MFNConfig`)."""

    config: MFNConfig

    def __init__(self, config: MFNConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports = list(inputs)
        self.widths = config.port_widths(self.ports)
        self.lstm = nn.ModuleDict({p: nn.LSTMCell(int(inputs[p].features), self.widths[p]) for p in self.ports})
        code = config.code_width(self.widths)
        if config.attention == "delta":
            self.attention = _network(code, config.attention_hidden, code, config.attention_dropout)
        else:
            self.transform = nn.ModuleDict({p: nn.Linear(2 * w, w) for p, w in self.widths.items()})
            self.graph = DynamicFusionGraph(
                list(self.widths.values()), self.ports, int(config.node), config.graph_hidden, config.efficacy_hidden,
                fixed=config.vertices == "fixed",
            )
        self.memory = GatedMemory(code, config.memory, config)
        self.time_port = next(p for p, s in inputs.items() if s.kind == "sequence")

    def cross_view_code(self, old: dict, new: dict) -> torch.Tensor:
        """ĉ from the states before and after a step: DMAN over the cells (eqs. 1-2) or the DFG
        over the transformed hidden states (Graph-MFN §4). ``old``/``new``: port -> (h, c)."""
        if self.config.attention == "delta":
            cells = torch.cat([old[p][1] for p in self.ports] + [new[p][1] for p in self.ports], dim=-1)  # (B, 2ΣH)
            return F.softmax(self.attention(cells), dim=-1) * cells
        singletons = [F.relu(self.transform[p](torch.cat([old[p][0], new[p][0]], dim=-1))) for p in self.ports]
        return self.graph(singletons)[0]  # τ: (B, node)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        first = inputs[self.time_port]  # (B, T, D)
        batch, steps = first.shape[:2]
        mask = ctx.mask(self.in_specs[self.time_port]) if self.config.padding == "exclude" else None  # (B, T)
        state = {p: (first.new_zeros(batch, w), first.new_zeros(batch, w)) for p, w in self.widths.items()}
        memory = first.new_zeros(batch, self.config.memory)
        for t in range(steps):
            step = {p: x[:, t] if self.in_specs[p].kind == "sequence" else x for p, x in inputs.items()}  # (B, D_m)
            new = {p: self.lstm[p](step[p], state[p]) for p in self.ports}
            new_memory = self.memory(self.cross_view_code(state, new), memory)
            if mask is not None:
                valid = mask[:, t, None]  # (B, 1)
                new = {p: tuple(torch.where(valid, n, o) for n, o in zip(new[p], state[p])) for p in self.ports}
                new_memory = torch.where(valid, new_memory, memory)
            state, memory = new, new_memory
        return torch.cat([state[p][0] for p in self.ports] + [memory], dim=-1)  # (B, ΣH + U)
