"""Memory Fusion Network (MFN; Zadeh et al., AAAI 2018) and Graph-MFN (Zadeh et al., ACL 2018, §4).

A System of LSTMs, one ``nn.LSTMCell`` per modality, steps through aligned sequences; after
every step a cross-view code of the step's change feeds a Multi-view Gated Memory ``u``
(MFN §3.2-3.3, as MMSA 2.2.1 writes it: MMSA/models/singleTask/MFN.py, Graph_MFN.py)::

    attention: delta   (MFN's Delta-memory Attention Network, §3.2)
        c^[t-1,t] = [c_{t-1}; c_t]  (the cells of every LSTM at both steps)       (B, 2ΣH)
        a = softmax(D_a(c^[t-1,t])),   ĉ = a ⊙ c^[t-1,t]                          (eqs. 1-2)
    attention: graph   (Graph-MFN: the Dynamic Fusion Graph in DMAN's place, §4)
        z_m = ReLU(W_m [h^m_{t-1}; h^m_t]),   ĉ = τ = DFG(z_1, ..., z_M)           (B, node)

    û_t = tanh(D_u(ĉ))                                                           (eq. 3)
    γ1 = σ(D_γ1([ĉ; u_{t-1}])),   γ2 = σ(D_γ2([ĉ; u_{t-1}]))                       (eq. 4)
    u_t = γ1 ⊙ u_{t-1} + γ2 ⊙ û_t                                                (eq. 5)

Each ``D`` is Linear, ReLU, dropout, Linear. The output is ``[h^1_T; ...; h^M_T; u_T]``.
``u_0``, ``h_0`` and ``c_0`` are zero. Vector inputs are read at every step (MMSA feeds MFN
audio and vision averaged over time and repeated: ``need_normalized`` then AMIO's alignment).
Padded steps (of the first sequence input's mask) leave ``h``, ``c`` and ``u`` unchanged;
``padding: include`` steps through them as MMSA does. The DFG is :mod:`composer.configs.fusion.dfg`.
Module: :mod:`composer.blocks.fusion.mfn`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, expect_ports, widths_per_port
from composer.configs._shapes import linear, lstm_cell, under
from composer.configs.fusion.dfg import dfg_shapes
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["MFNConfig", "network_shapes"]

MODULES = "composer.blocks.fusion.mfn"


def network_shapes(d_in: int, hidden: int, out: int) -> Shapes:
    """One ``D``: ``Linear(d_in, hidden)``, ReLU, Dropout, ``Linear(hidden, out)`` (indices 0 and 3)."""
    return {**under("0", linear(d_in, hidden)), **under("3", linear(hidden, out))}


@block_type("fusion", implementation=f"{MODULES}:MFN")
class MFNConfig(BlockConfig):
    """MFN / Graph-MFN: a System of LSTMs with a Delta-memory Attention Network (or the Dynamic
    Fusion Graph) and a Multi-view Gated Memory (MFN §3.1-3.3, eqs. 1-5; Graph-MFN §4).

    Inputs: sequences ``(B, T, D_m)`` on one time axis and/or vectors ``(B, D_m)`` (read at
    every step), in the order the output concatenates them. Output ``out``:
    ``[h^1_T; ...; h^M_T; u_T]`` ``(B, ΣH_m + memory)``.

    Submodules: ``lstm.<port>`` (nn.LSTMCell), ``attention`` (D_a, delta) or ``transform.<port>``
    and ``graph`` (graph), ``memory.proposal`` (D_u), ``memory.retain`` (D_γ1), ``memory.update`` (D_γ2).
    """

    type: Literal["mfn"] = "mfn"
    hidden: dict[str, Width] | list[Width] = Field(description="LSTM width per input: a mapping keyed like `in`, or a list in input order.")
    memory: Width = Field(description="Width of the multi-view gated memory u (MMSA's memsize).")
    attention: Literal["delta", "graph"] = Field(
        default="delta", description="delta: MFN's Delta-memory Attention Network; graph: Graph-MFN's Dynamic Fusion Graph."
    )
    attention_hidden: Width = Field(default=32, description="Inner width of D_a (delta; MMSA's NN1Config.shapes).")
    attention_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout inside D_a (delta; NN1Config.drop).")
    node: Width | None = Field(default=None, description="DFG vertex width (graph, required; MMSA's inner_node_dim).")
    graph_hidden: Width = Field(default=100, description="Inner width of the DFG's vertex networks (graph; MMSA: 100).")
    efficacy_hidden: Width = Field(default=100, description="First inner width of the DFG's efficacy network (graph; MMSA: 100).")
    vertices: Literal["trained", "fixed"] = Field(
        default="trained", description="fixed: the DFG's multimodal vertex networks stay at their random initialisation (MMSA 2.2.1)."
    )
    proposal_hidden: Width = Field(description="Inner width of D_u (MMSA's NN2Config / NNConfig shapes).")
    proposal_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout inside D_u (NN2Config / NNConfig drop).")
    retain_hidden: Width = Field(description="Inner width of the retain gate D_γ1 (gamma1Config.shapes).")
    retain_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout inside D_γ1 (gamma1Config.drop).")
    update_hidden: Width = Field(description="Inner width of the update gate D_γ2 (gamma2Config.shapes).")
    update_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout inside D_γ2 (gamma2Config.drop).")
    padding: Literal["exclude", "include"] = Field(
        default="exclude", description="include: step through padded steps too, as MMSA does (default: hold every state there)."
    )

    @model_validator(mode="after")
    def _graph_needs_node(self):
        if self.attention == "graph" and self.node is None:
            raise ValueError("attention: graph needs `node`, the DFG's vertex width (MMSA's inner_node_dim)")
        return self

    def port_widths(self, ports: list[str]) -> dict[str, int]:
        """LSTM width per input port; raises SpecError when ``hidden`` does not cover the ports."""
        return widths_per_port(self.hidden, ports)

    def code_width(self, widths: dict[str, int]) -> int:
        """Width of ĉ: ``2ΣH`` (delta) or ``node`` (graph)."""
        return 2 * sum(widths.values()) if self.attention == "delta" else int(self.node)

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        sequences = [p for p, s in inputs.items() if s.kind == "sequence"]
        if not sequences:
            raise SpecError("needs at least one sequence input: the LSTMs step through its time axis", field="in")
        first = inputs[sequences[0]]
        for port, spec in inputs.items():
            expect_kind(port, spec, "sequence", "vector")
            if not isinstance(spec.features, int):
                raise SpecError(f"input '{port}' needs a known width, got {spec}", field="in")
            if spec.kind == "sequence" and spec.shape[:2] != first.shape[:2]:
                raise SpecError(
                    f"the LSTMs step through aligned sequences: input '{port}' is {spec} but '{sequences[0]}' is "
                    f"{first}; give the modalities one `time:` symbol (word-aligned features)",
                    field="in",
                )
        if self.attention == "graph" and len(inputs) < 2:
            raise SpecError("attention: graph fuses two or more inputs", field="in")
        widths = self.port_widths(list(inputs))
        return {"out": vector(sum(widths.values()) + self.memory, batch=first.batch)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        ports = list(inputs)
        widths = self.port_widths(ports)
        shapes: Shapes = {}
        for port in ports:
            shapes.update(under(f"lstm.{port}", lstm_cell(int(inputs[port].features), widths[port])))
        code = self.code_width(widths)
        if self.attention == "delta":
            shapes.update(under("attention", network_shapes(code, self.attention_hidden, code)))
        else:
            for port in ports:
                shapes.update(under(f"transform.{port}", linear(2 * widths[port], widths[port])))
            graph = dfg_shapes(list(widths.values()), ports, int(self.node), self.graph_hidden, self.efficacy_hidden)
            if self.vertices == "fixed":
                graph = {k: v for k, v in graph.items() if not k.startswith("vertices.")}
            shapes.update(under("graph", graph))
        shapes.update(under("memory.proposal", network_shapes(code, self.proposal_hidden, self.memory)))
        shapes.update(under("memory.retain", network_shapes(code + self.memory, self.retain_hidden, self.memory)))
        shapes.update(under("memory.update", network_shapes(code + self.memory, self.update_hidden, self.memory)))
        return shapes

    @classmethod
    def examples(cls):
        aligned = {"text": sequence("T", 4), "audio": sequence("T", 3), "vision": sequence("T", 2)}
        sizes = {"memory": 5, "proposal_hidden": 3, "retain_hidden": 4, "update_hidden": 2}
        return [
            ({"hidden": [3, 2, 4], "attention_hidden": 6, "attention_dropout": 0.2, **sizes}, aligned),
            ({"hidden": {"text": 3, "audio": 2}, **sizes}, {"text": sequence("T", 4), "audio": vector(3)}),
            ({"hidden": [3, 2, 4], "attention": "graph", "node": 4, "graph_hidden": 5, "efficacy_hidden": 3, **sizes}, aligned),
            ({"hidden": [3, 2], "attention": "graph", "node": 2, "graph_hidden": 3, "efficacy_hidden": 3, "vertices": "fixed", **sizes},
             {"a": sequence("T", 2), "b": sequence("T", 3)}),
        ]
