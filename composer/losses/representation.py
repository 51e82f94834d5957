"""Representation loss modules: CMD, orthogonality, InfoNCE/NT-Xent, KL, JS, cosine, and MMIM's
CPC and Gaussian BA bounds (configs, sources and equations: :mod:`composer.configs.losses.representation`).

The functions take plain tensors, so they can be compared with their sources term by term;
the modules read the referenced values and hand them over.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Context
from composer.configs.losses.representation import CPCConfig, GaussianBAConfig, GaussianEntropyConfig
from composer.losses._base import Loss
from composer.spec import Spec

__all__ = [
    "central_moment_discrepancy",
    "orthogonality",
    "info_nce",
    "nt_xent",
    "log_distribution",
    "kl_divergence",
    "js_divergence",
    "CMDLoss",
    "OrthogonalityLoss",
    "InfoNCELoss",
    "KLLoss",
    "JSLoss",
    "CosineLoss",
    "CPCLoss",
    "GaussianBALoss",
    "GaussianEntropyLoss",
    "gaussian_entropy",
]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


# -- functions ---------------------------------------------------------------------------------


def central_moment_discrepancy(
    a: torch.Tensor, b: torch.Tensor, moments: int = 5, interval: float = 1.0, norm_eps: float = 0.0
) -> torch.Tensor:
    """CMD_K between ``a (B, D)`` and ``b (B', D)``: ``Σ_k interval^-k ‖m_k(a) - m_k(b)‖₂``.

    ``m_1`` is the mean over the batch, ``m_k`` (k ≥ 2) the k-th central moment per feature
    (Zellinger et al. 2017, Def. 1). The norm is ``torch.linalg.vector_norm``, whose gradient
    is 0, not NaN, where the two moments agree; ``norm_eps > 0`` takes ``sqrt(Σ gap² + norm_eps)``
    instead (MMSA's TFR-Net ``CMD.matchnorm``: 1e-12), ``√norm_eps`` per moment where they agree."""

    def norm(gap: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(gap) if norm_eps == 0 else torch.sqrt(gap.pow(2).sum() + norm_eps)

    mean_a, mean_b = a.mean(dim=0), b.mean(dim=0)  # (D,)
    centred_a, centred_b = a - mean_a, b - mean_b  # (B, D)
    total = norm(mean_a - mean_b) / interval
    for k in range(2, moments + 1):
        gap = centred_a.pow(k).mean(dim=0) - centred_b.pow(k).mean(dim=0)  # (D,)
        total = total + norm(gap) / interval**k
    return total


def orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MISA's difference loss between ``a (B, D_a)`` and ``b (B, D_b)``: ``mean((Ãᵀ B̃)²)``.

    Each code is centred over the batch and each row divided by its (detached) L2 norm plus
    1e-6, as MMSA 2.2.1's ``DiffLoss``; the mean runs over the ``D_a × D_b`` entries."""

    def unit_rows(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        x = x - x.mean(dim=0, keepdim=True)
        return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True).detach() + 1e-6)

    return (unit_rows(a).t() @ unit_rows(b)).pow(2).mean()


def _similarities(a: torch.Tensor, b: torch.Tensor, similarity: str) -> torch.Tensor:
    """``(B, D), (B', D) -> (B, B')``: cosine (unit rows) or dot products."""
    if similarity == "cosine":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return a @ b.t()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, similarity: str = "cosine", symmetric: bool = True) -> torch.Tensor:
    """InfoNCE per sample ``(B,)`` (Oord et al. 2018, eq. 4): ``-log softmax_j(s_ij / τ)[i]``,
    averaged with the ``b → a`` direction when ``symmetric``."""
    logits = _similarities(a, b, similarity) / temperature  # (B, B)
    targets = torch.arange(a.shape[0], device=a.device)
    forward = F.cross_entropy(logits, targets, reduction="none")
    if not symmetric:
        return forward
    return 0.5 * (forward + F.cross_entropy(logits.t(), targets, reduction="none"))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float, similarity: str = "cosine") -> torch.Tensor:
    """SimCLR's NT-Xent per sample ``(B,)`` (Chen et al. 2020, eq. 1): each of the 2B codes is an
    anchor whose positive is its pair and whose negatives are the other 2B - 2 codes; a
    sample's value is the mean of its two anchors' losses (so the batch mean is eq. 1's L)."""
    n = a.shape[0]
    codes = torch.cat([a, b], dim=0)  # (2B, D)
    logits = _similarities(codes, codes, similarity) / temperature  # (2B, 2B)
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))  # 1[k ≠ i] of eq. 1
    index = torch.arange(n, device=a.device)
    targets = torch.cat([index + n, index])
    per_anchor = F.cross_entropy(logits, targets, reduction="none")  # (2B,)
    return 0.5 * (per_anchor[:n] + per_anchor[n:])


def log_distribution(x: torch.Tensor, inputs_are: str, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities over the last axis from logits (at temperature T), probabilities or log-probabilities."""
    if inputs_are == "logits":
        return F.log_softmax(x / temperature, dim=-1)
    if inputs_are == "probabilities":
        return x.clamp_min(1e-12).log()
    return x


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(P ‖ Q)`` per row: ``Σ_c p_c (log p_c - log q_c)`` with ``0 log 0 = 0``; ``(B, C) -> (B,)``."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(dim=-1)


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``½ KL(P ‖ M) + ½ KL(Q ‖ M)`` with ``M = (P + Q)/2``, per row; ``(B, C) -> (B,)``."""
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0, dtype=log_p.dtype, device=log_p.device))
    return 0.5 * (kl_divergence(log_p, log_m) + kl_divergence(log_q, log_m))


# -- modules -----------------------------------------------------------------------------------


class CMDLoss(Loss):
    """Central moment discrepancy (:class:`~composer.configs.losses.representation.CMDConfig`)."""

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        return central_moment_discrepancy(values["a"], values["b"], self.config.moments, self.config.interval)


class OrthogonalityLoss(Loss):
    """MISA's difference loss (:class:`~composer.configs.losses.representation.OrthogonalityConfig`)."""

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        return orthogonality(values["a"], values["b"])


class InfoNCELoss(Loss):
    """InfoNCE / NT-Xent (:class:`~composer.configs.losses.representation.InfoNCEConfig`)."""

    def per_sample(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        c = self.config
        if c.variant == "nt_xent":
            return nt_xent(values["a"], values["b"], c.temperature, c.similarity)
        return info_nce(values["a"], values["b"], c.temperature, c.similarity, c.symmetric)


class _DistributionLoss(Loss):
    def log_distributions(self, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log P_input, log P_target)``, each ``(B, C)``; the target detached when configured."""
        c = self.config
        target = values["target"].detach() if c.detach_target else values["target"]
        return log_distribution(values["input"], c.inputs_are, c.temperature), log_distribution(target, c.inputs_are, c.temperature)


class KLLoss(_DistributionLoss):
    """``T² KL(P_target ‖ P_input)`` per sample (:class:`~composer.configs.losses.representation.KLConfig`)."""

    def per_sample(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        log_input, log_target = self.log_distributions(values)
        return self.config.temperature**2 * kl_divergence(log_target, log_input)


class JSLoss(_DistributionLoss):
    """``T² JS(P_input, P_target)`` per sample (:class:`~composer.configs.losses.representation.JSConfig`)."""

    def per_sample(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        log_input, log_target = self.log_distributions(values)
        return self.config.temperature**2 * js_divergence(log_input, log_target)


class CosineLoss(Loss):
    """``1 - cos(a, b)`` per sample (:class:`~composer.configs.losses.representation.CosineConfig`)."""

    def per_sample(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        b = values["b"].detach() if self.config.detach_b else values["b"]
        return 1.0 - F.cosine_similarity(values["a"], b, dim=-1)


class CPCLoss(Loss):
    """MMIM's CPC bound, per sample (:class:`~composer.configs.losses.representation.CPCConfig`)."""

    def __init__(self, config: CPCConfig, specs: dict[str, Spec]):
        super().__init__(config, specs)
        d_x, d_z = int(specs["x"].features), int(specs["context"].features)
        if config.layers == 1:
            self.net: nn.Module = nn.Linear(d_z, d_x)
        else:  # MMSA's layout: Linear(D_z → D_x), act, then Linear(D_x → D_x) without activations
            layers: list[nn.Module] = [nn.Linear(d_z, d_x), _ACTIVATIONS[config.activation]()]
            layers += [nn.Linear(d_x, d_x) for _ in range(config.layers - 1)]
            self.net = nn.Sequential(*layers)

    def per_sample(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        predicted = self.net(values["context"])  # (B, D_x)
        predicted = predicted / torch.linalg.vector_norm(predicted, dim=1, keepdim=True)
        x = values["x"] / torch.linalg.vector_norm(values["x"], dim=1, keepdim=True)
        positive = (x * predicted).sum(dim=-1)  # (B,)
        negative = torch.logsumexp(x @ predicted.t(), dim=-1)  # (B,)
        return negative - positive


class GaussianBALoss(Loss):
    """MMIM's Gaussian BA likelihood, negated, per sample (:class:`~composer.configs.losses.representation.GaussianBAConfig`)."""

    def __init__(self, config: GaussianBAConfig, specs: dict[str, Spec]):
        super().__init__(config, specs)
        d_x, d_y = int(specs["x"].features), int(specs["y"].features)
        act = _ACTIVATIONS[config.activation]
        self.mlp_mu = nn.Sequential(nn.Linear(d_x, d_y), act(), nn.Linear(d_y, d_y))
        self.mlp_logvar = nn.Sequential(nn.Linear(d_x, d_y), act(), nn.Linear(d_y, d_y))

    def per_sample(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        x, y = values["x"], values["y"]
        mu, logvar = self.mlp_mu(x), self.mlp_logvar(x)  # (B, D_y) each
        return ((mu - y).pow(2) / 2.0 / logvar.exp()).sum(dim=-1)


def _covariance(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ = Σ_i w_i (z_i - μ)(z_i - μ)ᵀ / Σ_i w_i`` with ``μ`` the weighted mean: the covariance
    (divided by n) of the rows with weight 1, without indexing by a mask (no read back)."""
    weight = weight.to(z.dtype)
    total = weight.sum()
    centred = z - (weight @ z) / total  # (N, k)
    return (centred * weight[:, None]).t() @ centred / total  # (k, k)


def _log_det_or_zero(z: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``log det Σ`` of the chosen codes, or 0 when there are at most ``k`` of them (``Σ`` is then
    singular: MMSA's ``-inf``, after which its run diverges). Decided on the device, with the
    identity in the singular one's place so the unused branch gives no NaN gradient."""
    k = z.shape[1]
    enough = chosen.sum() > k
    covariance = _covariance(z, chosen)
    safe = torch.where(enough, covariance, torch.eye(k, dtype=z.dtype, device=z.device))
    return torch.where(enough, torch.logdet(safe), torch.zeros((), dtype=z.dtype, device=z.device))


def gaussian_entropy(z: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``¼ (log det Σ_pos + log det Σ_neg)`` of the codes ``z (N, k)`` split by two masks (MMIM's
    ``H``); a class with at most ``k`` codes adds 0."""
    return 0.25 * (_log_det_or_zero(z, positive) + _log_det_or_zero(z, negative))


class GaussianEntropyLoss(Loss):
    """MMIM's entropy estimate with a memory, negated (:class:`~composer.configs.losses.representation.GaussianEntropyConfig`).

    The memory holds the detached codes and masks of the last ``memory`` training batches of the
    epoch; it is not saved (it is emptied at every epoch's end, where checkpoints are written)."""

    def __init__(self, config: GaussianEntropyConfig, specs: dict[str, Spec]):
        super().__init__(config, specs)
        d = int(specs["y"].features)
        self.projection = nn.Sequential(nn.Linear(d, d // 4), nn.Tanh())
        self._memory: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._step = 0

    def forward(self, values: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        if not self.training:
            return values["y"].new_zeros(())
        z = self.projection(values["y"])  # (B, D/4)
        label = values["label"].reshape(-1)
        positive, negative = label > 0, label < 0
        step, self._step = self._step, self._step + 1
        value = z.new_zeros(())
        if step > self.config.memory:  # MMSA: the memory is full from batch mem_size; -beta*H is added after it
            past = list(zip(*self._memory))
            value = -gaussian_entropy(torch.cat([*past[0], z]), torch.cat([*past[1], positive]), torch.cat([*past[2], negative]))
        entry = (z.detach(), positive, negative)
        if len(self._memory) < self.config.memory:
            self._memory.append(entry)
        else:  # the oldest replaced by the newest
            self._memory[step % self.config.memory] = entry
        return value

    def composer_epoch_end(self, epoch: int) -> None:
        """MMSA's trainer starts every epoch with an empty memory."""
        self._memory, self._step = [], 0
        return None
