"""LNLN's blocks (Zhang, Wang, Yu, NeurIPS 2024): training-time random missing data and the
Dominant Modality Correction (configs, shapes and equations: :mod:`composer.configs.lnln`).
The token encoders are ALMT's (:class:`composer.blocks.almt.TokenEncoder`).
"""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.blocks.almt import TokenEncoder
from composer.blocks.heads import make_mlp
from composer.configs.lnln import DMCConfig, RandomMissingConfig
from composer.layers.missing import drop_steps
from composer.spec import Spec

__all__ = ["RandomMissing", "DMC", "GradientReversal", "reverse_gradient"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-scale`` backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.neg() * ctx.scale, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged, its gradient reversed and scaled by ``scale``."""
    return GradientReversal.apply(x, scale)


class RandomMissing(Block):
    """LNLN's training-time random missing data (:class:`~composer.configs.lnln.RandomMissingConfig`)."""

    config: RandomMissingConfig

    def __init__(self, config: RandomMissingConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()
        B, T = x.shape[:2]
        if not self.training:
            return {"out": x, "completeness": x.new_ones(B, 1, dtype=torch.float32)}
        low, high = self.config.rate_range
        rate = low + (high - low) * torch.rand(B, 1, device=x.device)  # (B, 1) r per sample
        rate = rate.masked_fill(torch.rand(B, 1, device=x.device) < self.config.complete, 0.0)  # complete samples: r = 0
        draw = torch.rand(B, T, device=x.device) < rate  # (B, T) steps drawn for dropping
        valid = ctx.mask(self._spec)
        valid = torch.ones(B, T, dtype=torch.bool, device=x.device) if valid is None else valid
        out, _ = drop_steps(x, draw, valid, tokens=self._spec.kind == "tokens", unk_token=self.config.unk_token,
                            special_tokens=self.config.special_tokens)
        return {"out": out, "completeness": 1.0 - rate}  # eq. 4's target: the nominal fraction kept


class DMC(Block):
    """LNLN's Dominant Modality Correction (:class:`~composer.configs.lnln.DMCConfig`)."""

    config: DMCConfig

    def __init__(self, config: DMCConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        language = inputs["language"]
        d, n = int(language.features), int(language.time)
        mlp = config.mlp or d
        joined = n + int(inputs["audio"].time) + int(inputs["vision"].time)
        self.proxy_tokens = nn.Parameter(torch.ones(1, n, d))  # H_p
        self.completeness_encoder = TokenEncoder(d, n, 1, config.check_layers, config.heads, config.dim_head, mlp)
        self.completeness_score = nn.Sequential(*make_mlp(d, [config.score_width(d)], 1, "leaky_relu", negative_slope=0.1), nn.Sigmoid())
        self.proxy_generator = TokenEncoder(d, joined, n, config.proxy_layers, config.heads, config.dim_head, mlp)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        language, audio, vision = inputs["language"], inputs["audio"], inputs["vision"]
        n = language.shape[1]
        w = self.completeness_score(self.completeness_encoder(language)[:, 0])  # (B, 1), eq. 3
        proxy_tokens = self.proxy_tokens.expand(language.shape[0], -1, -1)
        proxy = self.proxy_generator(torch.cat([proxy_tokens, audio, vision], dim=1))[:, :n]  # (B, n, d), eq. 5
        proxy = reverse_gradient(proxy, self.config.grl)  # adversarial learning (eq. 6)
        dominant = proxy * (1 - w[..., None]) + language * w[..., None]  # eq. 7
        return {"dominant": dominant, "completeness": w, "proxy": proxy}
