"""Sparsely-gated mixture of experts (Shazeer et al., ICLR 2017), as used by GLoMo (eqs. 5-7):
the ``moe`` module and its gating functions (config, shapes and equations: :mod:`composer.configs.moe`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.moe import MoEConfig
from composer.spec import Spec

__all__ = ["MixtureOfExperts", "cv_squared", "noisy_top_k_gating"]


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


class MixtureOfExperts(Block):
    """Noisy top-k gating over s expert MLPs with a balance loss (:class:`~composer.configs.moe.MoEConfig`)."""

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
