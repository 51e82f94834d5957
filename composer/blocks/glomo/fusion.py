"""GLoMo global-guided fusion module (§3.5, eqs. 8-13), its Table 4 ablations and the ATTN pooling
block (configs, shapes and equations: :mod:`composer.configs.glomo.fusion`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.glomo.fusion import AttentionPoolConfig, GLoMoFusionConfig, parse_ports
from composer.spec import Spec

__all__ = ["GLoMoFusion", "AttentionPool", "ModalityAttention"]


class ModalityAttention(nn.Module):
    """GLoMo's ATTN (eq. 10): ``(B, M, d) -> weights (B, M), fused (B, d)``.

    ``w = softmax(Linear(d → M)(ReLU(Dropout(Linear(M·d → d)(flatten(x))))) / √d)``,
    ``fused = Σ_m w_m x_m``.
    """

    def __init__(self, count: int, dim: int, dropout: float):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(count * dim, dim), nn.Dropout(dropout), nn.ReLU(), nn.Linear(dim, count))
        self.scale = dim ** -0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = (self.score(x.flatten(1)) * self.scale).softmax(dim=-1)  # (B, M·d) -> (B, M)
        return weights, torch.einsum("bm,bmd->bd", weights, x)


def _mlp(width_in: int, width_out: int, activation: bool = True) -> nn.Sequential:
    """GLoMo's fusion MLP: ``Linear -> ReLU`` (or the authors' bare ``Linear``; same parameters)."""
    return nn.Sequential(nn.Linear(width_in, width_out), nn.ReLU() if activation else nn.Identity())


class GLoMoFusion(Block):
    """GLoMo global-guided fusion, eqs. 8-13, and its ablations (:class:`~composer.configs.glomo.fusion.GLoMoFusionConfig`)."""

    def __init__(self, config: GLoMoFusionConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        modalities, kinds = parse_ports(inputs)
        self.modalities, self.kinds = modalities, kinds
        self.order = [f"{k}_{m}" for k in kinds for m in modalities]  # [g_1..g_M, l_1..l_M]
        dim = int(next(iter(inputs.values())).features)
        M, K = len(modalities), len(kinds)
        self.encoder = None
        if config.layers:
            layer = nn.TransformerEncoderLayer(dim, config.heads, config.ff_dim, config.dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        if config.strategy == "global_guided":
            act = config.mlp_activation
            self.modality_mlps = nn.ModuleList(_mlp(K * dim, dim, act) for _ in modalities)  # eq. 9
            self.attention = nn.ModuleDict({k: ModalityAttention(M, dim, config.attn_dropout) for k in kinds})  # eq. 10
            self.pair_mlp = _mlp(K * dim, dim, act)  # eq. 11
            if config.mixup == "attention":
                self.mix = ModalityAttention(M, dim, config.attn_dropout)
            elif config.mixup == "mlp":
                self.mix = _mlp(M * dim, dim)
            self.predict = nn.Linear(2 * dim, config.out)  # eq. 13
        elif config.strategy == "concat":
            self.merge = _mlp(K * M * dim, dim)
            self.predict = nn.Linear(dim, config.out)
        else:
            if config.strategy == "attention":
                self.merge = ModalityAttention(K * M, dim, config.attn_dropout)
            self.predict = nn.Linear(dim, config.out)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        tokens = torch.stack([inputs[p] for p in self.order], dim=1)  # (B, K·M, d)
        if self.encoder is not None:
            tokens = self.encoder(tokens)  # eq. 8
        strategy = self.config.strategy
        if strategy == "sum":
            return {"out": self.predict(tokens.sum(dim=1))}
        if strategy == "product":
            return {"out": self.predict(tokens.prod(dim=1))}
        if strategy == "concat":
            return {"out": self.predict(self.merge(tokens.flatten(1)))}  # (B, K·M·d) -> (B, d) -> (B, out)
        if strategy == "attention":
            return {"out": self.predict(self.merge(tokens)[1])}
        return self._global_guided(tokens)

    def _global_guided(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        M = len(self.modalities)
        by_kind = dict(zip(self.kinds, tokens.split(M, dim=1)))  # kind -> (B, M, d)
        per_modality = torch.cat(list(by_kind.values()), dim=-1)  # (B, M, K·d): [Z_m^g; Z_m^l]
        z_m = torch.stack([mlp(per_modality[:, i]) for i, mlp in enumerate(self.modality_mlps)], dim=1)  # (B, M, d), eq. 9
        weights, pooled = {}, []
        for kind in self.kinds:
            weights[kind], fused = self.attention[kind](by_kind[kind])  # eq. 10
            pooled.append(fused)
        z_1 = self.pair_mlp(torch.cat(pooled, dim=-1))  # eq. 11
        mixup = self.config.mixup
        out = {}
        if mixup in ("global", "local"):
            w = weights[mixup]
            z_2 = torch.einsum("bm,bmd->bd", w, z_m)  # eq. 12 (MIXUP)
            out["weights"] = w
        elif mixup == "attention":
            z_2 = self.mix(z_m)[1]
        else:
            z_2 = self.mix(z_m.flatten(1))
        out["out"] = self.predict(torch.cat([z_1, z_2], dim=-1))  # eq. 13
        return out


class AttentionPool(Block):
    """GLoMo's ATTN (eq. 10) as a block (:class:`~composer.configs.glomo.fusion.AttentionPoolConfig`)."""

    def __init__(self, config: AttentionPoolConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.attention = ModalityAttention(len(inputs), int(next(iter(inputs.values())).features), config.dropout)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        weights, fused = self.attention(torch.stack(list(inputs.values()), dim=1))  # M × (B, d) -> (B, M, d)
        return {"out": fused, "weights": weights}
