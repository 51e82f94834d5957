"""System of Long Short-term Hybrid Memories (LSTHM) with recurrent cross-modal fusion, RMFN
eqs. 7-13 (config, shapes and equations: :mod:`composer.configs.lsthm`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.lsthm import Gate, LSTHMSystemConfig
from composer.registry import get_block
from composer.spec import Spec

__all__ = ["LSTHMCell", "HybridFeedback", "LSTHMSystem", "hard_sigmoid"]


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


class LSTHMSystem(Block):
    """LSTHMs with a recurrent fusion feedback, RMFN eqs. 7-13 (:class:`~composer.configs.lsthm.LSTHMSystemConfig`)."""

    def __init__(self, config: LSTHMSystemConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports, self.fusion_inputs = config.split_ports(inputs)
        widths = config.port_widths(self.ports)
        self.widths = widths
        extras = {p: inputs[p] for p in self.fusion_inputs}
        fusion_specs = config.fusion_specs(widths, inputs[self.ports[0]].batch, extras)
        z_width = int(fusion_specs["out"].features) if fusion_specs else 0
        self.lsthm = nn.ModuleDict(
            {port: LSTHMCell(int(inputs[port].features), widths[port], z_width, config.gate) for port in self.ports}
        )
        if config.fusion is not None:
            states = config.fusion_states(widths, extras=extras)
            fusion_config = config.fusion_config(list(states))
            self.fusion = get_block(fusion_config.type).impl(fusion_config, states)
            self.feedback = HybridFeedback(z_width)
        else:
            self.fusion = None
            self.feedback = None
        self.aux = {port.removeprefix("fusion_"): port for port in config.aux_ports()}  # fusion port -> our port
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

