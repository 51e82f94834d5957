"""ALMT's operators (Zhang et al., EMNLP 2023): the token encoder, Adaptive Hyper-modality
Learning and the cross-modality fusion transformer (configs, shapes and equations:
:mod:`composer.configs.almt`).

:class:`QKVAttention`, :class:`EncoderLayer`, :class:`TokenEncoder` and :class:`HyperLayer`
are plain ``nn.Module``s; LNLN's blocks (:mod:`composer.blocks.lnln`) are built from them too.
Key padding masks are True on padded steps (:func:`composer.layers.mult.key_padding`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.almt import AHLConfig, ALMTFusionConfig, ALMTTransformerConfig, projects_out
from composer.errors import DataError
from composer.layers.mult import key_padding
from composer.spec import Spec

__all__ = ["QKVAttention", "EncoderLayer", "TokenEncoder", "HyperLayer", "ALMTTransformer", "AHL", "ALMTFusion", "attend"]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float, padding: torch.Tensor | None) -> torch.Tensor:
    """``softmax(Q Kᵀ · scale) V`` per head: ``(B, Tq, h·e), (B, Tk, h·e) ×2 -> (B, Tq, h·e)``;
    ``padding`` ``(B, Tk)`` True on keys nobody attends to."""
    B, Tq, inner = q.shape
    q = q.view(B, Tq, heads, -1).transpose(1, 2)  # (B, Tq, h·e) -> (B, h, Tq, e)
    k = k.view(B, k.shape[1], heads, -1).transpose(1, 2)  # (B, h, Tk, e)
    v = v.view(B, v.shape[1], heads, -1).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, h, Tq, Tk)
    if padding is not None:
        scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, h, Tq, e)
    return out.transpose(1, 2).reshape(B, Tq, inner)  # (B, Tq, h·e)


class QKVAttention(nn.Module):
    """Pre-LN multi-head attention with a LayerNorm per query, key and value input:
    ``(B, Tq, d), (B, Tk, d) -> (B, Tq, d)``, ``W_o[softmax(LN_q(x) W_q (LN_k(s) W_k)ᵀ/√e) LN_v(s) W_v]``."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim) if projects_out(dim, heads, dim_head) else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, source: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        q = self.to_q(self.norm_q(x))
        k = self.to_k(self.norm_k(source))
        v = self.to_v(self.norm_v(source))
        out = self.to_out(attend(q, k, v, self.heads, self.scale, padding))  # (B, Tq, d)
        return self.dropout(out) if isinstance(self.to_out, nn.Linear) else out


class FeedForward(nn.Module):
    """``(B, T, d) -> (B, T, d)``: ``W_2 GELU(W_1 LN(x))`` with dropout after each linear map's activation and output."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm(x))))))


class EncoderLayer(nn.Module):
    """``x += Attention(x, s); x += FFN(x)`` with ``s = x`` (self-attention) unless a source is given."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp: int, dropout: float = 0.0):
        super().__init__()
        self.attn = QKVAttention(dim, heads, dim_head, dropout)
        self.ffn = FeedForward(dim, mlp, dropout)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(x, x if source is None else source, padding)
        return x + self.ffn(x)


class TokenEncoder(nn.Module):
    """``[n tokens; x] + P[:n+T]`` then ``layers`` self-attention layers (the authors' ``Transformer``).

    ``forward(x (B, T, d), padding (B, T) | None, hidden=False)`` returns the ``(B, n+T, d)``
    states, or with ``hidden`` the list of the input and every layer's output (the
    multi-scale language features of ALMT eq. 2)."""

    def __init__(self, dim: int, frames: int, tokens: int | None, layers: int, heads: int, dim_head: int, mlp: int,
                 dropout: float = 0.0, emb_dropout: float = 0.0):
        super().__init__()
        self.frames, self.tokens = frames, tokens or 0
        self.pos_embedding = nn.Parameter(torch.randn(1, frames + self.tokens, dim))
        self.extra_token = nn.Parameter(torch.zeros(1, self.tokens, dim)) if tokens else None
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dim_head, mlp, dropout) for _ in range(layers))
        self.dropout = nn.Dropout(emb_dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None, hidden: bool = False):
        B, T, _ = x.shape
        if T > self.frames:
            raise DataError(f"a sequence of {T} steps is longer than the {self.frames} positions the encoder has (`frames`)")
        if self.extra_token is not None:
            x = torch.cat([self.extra_token.expand(B, -1, -1), x], dim=1)  # (B, n+T, d)
            if padding is not None:
                padding = torch.cat([padding.new_zeros(B, self.tokens), padding], dim=1)  # tokens are never padding
        x = self.dropout(x + self.pos_embedding[:, : self.tokens + T])
        states = [x]
        for layer in self.layers:
            x = layer(x, padding=padding)
            states.append(x)
        return states if hidden else x


class HyperLayer(nn.Module):
    """One hyper-modality learning layer (ALMT eqs. 3-5):
    ``H_hyper' = LN_4(H_hyper) + W_o[softmax(Q K_aᵀ/√e) V_a + softmax(Q K_vᵀ/√e) V_v]``,
    ``Q = LN_1(H_l) W_q``, ``K_m, V_m = LN(H_m) W_km, W_vm``. ``forward(language, audio, vision,
    hyper) -> (B, n, d)``."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm_language, self.norm_audio = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_vision, self.norm_hyper = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k_audio = nn.Linear(dim, inner, bias=False)
        self.to_k_vision = nn.Linear(dim, inner, bias=False)
        self.to_v_audio = nn.Linear(dim, inner, bias=False)
        self.to_v_vision = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim) if projects_out(dim, heads, dim_head) else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, language, audio, vision, hyper) -> torch.Tensor:
        q = self.to_q(self.norm_language(language))
        audio, vision = self.norm_audio(audio), self.norm_vision(vision)
        from_audio = attend(q, self.to_k_audio(audio), self.to_v_audio(audio), self.heads, self.scale, None)  # eq. 3
        from_vision = attend(q, self.to_k_vision(vision), self.to_v_vision(vision), self.heads, self.scale, None)  # eq. 4
        shift = self.to_out(from_audio + from_vision)
        if isinstance(self.to_out, nn.Linear):
            shift = self.dropout(shift)
        return self.norm_hyper(hyper) + shift  # eq. 5


# -- blocks ------------------------------------------------------------------------------


class ALMTTransformer(Block):
    """ALMT's token encoder (:class:`~composer.configs.almt.ALMTTransformerConfig`)."""

    config: ALMTTransformerConfig

    def __init__(self, config: ALMTTransformerConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        d_in, d = int(self._spec.features), config.width(self._spec)
        self.project = nn.Linear(d_in, d) if d != d_in else None
        self.encoder = TokenEncoder(d, config.positions(self._spec), config.tokens, config.layers, config.heads,
                                    config.dim_head, config.mlp or d, config.dropout, config.emb_dropout)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        if self.project is not None:
            x = self.project(x)  # (B, T, D) -> (B, T, d)
        valid = None if self.config.padding == "include" else ctx.mask(self._spec)  # (B, T) True = real step
        out = self.encoder(x, key_padding(valid))
        if self.config.tokens:
            return out[:, : self.config.tokens]  # (B, n, d): the tokens' states
        return out if valid is None else out.masked_fill(~valid[..., None], 0.0)  # (B, T, d), padded steps zeroed


class AHL(Block):
    """Adaptive Hyper-modality Learning (:class:`~composer.configs.almt.AHLConfig`)."""

    config: AHLConfig

    def __init__(self, config: AHLConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        spec = inputs["language"]
        d, n = int(spec.features), int(spec.time)
        self.hyper_tokens = nn.Parameter(torch.ones(1, n, d))
        self.language_encoder = TokenEncoder(d, n, None, config.layers - 1, config.language_heads, config.language_dim_head,
                                             config.language_mlp or d)
        self.hyper_layers = nn.ModuleList(HyperLayer(d, config.heads, config.dim_head, config.dropout) for _ in range(config.layers))

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        language, audio, vision = inputs["language"], inputs["audio"], inputs["vision"]
        scales = self.language_encoder(language, hidden=True)  # L × (B, n, d): H^1_l .. H^L_l (eq. 2)
        hyper = self.hyper_tokens.expand(language.shape[0], -1, -1)  # H^0_hyper (B, n, d)
        for layer, guide in zip(self.hyper_layers, scales):
            hyper = layer(guide, audio, vision, hyper)  # eqs. 3-5
        return {"hyper": hyper, "language": scales[-1]}


class ALMTFusion(Block):
    """ALMT's cross-modality fusion transformer (:class:`~composer.configs.almt.ALMTFusionConfig`)."""

    config: ALMTFusionConfig

    def __init__(self, config: ALMTFusionConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        d = int(inputs["target"].features)
        n_t, n_s = int(inputs["target"].time), int(inputs["source"].time)
        self.pos_embedding_s = nn.Parameter(torch.randn(1, n_s + 1, d))
        self.pos_embedding_t = nn.Parameter(torch.randn(1, n_t + 1, d))
        self.extra_token = nn.Parameter(torch.zeros(1, 1, d))
        self.layers = nn.ModuleList(
            EncoderLayer(d, config.heads, config.dim_head, config.mlp or d, config.dropout) for _ in range(config.layers)
        )
        self.dropout = nn.Dropout(config.emb_dropout)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        source, target = inputs["source"], inputs["target"]
        cls = self.extra_token.expand(source.shape[0], -1, -1)  # (B, 1, d)
        source = self.dropout(torch.cat([cls, source], dim=1) + self.pos_embedding_s)  # (B, 1+n_s, d)
        target = self.dropout(torch.cat([cls, target], dim=1) + self.pos_embedding_t)  # (B, 1+n_t, d)
        for layer in self.layers:
            target = layer(target, source)  # the target queries the source (eq. 6)
        return {"cls": target[:, 0], "seq": target[:, 1:]}
