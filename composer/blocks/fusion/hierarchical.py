"""HCT-MG module: hierarchical crossmodal transformer with modality gating (§4, eqs. 1-6;
config, shapes and equations: :mod:`composer.configs.fusion.hierarchical`)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.layers.mult import encoder_from, key_padding
from composer.blocks.gating import ModalityGate
from composer.blocks.pooling import masked_pool
from composer.configs.fusion.hierarchical import HierarchicalCrossmodalConfig
from composer.spec import Spec

__all__ = ["HierarchicalCrossmodal"]


class HierarchicalCrossmodal(Block):
    """HCT-MG fusion: four crossmodal transformers, a self-attention and a modality gate
    (:class:`~composer.configs.fusion.hierarchical.HierarchicalCrossmodalConfig`)."""

    def __init__(self, config: HierarchicalCrossmodalConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.modalities = list(inputs)
        d = int(next(iter(inputs.values())).features)
        self.gate = ModalityGate(self.modalities, config.primary, config.freeze_after, tie_break=config.tie_break)
        self.cmt_a1 = encoder_from(d, config)  # eq. (1): A2 -> A1
        self.cmt_a2 = encoder_from(d, config)  # eq. (2): A1 -> A2
        self.cmt_p1 = encoder_from(d, config)  # eq. (3): Â1 -> P
        self.cmt_p2 = encoder_from(d, config)  # eq. (4): Â2 -> P
        self.self_attention = encoder_from(2 * d, config, config.sa_depth())  # eq. (5)
        aux_width = config.aux_width or 2 * d
        self.w1 = nn.Linear(d, aux_width, bias=False)  # eq. (6)
        self.w2 = nn.Linear(d, aux_width, bias=False)

    def roles(self) -> tuple[str, str, str]:
        """``(aux-1, aux-2, primary)`` modality names for the current gate state."""
        p = self.gate.primary_index()
        a1, a2 = (i for i in range(3) if i != p)
        return self.modalities[a1], self.modalities[a2], self.modalities[p]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        p, weights = self.gate.select()
        a1, a2 = (i for i in range(3) if i != p)
        xs = [inputs[m] for m in self.modalities]  # 3 × (B, T_m, d)
        valid = [ctx.mask(self.in_specs[m]) for m in self.modalities]  # (B, T_m) True = valid, or None
        if weights is not None and self.config.gate_scale == "relative":
            weights = weights * len(self.modalities)  # M·ω: 1 each at initialisation
        if weights is not None and self.config.gate_at == "inputs":
            xs = [w * x for w, x in zip(weights, xs)]
        aux1 = self.cmt_a1(xs[a1], xs[a2], key_padding_mask=key_padding(valid[a2]))  # (B, T_a1, d), eq. (1)
        aux2 = self.cmt_a2(xs[a2], xs[a1], key_padding_mask=key_padding(valid[a1]))  # (B, T_a2, d), eq. (2)
        prim1 = self.cmt_p1(xs[p], aux1, key_padding_mask=key_padding(valid[a1]))  # (B, T_p, d), eq. (3)
        prim2 = self.cmt_p2(xs[p], aux2, key_padding_mask=key_padding(valid[a2]))  # (B, T_p, d), eq. (4)
        prim = self.self_attention(
            torch.cat([prim1, prim2], dim=-1), key_padding_mask=key_padding(valid[p])
        )  # (B, T_p, 2d), eq. (5)
        mode = self.config.pool
        z_a1 = self.w1(masked_pool(aux1, valid[a1], mode))  # (B, a)
        z_a2 = self.w2(masked_pool(aux2, valid[a2], mode))  # (B, a)
        z_p = masked_pool(prim, valid[p], mode)  # (B, 2d)
        if weights is not None and self.config.gate_at == "outputs":
            z_a1, z_a2, z_p = weights[a1] * z_a1, weights[a2] * z_a2, weights[p] * z_p
        return torch.cat([z_a1, z_a2, z_p], dim=-1)  # (B, 2a + 2d), eq. (6)
