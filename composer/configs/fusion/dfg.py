"""Dynamic Fusion Graph (DFG; Zadeh et al., ACL 2018, "Multimodal Language Analysis in the Wild", §4).

A vertex per non-empty subset of the modalities. The singleton vertices are the inputs
``{m: (B, D_m)}``; a multimodal vertex ``v_S`` (``|S| >= 2``) reads its predecessors, every
proper non-empty subset of ``S``, each scaled by its efficacy ``α_(s→S)`` (eq. 1); the top
vertex ``τ`` reads every vertex. The efficacies come from the singletons (eq. 2)::

    α = D_α([z_1; ...; z_M])                                  (B, E)
    v_S = D_S([α_(s→S) v_s for s ⊊ S, s ≠ ∅])                (B, node)
    τ   = D_τ([α_(s→τ) v_s for every vertex s])               (B, node)

As MMSA 2.2.1 writes it (MMSA/models/singleTask/Graph_MFN.py, ``DynamicFusionGraph``), every
``D`` is linear: ``D_S`` and ``D_τ`` are Linear(·, hidden) then Linear(hidden, node), ``D_α``
is Linear(ΣD_m, efficacy_hidden), Linear(efficacy_hidden, node), Linear(node, E), with no
activation and no sigmoid on ``α`` (the paper's ``α`` is a sigmoid). Vertices and efficacies are
ordered as ``itertools`` lists subsets: by size, then by input order. Module:
:mod:`composer.blocks.fusion.dfg`.
"""

from __future__ import annotations

from itertools import chain, combinations
from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, expect_ports
from composer.configs._shapes import linear, under
from composer.registry import block_type
from composer.spec import Spec, vector

__all__ = ["DFGConfig", "subsets", "predecessors", "efficacy_count", "vertex_name", "dfg_shapes"]

MODULES = "composer.blocks.fusion.dfg"


def subsets(count: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of ``range(count)``, by size then lexicographically (``itertools``' order)."""
    return list(chain.from_iterable(combinations(range(count), r) for r in range(1, count + 1)))


def predecessors(vertex: tuple[int, ...], count: int) -> list[tuple[int, ...]]:
    """The vertices a multimodal vertex reads: its proper non-empty subsets; for the top vertex
    (``vertex == ()``) every vertex."""
    if not vertex:
        return subsets(count)
    return list(chain.from_iterable(combinations(vertex, r) for r in range(1, len(vertex))))


def efficacy_count(count: int) -> int:
    """Number of efficacies ``E``: one per edge, ``Σ_S (2^|S| - 2) + 2^M - 1`` (19 for three inputs)."""
    return sum(len(predecessors(s, count)) for s in subsets(count) if len(s) > 1) + len(subsets(count))


def vertex_name(vertex: tuple[int, ...], ports: list[str]) -> str:
    """A multimodal vertex's submodule name: its ports joined by ``-`` (``text-audio``)."""
    return "-".join(ports[i] for i in vertex)


def dfg_shapes(widths: list[int], ports: list[str], node: int, hidden: int, efficacy_hidden: int) -> Shapes:
    """Parameters of :class:`composer.blocks.fusion.dfg.DynamicFusionGraph` over singletons of ``widths``."""
    count = len(widths)
    shapes: Shapes = {}
    for vertex in (s for s in subsets(count) if len(s) > 1):
        d_in = sum(widths[i] if len(s) == 1 else node for s in predecessors(vertex, count) for i in s[:1])
        shapes.update(under(f"vertices.{vertex_name(vertex, ports)}.0", linear(d_in, hidden)))
        shapes.update(under(f"vertices.{vertex_name(vertex, ports)}.1", linear(hidden, node)))
    d_top = sum(widths) + (len(subsets(count)) - count) * node
    shapes.update(under("top.0", linear(d_top, hidden)))
    shapes.update(under("top.1", linear(hidden, node)))
    shapes.update(under("efficacy.0", linear(sum(widths), efficacy_hidden)))
    shapes.update(under("efficacy.1", linear(efficacy_hidden, node)))
    shapes.update(under("efficacy.2", linear(node, efficacy_count(count))))
    return shapes


@block_type("fusion", implementation=f"{MODULES}:DFG")
class DFGConfig(BlockConfig):
    """The Dynamic Fusion Graph (Graph-MFN §4, eqs. 1-2) over one vector per modality.

    Inputs: vectors ``{m: (B, D_m)}`` (two or more). Outputs: ``out`` = the top vertex ``τ``
    ``(B, node)``; ``efficacies`` ``(B, E)``, the edge weights ``α`` (E = 19 for three inputs).
    ``vertices: fixed`` keeps the multimodal vertices' networks at their random
    initialisation (buffers, not parameters), as MMSA 2.2.1 does by holding them in a plain
    dict its optimiser never sees and its state dict never saves.
    """

    type: Literal["dfg"] = "dfg"
    node: Width = Field(description="Width of every multimodal vertex and of τ (MMSA's inner_node_dim).")
    hidden: Width = Field(default=100, description="Inner width of each vertex network D_S and of D_τ (MMSA: 100).")
    efficacy_hidden: Width = Field(default=100, description="First inner width of the efficacy network D_α (MMSA: 100).")
    vertices: Literal["trained", "fixed"] = Field(
        default="trained",
        description="fixed: the multimodal vertices' networks stay at their random initialisation (MMSA 2.2.1, "
        "whose DynamicFusionGraph keeps them in a plain dict: not trained, not saved).",
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=2)
        for port, spec in inputs.items():
            expect_kind(port, spec, "vector")
            if not isinstance(spec.features, int):
                raise SpecError(f"input '{port}' needs a known width, got {spec}", field="in")
        batch = next(iter(inputs.values())).batch
        return {"out": vector(self.node, batch=batch), "efficacies": vector(efficacy_count(len(inputs)), batch=batch)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        ports = list(inputs)
        shapes = dfg_shapes([int(inputs[p].features) for p in ports], ports, self.node, self.hidden, self.efficacy_hidden)
        if self.vertices == "fixed":
            shapes = {k: v for k, v in shapes.items() if not k.startswith("vertices.")}
        return under("graph", shapes)

    @classmethod
    def examples(cls):
        three = {"text": vector(4), "audio": vector(3), "vision": vector(5)}
        return [
            ({"node": 3, "hidden": 5, "efficacy_hidden": 4}, three),
            ({"node": 2, "hidden": 3, "efficacy_hidden": 2, "vertices": "fixed"}, {"a": vector(2), "b": vector(3)}),
        ]
