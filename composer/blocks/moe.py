"""Sparsely-gated mixture of experts (Shazeer et al., ICLR 2017), as used by GLoMo (eqs. 5-7).

Block ``moe``: ``vector (B, D) -> out (B, d), gates (B, s), balance ()``.

* Gating (GLoMo eq. 5, Shazeer eqs. 3-5): ``G(x) = Softmax(KeepTopK(H(x), k))`` with
  ``H(x) = x W_g + N(0, 1) · softplus(x W_noise) + ε`` while training (``noisy``) and
  ``x W_g`` otherwise; ``W_g`` and ``W_noise`` are ``(D, s)``, zero-initialised, no bias.
* Experts: ``E_i = Linear(D → h) → ReLU → Linear(h → d)`` (``h = hidden``, default ``d``).
* Combination (GLoMo eq. 6): ``y = Σ_i G(x)_i E_i(x)`` (``combine: weighted_sum``, the
  paper). The GLoMo authors' code combines in log space, ``y = log Σ_i G(x)_i exp(E_i(x))``
  (``combine: log_sum_exp``); it is offered as an explicit option.
* Balance loss (GLoMo eq. 7, Shazeer eqs. 6-10): ``ω (CV(Importance)² + CV(Load)²)`` with
  ``Importance = Σ_batch G(x)`` and ``Load`` the expected number of samples per expert,
  ``Σ_batch Φ((x W_g - threshold) / noise_std)`` while training with noise (a smooth
  estimate), the count of samples routed to each expert otherwise. ``CV² = var / mean²``
  (unbiased variance, as in the reference code; 0 for a single expert). The loss is the
  auxiliary port ``balance``, added to the total loss by the model.

Parameters: ``2·D·s`` (gates) ``+ s·(D·h + h + h·d + d)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind, expect_ports
from composer.registry import register_block
from composer.spec import Spec, scalar, vector

__all__ = ["MoEConfig", "MixtureOfExperts", "cv_squared", "noisy_top_k_gating"]


class MoEConfig(BlockConfig):
    type: Literal["moe"] = "moe"
    out: int = Field(ge=1, description="Output width d of every expert.")
    experts: int = Field(default=3, ge=1, description="Number of experts s.")
    top_k: int = Field(default=2, ge=1, description="Experts used per sample k (at most `experts`).")
    hidden: int | None = Field(default=None, ge=1, description="Hidden width of each expert (default: `out`).")
    noisy: bool = Field(default=True, description="Add trainable Gaussian noise to the gate logits while training.")
    noise_epsilon: float = Field(default=0.01, ge=0.0, description="Floor added to the noise standard deviation.")
    balance_weight: float = Field(default=0.01, ge=0.0, description="ω of the balance loss (GLoMo eq. 7).")
    combine: Literal["weighted_sum", "log_sum_exp"] = Field(
        default="weighted_sum",
        description="weighted_sum: Σ g·E (the paper, eq. 6); log_sum_exp: log Σ g·exp(E) (the GLoMo authors' code).",
    )


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``var(x) / mean(x)²`` of a 1-D tensor (0 for one entry)."""
    if x.shape[0] == 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + 1e-10)


def _prob_in_top_k(clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor, top_values: torch.Tensor, k: int) -> torch.Tensor:
    """``P(expert i is in the top k)`` under fresh noise, per sample and expert ``(B, s)``.

    Shazeer eq. 9: for an expert inside the noisy top k, the threshold to beat is the
    (k+1)-th largest noisy logit; for one outside, the k-th.
    """
    threshold_if_in = top_values[:, k : k + 1]  # (B, 1): (k+1)-th value
    threshold_if_out = top_values[:, k - 1 : k]  # (B, 1): k-th value
    is_in = noisy > threshold_if_in
    # validate_args=False: the argument checks would read tensors back to the host every step
    normal = torch.distributions.Normal(torch.zeros((), device=clean.device), torch.ones((), device=clean.device), validate_args=False)
    prob_if_in = normal.cdf((clean - threshold_if_in) / noise_std)
    prob_if_out = normal.cdf((clean - threshold_if_out) / noise_std)
    return torch.where(is_in, prob_if_in, prob_if_out)


def noisy_top_k_gating(
    x: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor | None, k: int, noise_epsilon: float, training: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gates ``(B, s)`` (k non-zeros per row, summing to 1) and the load per expert ``(s,)``."""
    clean = x @ w_gate  # (B, s)
    experts = clean.shape[1]
    use_noise = training and w_noise is not None
    if use_noise:
        noise_std = F.softplus(x @ w_noise) + noise_epsilon  # (B, s)
        logits = clean + torch.randn_like(clean) * noise_std
    else:
        logits = clean
    top_values, top_indices = logits.topk(min(k + 1, experts), dim=1)  # (B, k+1)
    top_k_gates = top_values[:, :k].softmax(dim=1)  # (B, k)
    gates = torch.zeros_like(logits).scatter(1, top_indices[:, :k], top_k_gates)  # (B, s)
    if use_noise and k < experts:
        load = _prob_in_top_k(clean, logits, noise_std, top_values, k).sum(dim=0)
    else:
        load = (gates > 0).sum(dim=0).to(x.dtype)
    return gates, load


@register_block(MoEConfig, family="other")
class MixtureOfExperts(Block):
    """Noisy top-k mixture of experts: ``vector (B, D) -> out (B, d), gates (B, s), balance ()``.

    GLoMo eqs. 5-7 on Shazeer et al.'s sparsely-gated layer: zero-initialised gate and
    noise weights ``(D, s)``; s experts ``Linear(D→h) → ReLU → Linear(h→d)``; output
    ``Σ_i g_i E_i(x)`` (paper) or ``log Σ_i g_i exp(E_i(x))`` (``combine: log_sum_exp``, the
    authors' code); ``balance = ω (CV²(importance) + CV²(load))`` is an auxiliary loss.
    Every expert runs on every sample (s is small) and unselected ones get gate 0, so only
    the k selected experts of a sample receive gradient from it.
    Parameters: ``2·D·s + s·(D·h + h + h·d + d)``.
    """

    main_port = "out"  # a bare reference to the block means this output

    aux_loss_ports = ("balance",)

    @classmethod
    def infer(cls, config: MoEConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "vector")
        if config.top_k > config.experts:
            raise SpecError(f"top_k={config.top_k} exceeds the number of experts ({config.experts})", field="top_k")
        return {"out": vector(config.out), "gates": vector(config.experts), "balance": scalar()}

    @classmethod
    def examples(cls):
        return [
            ({"out": 4, "experts": 3, "top_k": 2}, {"in": vector(6)}),
            ({"out": 3, "experts": 4, "top_k": 1, "hidden": 5, "combine": "log_sum_exp"}, {"in": vector(6)}),
            ({"out": 2, "experts": 2, "top_k": 2, "noisy": False}, {"in": vector(3)}),
        ]

    def __init__(self, config: MoEConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (spec,) = inputs.values()
        width = int(spec.features)
        hidden = config.hidden or config.out
        self.w_gate = nn.Parameter(torch.zeros(width, config.experts))
        self.w_noise = nn.Parameter(torch.zeros(width, config.experts)) if config.noisy else None
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, config.out)) for _ in range(config.experts)
        )

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()  # (B, D)
        c = self.config
        gates, load = noisy_top_k_gating(x, self.w_gate, self.w_noise, c.top_k, c.noise_epsilon, self.training)
        importance = gates.sum(dim=0)  # (s,)
        balance = c.balance_weight * (cv_squared(importance) + cv_squared(load))
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, s, d)
        if c.combine == "weighted_sum":
            out = torch.einsum("bs,bsd->bd", gates, expert_out)  # eq. 6
        else:
            selected = gates > 0
            log_gates = torch.where(selected, gates.clamp_min(torch.finfo(gates.dtype).tiny).log(), float("-inf"))
            out = torch.logsumexp(expert_out + log_gates[..., None], dim=1)  # log Σ g·exp(E)
        return {"out": out, "gates": gates, "balance": balance}  # balance stays float32 (computed in float)
