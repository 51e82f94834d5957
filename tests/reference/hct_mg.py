"""HCT-MG (hierarchical crossmodal transformer with modality gating, hct_mg.md §4) in plain PyTorch.

There is no public code; this follows the paper's equations, MulT's crossmodal transformer (the
paper: "the same as MulT", see :mod:`tests.reference.mult`) and the choices Composer documents
for what the paper leaves open (docs/hct_mg.md: gate scaling, tie rule, pooling, W1/W2 width,
depth of the eq. 5 self-attention, MulT's residual head).

For three modalities ``x_m (B, T_m, D_m)`` with padding masks:

* feature projection: ``Conv1d(D_m → d, kernel, bias)`` over the zero-padded sequence, then a
  GRU ``d → d`` whose state is held on padded steps (outputs there are zero);
* modality gating: one logit per modality, ``ω = softmax(logits)`` (the weights sum to 1); the
  primary ``P`` is ``argmax ω`` (ties: the preferred modality if it is among the largest, else
  the first of them; a frozen gate keeps its primary); ``A1, A2`` are the two others in port
  order. The weights scale the representations, ``ω_m`` (``gate_scale: weights``) or ``M·ω_m``
  (``relative``), on the encoded sequences (``gate_at: inputs``) or on the parts of Z (``outputs``);
  a fixed primary has no gate and no scaling;
* eqs. 1-2: ``Â1 = CMT(A2 → A1)``, ``Â2 = CMT(A1 → A2)``; eqs. 3-4: ``P̂_Â1 = CMT(Â1 → P)``,
  ``P̂_Â2 = CMT(Â2 → P)``; eq. 5: ``P̂ = SA([P̂_Â1; P̂_Â2])`` at width 2d; eq. 6:
  ``Z = [W1 Â1; W2 Â2; P̂]``, each part reduced over its own time axis (last valid step or mean
  of the valid steps), ``W1, W2`` bias-free ``d → a``;
* MulT's residual head on Z.

Padding: every source's mask is a key padding mask; pooling reads each sequence's own mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .mult import (
    ReferenceTransformer,
    ResidualHead,
    copy_weights,
    head_names,
    last_valid,
    transformer_names,
    transformer_settings,
    valid_mask,
)

__all__ = ["HCTMGReference", "reference_for"]

ROLES = ("cmt_a1", "cmt_a2", "cmt_p1", "cmt_p2")
# Epoch bookkeeping of Composer's gate for `freeze_after` (no effect on a forward pass).
GATE_BOOKKEEPING = ("last_primary", "stable_epochs")


class GRULayer(nn.Module):
    """One GRU layer written out (PyTorch's gate order r | z | n): ``(B, T, D), valid (B, T) -> (B, T, h)``.

    ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, ``z = σ(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h' = (1 - z) ⊙ n + z ⊙ h``; on a padded
    step the state is kept and the output is zero.
    """

    def __init__(self, width_in: int, hidden: int):
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden, width_in).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden, hidden).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden).uniform_(-bound, bound))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden).uniform_(-bound, bound))
        self.hidden = hidden

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        state = x.new_zeros(x.shape[0], self.hidden)
        inputs = F.linear(x, self.weight_ih, self.bias_ih)  # (B, T, 3h)
        outputs = []
        for t in range(x.shape[1]):
            i_r, i_z, i_n = inputs[:, t].chunk(3, dim=-1)
            h_r, h_z, h_n = F.linear(state, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            new = (1 - z) * torch.tanh(i_n + r * h_n) + z * state
            keep = valid[:, t, None]
            state = torch.where(keep, new, state)
            outputs.append(torch.where(keep, new, torch.zeros_like(new)))
        return torch.stack(outputs, dim=1)


class FeatureProjection(nn.Module):
    """§4 Feature Projection: ``Conv1d(D → d, kernel)`` (``same`` zero padding) then stacked GRUs."""

    def __init__(self, width_in: int, hidden: int, kernel: int, bias: bool, gru_layers: int):
        super().__init__()
        self.kernel = kernel
        self.conv_weight = nn.Parameter(torch.empty(hidden, width_in, kernel))
        nn.init.kaiming_uniform_(self.conv_weight, a=math.sqrt(5))
        self.conv_bias = nn.Parameter(torch.zeros(hidden)) if bias else None
        self.gru = nn.ModuleList(GRULayer(hidden, hidden) for _ in range(gru_layers))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        left = (self.kernel - 1) // 2
        x = (x * valid[..., None].to(x.dtype)).transpose(1, 2)  # (B, D, T), padded steps zero
        h = F.conv1d(F.pad(x, (left, self.kernel - 1 - left)), self.conv_weight, self.conv_bias).transpose(1, 2)
        for layer in self.gru:
            h = layer(h, valid)
        return h  # (B, T, d)


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(B, T, D) -> (B, D)``: mean over the valid steps."""
    w = valid[..., None].to(x.dtype)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)


class HCTMGReference(nn.Module):
    """HCT-MG on ``batch = {m: (B, T_m, D_m), <m>_lengths | <m>_mask}`` -> ``(B, outputs)``.

    ``inputs``: ``(port, modality)`` pairs in port order; ``encoders``: per port
    ``(D, kernel, bias, gru_layers)``; ``primary``: ``"gated"`` or a port; ``preferred``: the
    port that wins ties of the weights; the remaining arguments are the fusion's settings.
    """

    def __init__(self, inputs: list[tuple[str, str]], dim: int, encoders: dict[str, tuple], *, primary: str,
                 preferred: str, gate_at: str, gate_scale: str, heads: int, transformer: dict, sa_layers: int,
                 aux_width: int, pool: str, head: tuple[int, int, float]):
        super().__init__()
        self.ports = [port for port, _ in inputs]
        self.modality = dict(inputs)
        self.gated = primary == "gated"
        self.preferred = self.ports.index(preferred)
        self.gate_at, self.gate_scale, self.pool = gate_at, gate_scale, pool
        self.encoders = nn.ModuleDict(
            {port: FeatureProjection(width, dim, kernel, bias, layers) for port, (width, kernel, bias, layers) in encoders.items()}
        )
        if self.gated:
            self.gate_logits = nn.Parameter(torch.zeros(len(self.ports)))  # equal weights 1/M at the start
        self.register_buffer("frozen_primary", torch.tensor(-1 if self.gated else self.ports.index(primary)))
        for role in ROLES:  # eqs. 1-4
            self.add_module(role, ReferenceTransformer(dim, heads, **transformer))
        self.self_attention = ReferenceTransformer(2 * dim, heads, **{**transformer, "layers": sa_layers})  # eq. 5
        self.w1 = nn.Parameter(torch.empty(aux_width, dim))  # eq. 6
        self.w2 = nn.Parameter(torch.empty(aux_width, dim))
        for w in (self.w1, self.w2):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        hidden, outputs, dropout = head
        self.head = ResidualHead(2 * aux_width + 2 * dim, hidden, outputs, dropout)

    def gate(self) -> tuple[int, torch.Tensor | None]:
        """Index of the primary port and the scaling factors (None without a gate)."""
        frozen = int(self.frozen_primary) >= 0
        if not self.gated:
            return int(self.frozen_primary), None
        weights = (self.gate_logits.detach() if frozen else self.gate_logits).softmax(dim=0)  # ω, Σ ω = 1
        if frozen:
            primary = int(self.frozen_primary)
        else:
            values = weights.detach().tolist()
            largest = [i for i, w in enumerate(values) if w == max(values)]
            primary = self.preferred if self.preferred in largest else largest[0]
        factors = weights * len(self.ports) if self.gate_scale == "relative" else weights
        return primary, factors

    def reduce(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return last_valid(x, valid) if self.pool == "last" else masked_mean(x, valid)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        valid = [valid_mask(batch, self.modality[port]) for port in self.ports]
        xs = [self.encoders[port](batch[self.modality[port]], v) for port, v in zip(self.ports, valid)]  # (B, T_m, d)
        p, factors = self.gate()
        a1, a2 = (i for i in range(len(self.ports)) if i != p)
        if factors is not None and self.gate_at == "inputs":
            xs = [f * x for f, x in zip(factors, xs)]
        aux1 = self.cmt_a1(xs[a1], xs[a2], valid[a2])  # eq. 1: Â1 = CMT(A2 -> A1), (B, T_a1, d)
        aux2 = self.cmt_a2(xs[a2], xs[a1], valid[a1])  # eq. 2: Â2 = CMT(A1 -> A2), (B, T_a2, d)
        prim1 = self.cmt_p1(xs[p], aux1, valid[a1])  # eq. 3: P̂_Â1 = CMT(Â1 -> P), (B, T_p, d)
        prim2 = self.cmt_p2(xs[p], aux2, valid[a2])  # eq. 4: P̂_Â2 = CMT(Â2 -> P)
        prim = self.self_attention(torch.cat([prim1, prim2], dim=-1), None, valid[p])  # eq. 5, (B, T_p, 2d)
        parts = [
            self.reduce(aux1, valid[a1]) @ self.w1.T,  # (B, a)
            self.reduce(aux2, valid[a2]) @ self.w2.T,  # (B, a)
            self.reduce(prim, valid[p]),  # (B, 2d)
        ]
        if factors is not None and self.gate_at == "outputs":
            parts = [f * z for f, z in zip((factors[a1], factors[a2], factors[p]), parts)]
        return self.head(torch.cat(parts, dim=-1))  # eq. 6: Z (B, 2a + 2d) -> (B, outputs)


def reference_for(model) -> HCTMGReference:
    """An :class:`HCTMGReference` with the sizes and weights of a compiled Composer HCT-MG model
    (blocks ``fusion: hierarchical_crossmodal`` fed by three ``conv_gru`` encoders, ``head``)."""
    blocks = model.blueprint.blocks
    fusion = blocks["fusion"]
    names: dict[str, str] = {}
    inputs, encoders, widths = [], {}, set()
    for port, encoder_id in fusion.inputs.items():
        enc = blocks[encoder_id]
        assert enc.type == "conv_gru" and enc.padding == "same", f"{encoder_id}: {enc}"
        inputs.append((port, enc.inputs))
        encoders[port] = (model.blueprint.modalities[enc.inputs].features, enc.kernel, enc.bias, enc.gru_layers)
        widths.add(enc.hidden)
        names[f"{encoder_id}.conv.conv.weight"] = f"encoders.{port}.conv_weight"
        if enc.bias:
            names[f"{encoder_id}.conv.conv.bias"] = f"encoders.{port}.conv_bias"
        for k in range(enc.gru_layers):
            for tensor in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                names[f"{encoder_id}.gru.rnn.{tensor}_l{k}"] = f"encoders.{port}.gru.{k}.{tensor}"
    assert len(widths) == 1, f"the encoders need one width d, got {widths}"
    dim = widths.pop()
    ports = [port for port, _ in inputs]
    sa_layers = fusion.sa_layers or max(fusion.layers, 3)
    head = blocks["head"]
    assert head.residual and len(head.hidden) == 1 and head.activation == "relu", f"not MulT's head: {head}"
    reference = HCTMGReference(
        inputs,
        dim,
        encoders,
        primary=fusion.primary,
        preferred=ports[0] if fusion.tie_break == "first" else fusion.tie_break,
        gate_at=fusion.gate_at,
        gate_scale=fusion.gate_scale,
        heads=fusion.heads,
        transformer=transformer_settings(fusion),
        sa_layers=sa_layers,
        aux_width=fusion.aux_width or 2 * dim,
        pool=fusion.pool,
        head=(int(head.hidden[0]), head.out, head.dropout),
    )
    if fusion.primary == "gated":
        names["fusion.gate.logits"] = "gate_logits"
    names["fusion.gate.frozen_primary"] = "frozen_primary"
    for role in ROLES:
        names.update(transformer_names(f"fusion.{role}", role, fusion.layers))
    names.update(transformer_names("fusion.self_attention", "self_attention", sa_layers))
    names.update({"fusion.w1.weight": "w1", "fusion.w2.weight": "w2"})
    names.update(head_names("head", "head", head))
    return copy_weights(reference, model, names, not_copied=frozenset(f"fusion.gate.{b}" for b in GATE_BOOKKEEPING))
