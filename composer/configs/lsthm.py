"""System of Long Short-term Hybrid Memories (LSTHM) with recurrent cross-modal fusion.

The recurrent half of RMFN (Liang et al., EMNLP 2018, §3.3-3.4; LSTHM from Zadeh et al.,
AAAI 2018). One LSTHM per modality (eqs. 7-12) reads its input ``x^m_{t+1}``, its own
state ``h^m_t`` and the hybrid cross-modal code ``z_t``; after every step a *fusion* block
(by default the Multistage Fusion Process, :mod:`composer.configs.fusion.mfp`) maps the new
states ``{m: h^m_{t+1}}`` to ``z_{t+1}``, which the *feedback* hands to every LSTHM at the
next step. The output is ``E = [h^1_T; ...; h^M_T; z_T]`` (eq. 13).

The fusion is a nested block config validated against the block registry, so any
registered block that maps a mapping of vectors ``{m: (B, H_m)}`` to a vector ``out`` can
take the MFP's place (``mfp``, ``concat``, ...); ``fusion: null`` is the "no MFP" ablation
(LSTHMs without ``z``, i.e. plain LSTMs). Module: :mod:`composer.blocks.lsthm`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_serializer

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, expect_ports, widths_per_port
from composer.configs._nested import nested_block_config, wire_nested
from composer.configs._shapes import linear, under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["LSTHMSystemConfig", "Gate"]

MODULES = "composer.blocks.lsthm"

Gate = Literal["hard_sigmoid", "sigmoid"]


@block_type("fusion", implementation=f"{MODULES}:LSTHMSystem")
class LSTHMSystemConfig(BlockConfig):
    """A system of LSTHMs with a recurrent fusion feedback (RMFN §3.3-3.4, eqs. 7-13).

    Inputs: aligned sequences ``(B, T, D_m)`` as a mapping (or list), one per modality.
    Per step t: ``h^m_{t+1}, c^m_{t+1} = LSTHM_m(x^m_{t+1}, h^m_t, c^m_t, z_t)`` (eqs. 7-12),
    then ``z_{t+1} = fusion({m: h^m_{t+1}})`` (eqs. 1-6 for ``mfp``). Padded steps leave
    ``h``, ``c`` and ``z`` unchanged, so the final state is each sample's last real step.

    Outputs: ``out`` = ``E = [h^1_T; ...; h^M_T; z_T]`` ``(B, ΣH_m + Z)`` (eq. 13); every
    other vector/sequence port of the fusion block, stacked over time and flattened per
    step, e.g. ``attention`` ``(B, T, K·ΣH_m)`` for ``mfp`` (view it as ``(B, T, K, ΣH_m)``;
    zero on padded steps); the fusion's auxiliary losses as ``fusion_<port>`` (mean over the
    steps), collected like any block's (e.g. a ``moe`` fusion's balance).

    Vector inputs (e.g. an utterance-level code) are not stepped through: they are extra
    inputs of the nested fusion, given to it at every step next to the LSTHM states.

    Submodules: ``lsthm.<modality>`` (the cells, with ``W``, ``U``, ``V``), ``fusion`` (the
    nested block) and ``feedback`` (``z_0`` and the masked hand-over of ``z_t``).
    """

    type: Literal["lsthm_system"] = "lsthm_system"
    hidden: dict[str, Width] | list[Width] = Field(
        description="LSTHM width per modality: a mapping keyed like `in`, or a list in input order (MOSI: 64/16/32)."
    )
    fusion: dict[str, Any] | None = Field(
        default_factory=lambda: {"type": "mfp"},
        description="Block that maps the per-modality states to z_t (a block config without `in`; default mfp); "
        "null = no cross-modal code (the 'no MFP' ablation).",
    )
    gate: Gate = Field(default="hard_sigmoid", description="σ of the LSTHM gates (the paper: hard sigmoid).")

    main_port: ClassVar[str | None] = "out"  # E of eq. 13; a bare reference to the block means it

    @field_validator("hidden")
    @classmethod
    def _widths_positive(cls, value):
        widths = value.values() if isinstance(value, dict) else value
        if not widths or any(w < 1 for w in widths):
            raise ValueError("give a width >= 1 for every modality")
        return value

    @field_validator("fusion")
    @classmethod
    def _fusion_is_a_block(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Validate the nested config against the registry; store it with all defaults filled in."""
        if value is None:
            return None
        return nested_block_config(value, "fusion", "the system feeds the fusion one state per modality")

    @model_serializer(mode="wrap")
    def _keep_null_fusion(self, handler, info) -> dict[str, Any]:
        """Dump ``fusion: null`` even under ``exclude_none``: dropping it would bring back the MFP default."""
        data = handler(self)
        if self.fusion is None and not info.exclude_unset and "fusion" not in data:
            data["fusion"] = None
        return data

    def port_widths(self, ports: list[str]) -> dict[str, int]:
        """LSTHM width per input port; raises SpecError when ``hidden`` does not cover the ports."""
        return widths_per_port(self.hidden, ports)

    def fusion_config(self, ports: list[str]) -> BlockConfig:
        """The nested fusion config, wired to one input per modality port."""
        assert self.fusion is not None
        return wire_nested(self.fusion, {p: p for p in ports})

    @staticmethod
    def split_ports(inputs: dict[str, Spec]) -> tuple[list[str], list[str]]:
        """Sequence ports (one LSTHM each) and vector ports (extra inputs of the nested fusion)."""
        return [p for p, s in inputs.items() if s.kind != "vector"], [p for p, s in inputs.items() if s.kind == "vector"]

    def aux_ports(self) -> tuple[str, ...]:
        """The nested fusion's auxiliary losses (e.g. a ``moe`` fusion's balance), as ``fusion_<port>``."""
        if self.fusion is None:
            return ()
        return tuple(f"fusion_{p}" for p in self.fusion_config(["_"]).aux_ports())

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        sequences, extras = self.split_ports(inputs)
        if not sequences:
            raise SpecError("needs at least one sequence input (one LSTHM per modality)", field="in")
        if extras and self.fusion is None:
            raise SpecError(f"vector inputs {extras} feed the nested fusion, but `fusion` is null", field="in")
        first = inputs[sequences[0]]
        for port in sequences:
            spec = inputs[port]
            expect_kind(port, spec, "sequence")
            if not isinstance(spec.features, int):
                raise SpecError(f"input '{port}' needs a known width, got {spec}", field="in")
            if spec.shape[:2] != first.shape[:2]:
                raise SpecError(
                    f"the LSTHMs step through aligned sequences: input '{port}' is {spec} but the first input is "
                    f"{first}; give the modalities one `time:` symbol (word-aligned features)",
                    field="in",
                )
        widths = self.port_widths(sequences)
        fusion_specs = self.fusion_specs(widths, first.batch, {p: inputs[p] for p in extras})
        z_width = int(fusion_specs["out"].features) if fusion_specs else 0
        outputs = {"out": vector(sum(widths.values()) + z_width, batch=first.batch)}
        aux = set(self.aux_ports())
        for port, spec in fusion_specs.items():
            width = _flat_width(spec)
            if f"fusion_{port}" in aux:
                outputs[f"fusion_{port}"] = Spec("scalar", ())
            elif port != "out" and width is not None:
                outputs[port] = sequence(first.time, width, batch=first.batch)
        return outputs

    def fusion_states(self, widths: dict[str, int], batch: Any = "B", extras: dict[str, Spec] | None = None) -> dict[str, Spec]:
        """The specs the nested fusion reads: one state ``(B, H_m)`` per LSTHM, then the vector inputs."""
        return {**{port: vector(w, batch=batch) for port, w in widths.items()}, **(extras or {})}

    def fusion_specs(self, widths: dict[str, int], batch, extras: dict[str, Spec] | None = None) -> dict[str, Spec]:
        """The nested fusion's output specs on the LSTHM states (empty without a fusion)."""
        if self.fusion is None:
            return {}
        states = self.fusion_states(widths, batch, extras)
        name = self.fusion["type"]
        try:
            specs = self.fusion_config(list(states)).infer(states)
        except SpecError as exc:
            message = f"fusion ({name}) cannot fuse the LSTHM states {_describe(states)}: {exc.message}"
            raise SpecError(message, field="fusion") from None
        out = specs.get("out")
        if out is None or out.kind != "vector" or not isinstance(out.features, int):
            raise SpecError(
                f"fusion ({name}) must turn the LSTHM states {_describe(states)} into one vector on port 'out', "
                f"it gives {', '.join(f'{p}: {s}' for p, s in specs.items())}",
                field="fusion",
            )
        return specs

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes | None:
        sequences, extras = self.split_ports(inputs)
        widths = self.port_widths(sequences)
        extra_specs = {p: inputs[p] for p in extras}
        fusion_specs = self.fusion_specs(widths, inputs[sequences[0]].batch, extra_specs)
        z_width = int(fusion_specs["out"].features) if fusion_specs else 0
        shapes: Shapes = {}
        for port in sequences:  # the cells: W x + U h (+ V z), eqs. 7-10
            d_in, hidden = int(inputs[port].features), widths[port]
            shapes.update(under(f"lsthm.{port}.W", linear(d_in, 4 * hidden)))
            shapes.update(under(f"lsthm.{port}.U", linear(hidden, 4 * hidden)))
            if z_width:
                shapes.update(under(f"lsthm.{port}.V", linear(z_width, 4 * hidden)))
        if self.fusion is not None:
            states = self.fusion_states(widths, extras=extra_specs)
            inner = self.fusion_config(list(states)).parameter_shapes(states)
            if inner is None:  # a plug-in fusion that only its built module knows
                return None
            shapes.update(under("fusion", inner))
            shapes["feedback.initial"] = (1, z_width)  # z_0
        return shapes

    @classmethod
    def examples(cls):
        aligned = {"text": sequence("T", 5), "audio": sequence("T", 3)}
        mfp = {"type": "mfp", "stages": 2, "hidden": 4, "out": 5, "summarize_hidden": [3]}
        return [
            ({"hidden": {"text": 4, "audio": 3}, "fusion": mfp}, aligned),
            ({"hidden": {"text": 4, "audio": 3}, "fusion": None, "gate": "sigmoid"}, aligned),
            ({"hidden": [3, 2], "fusion": {"type": "concat"}}, {"0": sequence(4, 2), "1": sequence(4, 3)}),
            ({"hidden": [4, 2], "fusion": {**mfp, "highlight": False}}, {"0": sequence("T", 2), "1": sequence("T", 3)}),
            # a fusion with an auxiliary loss (kept as fusion_balance), and a vector input fed to the fusion
            ({"hidden": [3], "fusion": {"type": "moe", "out": 4, "experts": 3, "top_k": 2}}, {"0": sequence("T", 2)}),
            ({"hidden": {"text": 4, "audio": 3}, "fusion": {"type": "concat"}}, {**aligned, "utterance": vector(2)}),
        ]


def _flat_width(spec: Spec) -> int | None:
    """Features per sample of a vector/sequence spec with fixed non-batch dims, else None."""
    dims = spec.shape[1:]
    return math.prod(dims) if spec.kind in ("vector", "sequence") and all(isinstance(d, int) for d in dims) else None


def _describe(states: dict[str, Spec]) -> str:
    return "{" + ", ".join(f"{p}: {s}" for p, s in states.items()) + "}"
