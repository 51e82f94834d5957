"""EMT module: Efficient Multimodal Transformer (Sun et al., EMT-DLFR, §3.3, eqs. 4-9), the
three fusion strategies wired from :class:`~composer.blocks.mpu.PromotionUnit` and the candidate
pools (config, strategies, sharing and shapes: :mod:`composer.configs.fusion.emt`)."""

from __future__ import annotations

from itertools import combinations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.blocks.heads import ACTIVATIONS
from composer.blocks.mpu import PromotionUnit
from composer.configs.fusion.emt import GLOBAL_PORT, EMTConfig, split_ports
from composer.spec import Spec
from composer.layers.positional import sinusoidal_positions

__all__ = ["EMT", "CandidatePool"]


class CandidatePool(nn.Module):
    """Merge ``K`` candidates ``(B, K, N, d) -> (B, N, d)`` (eq. 9 and its ablations).

    ``flatten``: score each candidate as a whole (``N·d`` features, the global context);
    otherwise score each position separately (width ``d``).
    """

    def __init__(self, kind: str, dim: int, tokens: int | None, candidates: int, activation: str):
        super().__init__()
        self.kind = kind
        self.flatten = tokens is not None
        width = dim * (tokens or 1)
        if kind == "attention":
            self.score = nn.Sequential(nn.Linear(width, width), ACTIVATIONS[activation](), nn.Linear(width, 1))
        elif kind == "mlp":
            self.merge = nn.Linear(candidates * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, K, N, d = x.shape
        if self.kind == "avg":
            return x.mean(dim=1)
        flat = x.reshape(B, K, 1, N * d) if self.flatten else x  # (B, K, N', w)
        if self.kind == "attention":
            weights = torch.softmax(self.score(flat), dim=1)  # (B, K, N', 1), over the candidates
            out = (weights * flat).sum(dim=1)  # (B, N', w)
        else:
            out = self.merge(flat.permute(0, 2, 1, 3).reshape(B, flat.shape[2], -1))  # (B, N', K·w) -> (B, N', w)
        return out.reshape(B, N, d)


class EMT(Block):
    """Efficient Multimodal Transformer: global-local mutual promotion (:class:`~composer.configs.fusion.emt.EMTConfig`)."""

    def __init__(self, config: EMTConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        c = config
        self.seq_ports, self.vec_ports = split_ports(inputs)
        self.dim = int(inputs[self.seq_ports[0]].features)
        M = len(self.seq_ports)
        self.pairs = list(combinations(range(M), 2)) if c.strategy == "ooll" else []
        groups = len(self.pairs) if c.strategy == "ooll" else M

        # sub-MPU grid [layer][group][direction] -> index into self.units (real sharing: same object)
        keys: dict[tuple[int, int, int], int] = {}
        self.grid: list[list[list[int]]] = []
        for layer in range(c.layers):
            rows = []
            for group in range(groups):
                row = []
                for direction in range(2):
                    key = (0 if c.share_layers else layer, 0 if c.share_modalities else group, 0 if c.share_directions else direction)
                    row.append(keys.setdefault(key, len(keys)))
                rows.append(row)
            self.grid.append(rows)
        self.units = nn.ModuleList(
            PromotionUnit(
                self.dim, c.heads, expansion=c.ffn_expansion, ffn=c.ffn,
                attn_dropout=c.attn_dropout, ffn_dropout=c.ffn_dropout, qkv_bias=c.qkv_bias,
            )
            for _ in range(len(keys))
        )

        # pools [layer][target] (one target for oagl/oall, one per modality for ooll)
        if c.strategy == "oagl":
            pool_args = dict(tokens=len(self.vec_ports), candidates=M)
            targets = 1
        elif c.strategy == "oall":
            pool_args = dict(tokens=None, candidates=M)
            targets = 1
        else:
            pool_args = dict(tokens=None, candidates=M - 1)
            targets = M
        pool_keys: dict[tuple[int, int], int] = {}
        self.pool_grid = [
            [pool_keys.setdefault((0 if c.share_layers else layer, 0 if c.share_modalities else t), len(pool_keys)) for t in range(targets)]
            for layer in range(c.layers)
        ]
        self.pools = nn.ModuleList(
            CandidatePool(c.pooling, self.dim, activation=c.pool_activation, **pool_args) for _ in range(len(pool_keys))
        )
        self.embed_dropout = nn.Dropout(c.embed_dropout)

    # -- helpers ---------------------------------------------------------------------
    def unit(self, layer: int, group: int, direction: int) -> PromotionUnit:
        """The sub-MPU used at a layer, modality (or pair) and direction (0: towards the local sequence)."""
        return self.units[self.grid[layer][group][direction]]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        valid = [ctx.mask(self.in_specs[p]) for p in self.seq_ports]  # (B, T_m) True = real, or None
        pads = [None if v is None else ~v for v in valid]
        local = []
        for p in self.seq_ports:
            x = inputs[p]  # (B, T_m, d)
            if self.config.positions:
                x = x + sinusoidal_positions(x.shape[1], self.dim, offset=0, device=x.device, dtype=x.dtype)
            local.append(self.embed_dropout(x))
        strategy = self.config.strategy
        if strategy == "oagl":
            context = torch.stack([inputs[p] for p in self.vec_ports], dim=1)  # (B, K, d)
            local, context = self._oagl(local, pads, context)
            global_out = context.flatten(1)  # (B, K, d) -> (B, K·d)
        else:
            local = self._oall(local, pads) if strategy == "oall" else self._ooll(local, pads)
            global_out = torch.cat([self._masked_mean(x, v) for x, v in zip(local, valid)], dim=-1)  # (B, M·d)
        out = {GLOBAL_PORT: global_out}
        for p, x, v in zip(self.seq_ports, local, valid):
            out[p] = x if v is None else x.masked_fill(~v[..., None], 0.0)
        return out

    @staticmethod
    def _masked_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        if valid is None:
            return x.mean(dim=1)
        w = valid[..., None].to(x.dtype)  # (B, T, 1)
        return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)

    def _oagl(self, local, pads, context):
        """Eq. 8 + eq. 9: local ↔ global context, parallel updates, attention pooling of G."""
        for layer in range(self.config.layers):
            promoted, candidates = [], []
            for m, (h, pad) in enumerate(zip(local, pads)):
                promoted.append(self.unit(layer, m, 0)(h, context, pad, None))  # H_m ← MPU_{g→m}(H_m, G)
                source = promoted[-1] if self.config.update == "serial" else h  # serial: the promoted H_m (Fig. 7)
                candidates.append(self.unit(layer, m, 1)(context, source, None, pad))  # G_m = MPU_{m→g}(G, H_m)
            local = promoted
            context = self.pools[self.pool_grid[layer][0]](torch.stack(candidates, dim=1))  # (B, M, K, d) -> (B, K, d)
        return local, context

    def _oall(self, local, pads):
        """Eq. 7: local ↔ common message C = concat_time(H_1..H_M), position-wise pooling of C."""
        message = torch.cat(local, dim=1)  # (B, ΣT_m, d)
        if all(p is None for p in pads):
            message_pad = None
        else:
            message_pad = torch.cat(
                [p if p is not None else torch.zeros(h.shape[:2], dtype=torch.bool, device=h.device) for h, p in zip(local, pads)],
                dim=1,
            )  # (B, ΣT_m)
        for layer in range(self.config.layers):
            promoted, candidates = [], []
            for m, (h, pad) in enumerate(zip(local, pads)):
                promoted.append(self.unit(layer, m, 0)(h, message, pad, message_pad))
                source = promoted[-1] if self.config.update == "serial" else h  # serial: the promoted H_m (Fig. 7)
                candidates.append(self.unit(layer, m, 1)(message, source, message_pad, pad))
            local = promoted
            message = self.pools[self.pool_grid[layer][0]](torch.stack(candidates, dim=1))  # (B, M, ΣT, d) -> (B, ΣT, d)
        return local

    def _ooll(self, local, pads):
        """Eq. 6: one MPU per pair (m, n); each H_m pools the sequences promoted towards it."""
        for layer in range(self.config.layers):
            incoming: list[list[torch.Tensor]] = [[] for _ in local]
            for g, (m, n) in enumerate(self.pairs):
                incoming[m].append(self.unit(layer, g, 0)(local[m], local[n], pads[m], pads[n]))  # H_{n→m}
                incoming[n].append(self.unit(layer, g, 1)(local[n], local[m], pads[n], pads[m]))  # H_{m→n}
            local = [
                self.pools[self.pool_grid[layer][m]](torch.stack(cands, dim=1))  # (B, M-1, T_m, d) -> (B, T_m, d)
                for m, cands in enumerate(incoming)
            ]
        return local
