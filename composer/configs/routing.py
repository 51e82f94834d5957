"""Routing primitives: ``activation`` (softmax, sigmoid, tanh ... as a block), ``scale``
(per-sample weights broadcast over codes) and ``router`` (per-sample softmax weights over M
inputs from a gating network, EMOE-style). Modules: :mod:`composer.blocks.routing`.

* ``activation``: ``vector (B, D)`` or ``sequence (B, T, D)`` -> the same spec;
  ``f(x / τ)`` over the last axis (softmax, log_softmax) or element-wise.
* ``scale``: ``{weights (B, W), x_1..x_M}`` -> each ``x_m`` times a weight per sample,
  broadcast over its features (and steps): ``W = 1`` scales every input by the one weight,
  ``W = M`` input m by column m, ``column: k`` every input by column k. One input gives port
  ``out``; several give one port per input, named as the input.
* ``router`` (EMOE, Fang et al., CVPR 2025): a gating network reads all inputs (or the port
  ``gate``) and gives per-sample weights ``w = softmax(MLP(g) / τ) (B, M)``; ``out`` is
  ``Σ_m w_m x_m`` (``combine: sum``) or ``[w_1 x_1; …; w_M x_M]`` (``concat``), times M with
  ``rescale`` (EMOE's concat fusion). Auxiliary losses: ``entropy`` = ``λ_e · mean_b M Σ_m w_m
  log w_m`` (EMOE's entropy balance: negative entropy, lowest at uniform weights) and
  ``balance`` = ``λ_b · M Σ_m f_m P_m`` (Switch Transformer's load balance, Fedus et al. 2022,
  eq. 4: ``f_m`` the share of samples whose largest weight is m, ``P_m`` the mean weight).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, last_axis_output
from composer.configs._shapes import mlp, under
from composer.configs.heads import Activation
from composer.registry import block_type
from composer.spec import Spec, scalar, sequence, vector

__all__ = ["ActivationConfig", "ScaleConfig", "RouterConfig", "WEIGHTS", "GATE", "weight_port"]

MODULES = "composer.blocks.routing"

#: The input port of ``scale`` that holds the weights.
WEIGHTS = "weights"
#: The optional input port of ``router`` that its gating network reads (else it reads every input).
GATE = "gate"


def weight_port(port: str) -> str:
    """The ``router`` output holding one input's weight ``(B, 1)``: ``weight_<port>``."""
    return f"weight_{port}"


@block_type("other", implementation=f"{MODULES}:ActivationBlock")
class ActivationConfig(BlockConfig):
    """A function on the last axis: ``softmax``, ``log_softmax``, ``sigmoid``, ``tanh``, ``relu``, ``gelu``.

    ``vector (B, D)`` or ``sequence (B, T, D)`` -> the same spec; the input is divided by
    ``temperature`` first (a softmax at τ). Steps are independent, so padding stays where it
    is. No parameters.
    """

    type: Literal["activation"] = "activation"
    function: Literal["softmax", "log_softmax", "sigmoid", "tanh", "relu", "gelu"] = Field(description="The function applied.")
    temperature: float = Field(default=1.0, gt=0, description="τ: the input is divided by it first.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        return last_axis_output(inputs)  # elementwise: the input's spec

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({"function": "softmax", "temperature": 0.5}, {"in": vector(4)}),
            ({"function": "sigmoid"}, {"in": sequence("T_x", 3)}),
            ({"function": "log_softmax"}, {"in": sequence("T_x", 3)}),
        ]


def _values(inputs: dict[str, Spec], reserved: str, block: str) -> dict[str, Spec]:
    """The inputs other than the ``reserved`` port; each a vector or a sequence, at least one."""
    values = {p: s for p, s in inputs.items() if p != reserved}
    if not values:
        raise SpecError(f"{block} needs at least one input besides '{reserved}'", field="in")
    for port, spec in values.items():
        expect_kind(port, spec, "vector", "sequence")
    return values


@block_type("other", implementation=f"{MODULES}:Scale")
class ScaleConfig(BlockConfig):
    """Per-sample scaling: ``{weights (B, W), x_1..x_M}`` -> ``x_m · w`` broadcast over features and steps.

    ``W = 1``: every input times the one weight; ``W = M``: input m times column m (in port
    order); ``column: k``: every input times column k. Inputs are vectors ``(B, D)`` or
    sequences ``(B, T, D)`` of any widths and time axes (kept, with their masks). One input ->
    port ``out``; several -> one port per input, named as the input. No parameters.
    """

    type: Literal["scale"] = "scale"
    column: int | None = Field(default=None, ge=0, description="Scale every input by this column of the weights.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if WEIGHTS not in inputs:
            raise SpecError(f"needs an input port '{WEIGHTS}' (B, 1) or (B, M) besides the inputs to scale: give `in` as a mapping", field="in")
        weights = inputs[WEIGHTS]
        expect_kind(WEIGHTS, weights, "vector")
        values = _values(inputs, WEIGHTS, "scale")
        width = int(weights.features)
        if self.column is not None:
            if self.column >= width:
                raise SpecError(f"column {self.column} is out of range for '{WEIGHTS}' {weights} (columns 0..{width - 1})", field="column")
        elif width not in (1, len(values)):
            raise SpecError(
                f"'{WEIGHTS}' {weights} has {width} columns for {len(values)} inputs: give one column (B, 1), "
                "one per input (B, M), or pick one with `column`",
                field="in",
            )
        if len(values) == 1:
            return {"out": next(iter(values.values()))}
        return dict(values)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {WEIGHTS: vector(1), "in": vector(4)}),
            ({}, {WEIGHTS: vector(3), "text": vector(4), "audio": sequence("T_x", 2), "vision": vector(5)}),
            ({"column": 1}, {WEIGHTS: vector(3), "audio": sequence("T_x", 3)}),
        ]


@block_type("fusion", implementation=f"{MODULES}:Router")
class RouterConfig(BlockConfig):
    """Per-sample softmax weights over M inputs from a gating network, and their weighted combination (EMOE).

    Inputs: ``M ≥ 2`` vectors ``(B, D_m)`` or sequences ``(B, T, D_m)``, plus an optional port
    ``gate`` the gating network reads instead (sequences are averaged over their valid steps
    first). ``w = softmax(MLP(g) / τ)``, ``g`` the gate input or the inputs concatenated.
    Outputs: ``out`` (``Σ_m w_m x_m`` for inputs of one spec, or the concatenation of the
    ``w_m x_m`` for inputs on one time axis; times M with ``rescale``), ``weights (B, M)``,
    ``weight_<input> (B, 1)`` per input (for ``scale`` or a loss's ``weight_from``), and the
    auxiliary losses ``entropy`` and ``balance`` when their weights are set.
    Parameters: the gate MLP, ``D_g → hidden… → M``.
    """

    main_port: ClassVar[str | None] = "out"

    type: Literal["router"] = "router"
    hidden: list[Width] = Field(default_factory=list, description="Hidden widths of the gating MLP (none: one Linear).")
    activation: Activation = Field(default="relu", description="Activation between the gating MLP's layers.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer of the gating MLP.")
    temperature: float = Field(default=1.0, gt=0, description="τ: the gate logits are divided by it before the softmax.")
    combine: Literal["sum", "concat"] = Field(default="sum", description="sum: Σ w_m x_m (one spec); concat: [w_1 x_1; …] on the last axis.")
    rescale: bool = Field(default=False, description="Multiply out by M (1 per input at uniform weights; EMOE's concat fusion).")
    entropy_weight: float = Field(default=0.0, ge=0.0, description="λ of the entropy term (EMOE: 0.1); 0: no `entropy` port.")
    balance_weight: float = Field(default=0.0, ge=0.0, description="λ of the load-balance term; 0: no `balance` port.")

    def aux_ports(self) -> tuple[str, ...]:
        return tuple(p for p, w in (("entropy", self.entropy_weight), ("balance", self.balance_weight)) if w > 0)

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        values = _values(inputs, GATE, "router")
        if len(values) < 2:
            raise SpecError(f"router needs at least 2 inputs to weigh, got {len(values)}", field="in")
        if GATE in inputs:
            expect_kind(GATE, inputs[GATE], "vector", "sequence")
        out = self._combined(values)
        specs = {"out": out, "weights": vector(len(values), batch=out.batch)}
        specs.update({weight_port(p): vector(1, batch=out.batch) for p in values})
        specs.update({p: scalar() for p in self.aux_ports()})
        return specs

    def _combined(self, values: dict[str, Spec]) -> Spec:
        first_port, first = next(iter(values.items()))
        for port, spec in values.items():
            same = spec.shape == first.shape if self.combine == "sum" else spec.shape[:-1] == first.shape[:-1]
            if spec.kind != first.kind or not same:
                need = "one spec (project them to one width first)" if self.combine == "sum" else "one kind and time axis"
                raise SpecError(f"combine '{self.combine}' needs inputs of {need}: '{port}' is {spec} but '{first_port}' is {first}", field="combine")
        if self.combine == "sum":
            return first
        return first.with_features(sum(int(s.features) for s in values.values()))

    def gate_width(self, inputs: dict[str, Spec]) -> int:
        """Width ``D_g`` of what the gating network reads."""
        if GATE in inputs:
            return int(inputs[GATE].features)
        return sum(int(s.features) for s in inputs.values())

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        experts = len([p for p in inputs if p != GATE])
        return under("gate", mlp(self.gate_width(inputs), self.hidden, experts, dropout=bool(self.dropout)))

    @classmethod
    def examples(cls):
        three = {"text": vector(4), "audio": vector(4), "vision": vector(4)}
        return [
            ({}, three),
            ({"hidden": [6], "temperature": 0.5, "entropy_weight": 0.1, "balance_weight": 0.01}, three),
            ({"combine": "concat", "rescale": True, "hidden": [5], "dropout": 0.1}, {"a": vector(3), "b": vector(2)}),
            ({"entropy_weight": 0.1}, {GATE: sequence("T_g", 5), "a": sequence("T_x", 3), "b": sequence("T_x", 3)}),
            ({"combine": "concat"}, {"a": sequence("T_x", 3), "b": sequence("T_x", 2)}),
        ]
