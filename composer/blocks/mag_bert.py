"""BERT with a Multimodal Adaptation Gate inside (MAG-BERT, Rahman et al., ACL 2020; config,
equations and shapes: :mod:`composer.configs.mag_bert`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Context
from composer.blocks.text import TextEncoder
from composer.configs.mag_bert import MAGBertConfig
from composer.spec import Spec

__all__ = ["MultimodalAdaptationGate", "MAGBert"]

EPS = 1e-6  # ε of eq. 5 (the authors' and MMSA's value)


class MultimodalAdaptationGate(nn.Module):
    """``Z (B, T, H)`` and nonverbal ``X_m (B, T, D_m)`` -> ``Dropout(LayerNorm(Z + α H)) (B, T, H)``.

    ``g_m = ReLU(W_gm [X_m; Z] + b_gm)`` (eqs. 1-2), ``H = Σ_m g_m ⊙ (W_m X_m + b_m)`` (eq. 3),
    ``α = min(β ‖Z‖ / (‖H‖ + ε), 1)`` per step (eq. 5, ``‖H‖ = 0`` read as 1), then eq. 4, LayerNorm and dropout.
    """

    def __init__(self, hidden: int, widths: dict[str, int], beta_shift: float, dropout: float):
        super().__init__()
        self.gates = nn.ModuleDict({m: nn.Linear(d + hidden, hidden) for m, d in widths.items()})
        self.shifts = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in widths.items()})
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.beta_shift = beta_shift

    def forward(self, z: torch.Tensor, nonverbal: dict[str, torch.Tensor]) -> torch.Tensor:
        shift = None
        for m, x in nonverbal.items():  # x: (B, T, D_m)
            gate = F.relu(self.gates[m](torch.cat([x, z], dim=-1)))  # (B, T, H), eqs. 1-2
            term = gate * self.shifts[m](x)  # (B, T, H)
            shift = term if shift is None else shift + term  # eq. 3
        z_norm, h_norm = z.norm(2, dim=-1), shift.norm(2, dim=-1)  # (B, T)
        h_norm = torch.where(h_norm == 0, torch.ones_like(h_norm), h_norm)
        alpha = (z_norm / (h_norm + EPS) * self.beta_shift).clamp(max=1.0)  # (B, T), eq. 5
        return self.dropout(self.norm(alpha[..., None] * shift + z))  # eq. 4, then LayerNorm and dropout


class MAGBert(TextEncoder):
    """The ``bert`` block with the gate on the hidden state after layer ``injection_index``
    (:class:`~composer.configs.mag_bert.MAGBertConfig`).

    The gate runs as a forward hook on the BERT module whose output is that hidden state (the
    embeddings for 0, ``encoder.layer[k-1]`` for k), so the encoder is ``transformers``' own
    model, mask handling and all, and any BERT-family ``model:`` takes the gate.
    """

    def __init__(self, config: MAGBertConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        widths = config.gate_widths(inputs)
        self.gate = MultimodalAdaptationGate(self.bert.config.hidden_size, widths, config.beta_shift, config.gate_dropout)
        self._nonverbal: dict[str, torch.Tensor] | None = None
        k = config.injection_index
        site = self.bert.embeddings if k == 0 else self.bert.encoder.layer[k - 1]
        site.register_forward_hook(self._shift, prepend=True)  # before transformers' hidden-state capture

    def _shift(self, module: nn.Module, args, output):
        if self._nonverbal is None:
            raise RuntimeError("the MAG-BERT encoder's BERT was called outside MAGBert.forward (the gate has no nonverbal inputs)")
        if isinstance(output, tuple):  # transformers 4: a layer returns (hidden, ...)
            return (self.gate(output[0], self._nonverbal), *output[1:])
        return self.gate(output, self._nonverbal)

    def tracks_gradients(self) -> bool:
        return True  # the gate below a frozen BERT learns through its layers

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        self._nonverbal = {port: inputs[port] for port in self.gate.gates}
        try:
            return super().forward(inputs, ctx)
        finally:
            self._nonverbal = None
