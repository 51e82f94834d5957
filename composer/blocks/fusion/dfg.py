"""Dynamic Fusion Graph, Graph-MFN §4 (config, equations and shapes: :mod:`composer.configs.fusion.dfg`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.fusion.dfg import DFGConfig, efficacy_count, predecessors, subsets, vertex_name
from composer.spec import Spec

__all__ = ["DynamicFusionGraph", "DFG", "fix"]


def fix(module: nn.Module) -> nn.Module:
    """Turn every parameter of ``module`` into a buffer of the same name and value (kept, never trained)."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach().clone())
    return module


def _two_linear(d_in: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Linear(hidden, out))


class DynamicFusionGraph(nn.Module):
    """The DFG over singletons ``[z_1, ..., z_M]`` each ``(B, D_m)`` -> ``(τ (B, node), α (B, E))`` (eqs. 1-2).

    Submodules: ``vertices.<ports>`` (one per multimodal vertex, ``text-audio``...), ``top``
    (``D_τ``) and ``efficacy`` (``D_α``); all linear, as MMSA writes them.
    """

    def __init__(self, widths: list[int], ports: list[str], node: int, hidden: int, efficacy_hidden: int, fixed: bool = False):
        super().__init__()
        count = len(widths)
        self.count = count
        self.multimodal = [s for s in subsets(count) if len(s) > 1]
        vertices = {}
        for vertex in self.multimodal:
            d_in = sum(widths[s[0]] if len(s) == 1 else node for s in predecessors(vertex, count))
            vertices[vertex_name(vertex, ports)] = _two_linear(d_in, hidden, node)
        self.names = {vertex: vertex_name(vertex, ports) for vertex in self.multimodal}
        self.vertices = nn.ModuleDict(vertices)
        if fixed:
            fix(self.vertices)
        self.top = _two_linear(sum(widths) + len(self.multimodal) * node, hidden, node)
        self.efficacy = nn.Sequential(
            nn.Linear(sum(widths), efficacy_hidden), nn.Linear(efficacy_hidden, node), nn.Linear(node, efficacy_count(count))
        )

    def forward(self, singletons: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        efficacies = self.efficacy(torch.cat(singletons, dim=-1))  # α: (B, E), eq. 2
        values = {(i,): z for i, z in enumerate(singletons)}
        edge = 0
        for vertex in [*self.multimodal, ()]:  # () is τ
            sources = predecessors(vertex, self.count)
            weighted = [values[s] * efficacies[:, edge + k, None] for k, s in enumerate(sources)]  # α_(s→S) v_s
            network = self.top if not vertex else self.vertices[self.names[vertex]]
            values[vertex] = network(torch.cat(weighted, dim=-1))  # (B, node), eq. 1
            edge += len(sources)
        return values[()], efficacies


class DFG(Block):
    """The Dynamic Fusion Graph as a block (:class:`~composer.configs.fusion.dfg.DFGConfig`)."""

    config: DFGConfig

    def __init__(self, config: DFGConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        ports = list(inputs)
        widths = [int(inputs[p].features) for p in ports]
        self.graph = DynamicFusionGraph(
            widths, ports, config.node, config.hidden, config.efficacy_hidden, fixed=config.vertices == "fixed"
        )

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        top, efficacies = self.graph(list(inputs.values()))
        return {"out": top, "efficacies": efficacies}
