"""EMT: Efficient Multimodal Transformer (Sun et al., EMT-DLFR, §3.3, eqs. 4-9).

Block ``emt``. Inputs (a mapping): every ``sequence (B, T_m, d)`` port is a modality's local
feature sequence ``H_m`` (in declaration order); every ``vector (B, d)`` port is one token of
the global multimodal context ``G⁰ = [h_l; h_a; h_v]`` (in declaration order; read by
``oagl`` only). All inputs share one width ``d``. Outputs:

* ``global``: ``vector (B, K·d)`` — the final global context ``G^[L]`` flattened over its
  ``K`` tokens (``g`` of §3.4, ready for ``concat`` with the utterance vectors). For the
  local-local strategies, which have no global context, it is the masked time-mean of each
  final local sequence, concatenated (``(B, M·d)``; Composer's choice, the paper is silent);
* one port per local sequence, named like its input port: the promoted ``H_m^[L]``
  ``(B, T_m, d)`` on the input's time symbol (padded steps zeroed), e.g. for LLFR (eq. 11).

Strategies (§3.3.3), each layer ``i`` built from :class:`~composer.blocks.mpu.PromotionUnit`
(directional MPU, eq. 5):

* ``oagl`` (eq. 8, EMT's default): for each modality ``m``:
  ``H_m ← MPU_{g→m}(H_m, G)`` and ``G_m = MPU_{m→g}(G, H_m)`` (both read the layer's
  inputs — the parallel form), then ``G ← Pool(G_l, G_a, G_v)`` (eq. 9). Cost linear in M.
* ``oall`` (eq. 7, after PMR): a common message ``C⁰ = concat_time(H_l, H_a, H_v)`` takes
  the place of ``G``; ``C ← Pool(C_l, C_a, C_v)`` position-wise. Cost quadratic in M.
* ``ooll`` (eq. 6, after MulT): one MPU per modality pair; each ``H_m`` pools the
  ``M-1`` sequences promoted towards it, position-wise. Cost quadratic in M.

Local sequences get fixed sinusoidal positions (``positions``, then ``embed_dropout``);
``G`` does not. Pooling (eq. 9) ``attention``: ``softmax_k(vᵀ act(W x_k + b)) · x_k`` over
the candidates ``x_k`` — for ``oagl`` each candidate is a whole context flattened to
``K·d`` (as the authors' code), for the others one score per position and candidate;
``avg``: mean of the candidates; ``mlp``: ``Linear(#candidates·width → width)`` on the
concatenated candidates.

Hierarchical sharing (§3.3.4), independent flags: ``share_directions`` (the two
directional sub-MPUs of an MPU), ``share_modalities`` (the MPUs of the modalities, or of
the pairs for ``ooll``; also the per-modality pools of ``ooll``), ``share_layers`` (MPUs and
pools across layers). Shared parts are the same module objects, so ``parameters()`` counts
them once. Unique sub-MPUs: ``(L or 1)·(G or 1)·(2 or 1)``, ``G`` = M (pairs for ooll).

Paper vs. authors' code: eq. 5 names the Transformer FFN (``ffn: relu``, the default); the
authors' code uses a GEGLU FFN (``ffn: geglu``), which is what reproduces the parameter
counts of Table 9 (see ``docs/emt_dlfr.md``). Attention projections have no bias on Q/K/V
(authors' code; ``qkv_bias: true`` adds them).
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError
from composer.registry import register_block
from composer.blocks.heads import ACTIVATIONS
from composer.blocks.mpu import FFNKind, PromotionUnit
from composer.spec import Spec, sequence, vector
from composer.layers.positional import sinusoidal_positions

__all__ = ["EMTConfig", "EMT", "CandidatePool"]

GLOBAL_PORT = "global"


class EMTConfig(BlockConfig):
    type: Literal["emt"] = "emt"
    strategy: Literal["oagl", "oall", "ooll"] = Field(
        default="oagl",
        description="oagl: one-to-all global-local (eq. 8, EMT); oall: one-to-all local-local (eq. 7); ooll: one-to-one local-local (eq. 6).",
    )
    update: Literal["parallel", "serial"] = Field(
        default="parallel",
        description=(
            "oagl / oall: parallel (the paper's choice): the global (common) side is promoted by the layer's input H_m; "
            "serial (§5.2.1, Fig. 7): by the promoted H_m of the same layer."
        ),
    )
    layers: int = Field(default=3, ge=1, description="Stacked fusion layers L.")
    heads: int = Field(default=4, ge=1, description="Attention heads (divide the width d).")
    ffn_expansion: int = Field(default=4, ge=1, description="FFN hidden width = ffn_expansion · d.")
    ffn: FFNKind = Field(default="relu", description="FFN: relu/gelu (Transformer FFN, eq. 5) or geglu (authors' code).")
    attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    ffn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the FFN output.")
    embed_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after adding positions to local sequences.")
    positions: bool = Field(default=True, description="Add fixed sinusoidal positions to the local sequences.")
    pooling: Literal["attention", "avg", "mlp"] = Field(default="attention", description="How promoted candidates are merged (eq. 9).")
    pool_activation: Literal["tanh", "relu"] = Field(default="tanh", description="Activation inside attention pooling.")
    share_directions: bool = Field(default=False, description="MPU-level sharing: both directions of an MPU use one sub-MPU.")
    share_modalities: bool = Field(default=False, description="Modality-level sharing: one MPU for all modalities (pairs for ooll).")
    share_layers: bool = Field(default=False, description="Layer-level sharing: one set of MPUs and pools for all layers.")
    qkv_bias: bool = Field(default=False, description="Bias on the Q/K/V projections (authors' code: none).")


def _ports(inputs: dict[str, Spec]) -> tuple[list[str], list[str]]:
    """(sequence ports, vector ports) in declaration order."""
    return [p for p, s in inputs.items() if s.kind == "sequence"], [p for p, s in inputs.items() if s.kind == "vector"]


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


@register_block(EMTConfig, family="fusion")
class EMT(Block):
    """Efficient Multimodal Transformer (EMT-DLFR eqs. 4-9): global-local mutual promotion.

    ``{m: sequence (B, T_m, d), …, u: vector (B, d), …} -> global (B, K·d), m (B, T_m, d), …``
    (see the module docstring for strategies, pooling and the sharing flags).
    A built-in and not a template because primitives say only ``strategy: oagl`` with
    ``positions: false`` (template ``emt_layer``, blueprints/templates/emt.yaml) and cannot say
    the sinusoidal positions added to the local sequences, oall's message (padded sequences
    joined along time), the position-wise attention and avg pools of oall / ooll,
    ``pool_activation: relu``, or ``share_layers`` together with another sharing flag.
    """

    main_port = "global"  # a bare reference to the block means this output

    @classmethod
    def infer(cls, config: EMTConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        seq_ports, vec_ports = _ports(inputs)
        other = [p for p, s in inputs.items() if s.kind not in ("sequence", "vector")]
        if other:
            raise SpecError(f"inputs {other} must be local sequences (B, T, d) or utterance vectors (B, d)", field="in")
        if len(seq_ports) < 2:
            raise SpecError(f"emt needs at least two local sequences (one per modality), got {len(seq_ports)}", field="in")
        if GLOBAL_PORT in seq_ports:
            raise SpecError(f"'{GLOBAL_PORT}' is the name of EMT's global output; name the sequence port otherwise", field="in")
        if config.update == "serial" and config.strategy == "ooll":
            raise SpecError("update: serial is a variant of oagl and oall (§5.2.1); ooll has no global or common side", field="update")
        if config.strategy == "oagl" and not vec_ports:
            raise SpecError("strategy oagl needs utterance vectors (B, d) as the global context G⁰, e.g. in: {text: ..., text_utt: ...}", field="in")
        widths = {p: inputs[p].features for p in seq_ports + vec_ports}
        d = widths[seq_ports[0]]
        if not isinstance(d, int) or any(w != d for w in widths.values()):
            raise SpecError(f"all inputs need one width d (project them first); got {widths}", field="in")
        if d % config.heads:
            raise SpecError(f"width {d} is not divisible by {config.heads} heads", field="heads")
        tokens = len(vec_ports) if config.strategy == "oagl" else len(seq_ports)
        return {GLOBAL_PORT: vector(tokens * d), **{p: inputs[p] for p in seq_ports}}

    @classmethod
    def examples(cls):
        ins = {"a": sequence("T_a", 8), "b": sequence("T_b", 8), "a_utt": vector(8), "b_utt": vector(8)}
        return [
            ({"layers": 2, "heads": 2, "ffn_expansion": 2}, ins),
            ({"layers": 2, "heads": 2, "ffn": "geglu", "share_directions": True, "share_modalities": True, "share_layers": True}, ins),
            ({"strategy": "oall", "layers": 1, "heads": 2, "pooling": "mlp"}, {"a": sequence("T_a", 8), "b": sequence("T_b", 8), "c": sequence(4, 8)}),
            ({"layers": 2, "heads": 2, "update": "serial"}, ins),
            ({"strategy": "ooll", "layers": 2, "heads": 2, "pooling": "avg", "share_modalities": True}, {"a": sequence("T_a", 8), "b": sequence("T_b", 8), "c": sequence(4, 8)}),
        ]

    def __init__(self, config: EMTConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        c = config
        self.seq_ports, self.vec_ports = _ports(inputs)
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
