"""System of Long Short-term Hybrid Memories (LSTHM) with recurrent cross-modal fusion.

The recurrent half of RMFN (Liang et al., EMNLP 2018, §3.3-3.4; LSTHM from Zadeh et al.,
AAAI 2018). One LSTHM per modality (eqs. 7-12) reads its input ``x^m_{t+1}``, its own
state ``h^m_t`` and the hybrid cross-modal code ``z_t``; after every step a *fusion* block
(by default the Multistage Fusion Process, :mod:`composer.blocks.fusion.mfp`) maps the new
states ``{m: h^m_{t+1}}`` to ``z_{t+1}``, which the *feedback* hands to every LSTHM at the
next step. The output is ``E = [h^1_T; ...; h^M_T; z_T]`` (eq. 13).

The fusion is a nested block config validated against the block registry, so any
registered block that maps a mapping of vectors ``{m: (B, H_m)}`` to a vector ``out`` can
take the MFP's place (``mfp``, ``concat``, ...); ``fusion: null`` is the "no MFP" ablation
(LSTHMs without ``z``, i.e. plain LSTMs).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_serializer
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind, expect_ports, Width
from composer.blocks._nested import nested_block_config, wire_nested
from composer.registry import get_block, register_block
from composer.spec import Spec, sequence, vector

__all__ = ["LSTHMCell", "HybridFeedback", "LSTHMSystemConfig", "LSTHMSystem", "hard_sigmoid"]

Gate = Literal["hard_sigmoid", "sigmoid"]


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras' piecewise-linear sigmoid ``clip(0.2 x + 0.5, 0, 1)`` (RMFN's σ in eqs. 7-9)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class LSTHMCell(nn.Module):
    """One Long Short-term Hybrid Memory step (RMFN eqs. 7-12).

    ``x (B, D)``, state ``(h, c)`` each ``(B, H)``, hybrid code ``z (B, Z)`` or None ->
    new ``(h, c)``. Gates are ``W x + U h + V z`` (each map with its bias), split in the
    order f, i, o, c̄ (the public LSTHM cell's layout)::

        f, i, o = σ(.)  (eqs. 8, 7, 9)     c̄ = W_c̄ x + U_c̄ h + V_c̄ z + b  (eq. 10)
        c' = f ⊙ c + i ⊙ tanh(c̄)  (eq. 11)  h' = o ⊙ tanh(c')  (eq. 12)

    σ is ``hard_sigmoid`` (the paper) or ``sigmoid`` (the public cell). With
    ``hybrid_size = 0`` there is no ``V`` and the cell is an LSTM.
    """

    def __init__(self, input_size: int, hidden_size: int, hybrid_size: int = 0, gate: Gate = "hard_sigmoid"):
        super().__init__()
        self.hidden_size = hidden_size
        self.gate = gate
        self.W = nn.Linear(input_size, 4 * hidden_size)
        self.U = nn.Linear(hidden_size, 4 * hidden_size)
        self.V = nn.Linear(hybrid_size, 4 * hidden_size) if hybrid_size else None

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(self.W(x), state, z)

    def step(
        self, input_gates: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from precomputed ``W x`` ``(B, 4H)`` (a sequence's ``W x`` is one matmul)."""
        h, c = state
        gates = input_gates + self.U(h)  # (B, 4H)
        if self.V is not None:
            assert z is not None, "an LSTHM with a hybrid input needs z"
            gates = gates + self.V(z)
        sigma = hard_sigmoid if self.gate == "hard_sigmoid" else torch.sigmoid
        f, i, o, proposal = gates.chunk(4, dim=-1)  # 4 x (B, H)
        c = sigma(f) * c + sigma(i) * torch.tanh(proposal)  # eq. 11
        h = sigma(o) * torch.tanh(c)  # eq. 12
        return h, c

    def extra_repr(self) -> str:
        return f"hidden={self.hidden_size}, gate={self.gate}"


class HybridFeedback(nn.Module):
    """Carries ``z_t`` from the fusion at step t to every LSTHM at t + 1.

    Holds the learned initial code ``z_0`` (zero-initialised, ``(1, Z)``) and applies the
    padding mask: on a padded step the code is not updated.
    """

    def __init__(self, width: int):
        super().__init__()
        self.initial = nn.Parameter(torch.zeros(1, width))

    def start(self, batch: int) -> torch.Tensor:
        return self.initial.expand(batch, -1)  # (B, Z)

    def forward(self, z_old: torch.Tensor, z_new: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return z_new if valid is None else torch.where(valid, z_new, z_old)


class LSTHMSystemConfig(BlockConfig):
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
        if isinstance(self.hidden, list):
            if len(self.hidden) != len(ports):
                raise SpecError(f"hidden lists {len(self.hidden)} widths for {len(ports)} inputs", field="hidden")
            return dict(zip(ports, self.hidden))
        if set(self.hidden) != set(ports):
            missing, extra = sorted(set(ports) - set(self.hidden)), sorted(set(self.hidden) - set(ports))
            raise SpecError(
                f"hidden must give one width per input ({', '.join(ports)})"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(extra)}" if extra else ""),
                field="hidden",
            )
        return {p: self.hidden[p] for p in ports}

    def fusion_config(self, ports: list[str]) -> BlockConfig:
        """The nested fusion config, wired to one input per modality port."""
        assert self.fusion is not None
        return wire_nested(self.fusion, {p: p for p in ports})


def _flat_width(spec: Spec) -> int | None:
    """Features per sample of a vector/sequence spec with fixed non-batch dims, else None."""
    dims = spec.shape[1:]
    return math.prod(dims) if spec.kind in ("vector", "sequence") and all(isinstance(d, int) for d in dims) else None


@register_block(LSTHMSystemConfig, family="fusion")
class LSTHMSystem(Block):
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

    main_port = "out"  # E of eq. 13; a bare reference to the block means it

    @classmethod
    def _split_ports(cls, inputs: dict[str, Spec]) -> tuple[list[str], list[str]]:
        """Sequence ports (one LSTHM each) and vector ports (extra inputs of the nested fusion)."""
        return [p for p, s in inputs.items() if s.kind != "vector"], [p for p, s in inputs.items() if s.kind == "vector"]

    @classmethod
    def aux_ports(cls, config: LSTHMSystemConfig) -> tuple[str, ...]:
        """The nested fusion's auxiliary losses (e.g. a ``moe`` fusion's balance), as ``fusion_<port>``."""
        if config.fusion is None:
            return ()
        return tuple(f"fusion_{p}" for p in get_block(config.fusion["type"]).impl.aux_ports(config.fusion_config(["_"])))

    @classmethod
    def infer(cls, config: LSTHMSystemConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=1)
        sequences, extras = cls._split_ports(inputs)
        if not sequences:
            raise SpecError("needs at least one sequence input (one LSTHM per modality)", field="in")
        if extras and config.fusion is None:
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
        widths = config.port_widths(sequences)
        fusion_specs = cls._fusion_specs(config, widths, first.batch, {p: inputs[p] for p in extras})
        z_width = int(fusion_specs["out"].features) if fusion_specs else 0
        outputs = {"out": vector(sum(widths.values()) + z_width, batch=first.batch)}
        aux = set(cls.aux_ports(config))
        for port, spec in fusion_specs.items():
            width = _flat_width(spec)
            if f"fusion_{port}" in aux:
                outputs[f"fusion_{port}"] = Spec("scalar", ())
            elif port != "out" and width is not None:
                outputs[port] = sequence(first.time, width, batch=first.batch)
        return outputs

    @classmethod
    def _fusion_specs(cls, config: LSTHMSystemConfig, widths: dict[str, int], batch, extras: dict[str, Spec] | None = None) -> dict[str, Spec]:
        if config.fusion is None:
            return {}
        entry = get_block(config.fusion["type"])
        states = {port: vector(w, batch=batch) for port, w in widths.items()}
        states.update(extras or {})
        try:
            specs = entry.impl.infer(config.fusion_config(list(states)), states)
        except SpecError as exc:
            message = f"fusion ({entry.name}) cannot fuse the LSTHM states {_describe(states)}: {exc.message}"
            raise SpecError(message, field="fusion") from None
        out = specs.get("out")
        if out is None or out.kind != "vector" or not isinstance(out.features, int):
            raise SpecError(
                f"fusion ({entry.name}) must turn the LSTHM states {_describe(states)} into one vector on port 'out', "
                f"it gives {', '.join(f'{p}: {s}' for p, s in specs.items())}",
                field="fusion",
            )
        return specs

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

    def __init__(self, config: LSTHMSystemConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports, self.fusion_inputs = self._split_ports(inputs)
        widths = config.port_widths(self.ports)
        self.widths = widths
        extras = {p: inputs[p] for p in self.fusion_inputs}
        fusion_specs = self._fusion_specs(config, widths, inputs[self.ports[0]].batch, extras)
        z_width = int(fusion_specs["out"].features) if fusion_specs else 0
        self.lsthm = nn.ModuleDict(
            {port: LSTHMCell(int(inputs[port].features), widths[port], z_width, config.gate) for port in self.ports}
        )
        if config.fusion is not None:
            states = {**{port: vector(w) for port, w in widths.items()}, **extras}
            self.fusion = get_block(config.fusion["type"]).impl(config.fusion_config(list(states)), states)
            self.feedback = HybridFeedback(z_width)
        else:
            self.fusion = None
            self.feedback = None
        self.aux = {port.removeprefix("fusion_"): port for port in self.aux_ports(config)}  # fusion port -> our port
        self.extra_ports = [p for p in self.out_specs if p != "out" and p not in self.aux.values()]

    def describe_inside(self) -> list:
        """Parts for ``composer render``: the LSTHMs, the fusion (with its own inside) and the feedback."""
        from composer.blocks._inside import InsidePart, _count as count, inside_of

        feeds = ("feedback",) if self.fusion is not None else ()
        parts = [
            InsidePart(f"lsthm.{p}", f"LSTHM {cell.W.in_features}→{cell.hidden_size}, {cell.gate} (eqs. 7-12)", count(cell), feeds)
            for p, cell in self.lsthm.items()
        ]
        if self.fusion is not None:
            stages = self.config.fusion.get("stages")
            label = f"{self.fusion.type_name}{f', {stages} stages' if stages else ''} → z_t"
            states = tuple(f"lsthm.{p}" for p in self.ports)
            parts.append(InsidePart("fusion", label, count(self.fusion), states, inside_of(self.fusion, 8)))
            parts.append(InsidePart("feedback", "z_t → every LSTHM at t+1", count(self.feedback), ("fusion",)))
        return parts

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context):
        first = inputs[self.ports[0]]  # (B, T, D_1)
        batch, steps = first.shape[:2]
        mask = ctx.mask(self.in_specs[self.ports[0]])  # (B, T) True = real step, or None
        h = {p: first.new_zeros(batch, w) for p, w in self.widths.items()}
        c = {p: first.new_zeros(batch, w) for p, w in self.widths.items()}
        z = self.feedback.start(batch) if self.feedback is not None else None
        extras: dict[str, list[torch.Tensor]] = {p: [] for p in self.extra_ports}
        aux: dict[str, list[torch.Tensor]] = {p: [] for p in self.aux.values()}
        constant = {p: inputs[p] for p in self.fusion_inputs}  # vector inputs, the same at every step
        input_gates = {p: cell.W(inputs[p]) for p, cell in self.lsthm.items()}  # W x for all steps: (B, T, 4H)
        for t in range(steps):
            valid = mask[:, t, None] if mask is not None else None  # (B, 1)
            for p, cell in self.lsthm.items():
                h_new, c_new = cell.step(input_gates[p][:, t], (h[p], c[p]), z)  # eqs. 7-12
                h[p] = h_new if valid is None else torch.where(valid, h_new, h[p])
                c[p] = c_new if valid is None else torch.where(valid, c_new, c[p])
            if self.fusion is None:
                continue
            result = self.fusion({**h, **constant}, ctx)  # z_{t+1} from {m: h^m_{t+1}} (+ the vector inputs)
            result = result if isinstance(result, dict) else {"out": result}
            z = self.feedback(z, result["out"], valid)
            for port in self.extra_ports:
                value = result[port].reshape(batch, -1)  # (B, ...) -> (B, width)
                extras[port].append(value if valid is None else value * valid)
            for inner, port in self.aux.items():
                aux[port].append(result[inner])
        final = torch.cat([h[p] for p in self.ports] + ([z] if z is not None else []), dim=-1)  # eq. 13
        if not self.extra_ports and not self.aux:
            return final
        out = {"out": final, **{p: torch.stack(v, dim=1) for p, v in extras.items()}}  # (B, T, width)
        out.update({p: torch.stack(v).mean() if v else final.new_zeros(()) for p, v in aux.items()})  # mean over steps
        return out


def _describe(states: dict[str, Spec]) -> str:
    return "{" + ", ".join(f"{p}: {s}" for p, s in states.items()) + "}"
