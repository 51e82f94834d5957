"""ALMT in plain PyTorch (Zhang, Wang, Yin, Liu, Liu, Yu, "Learning Language-guided Adaptive
Hyper-modality Representation for Multimodal Sentiment Analysis", EMNLP 2023), written from the
paper (§3, eqs. 1-7) and the authors' public code (Haoyu-ha/ALMT: ``models/almt.py``,
``models/almt_layer.py``, ``models/bert.py``, ``configs/{mosi,mosei,sims}.yaml``).

Module and parameter names follow the authors' (``h_hyper``, ``bertmodel.model``,
``proj_l.0`` / ``proj_l.1`` (Linear, then ``Transformer``), ``l_encoder``, ``h_hyper_layer``,
``fusion_layer``, ``regression_layer``; inside a ``Transformer``: ``pos_embedding``,
``extra_token``, ``encoder.layers.<i>.0`` (LayerNorms ``norm_q/k/v`` and ``fn`` the attention)
and ``encoder.layers.<i>.1`` (``norm`` and ``fn.net.0`` / ``fn.net.3``, the feed-forward)), so a
checkpoint of the authors' model loads into :class:`ALMT` unchanged.

The computation is the authors': every position of every input is attended to (padding
included), BERT's states at [PAD] positions are handed on, and the first ``token_len``
outputs are kept. :meth:`ALMT.forward` with ``per_sample=True`` instead runs each sample alone
at its own lengths (the text's valid tokens, the audio and vision valid frames): what
Composer's masked default computes on a padded batch (docs/masks.md).

``config`` is a plain namespace with the authors' ``model:`` fields (:func:`model_args`).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ALMT", "Transformer", "CrossTransformer", "HhyperLearningEncoder", "model_args", "BertTextEncoder"]


class Attention(nn.Module):
    """``W_o softmax(Q Kᵀ/√e) V`` over ``heads`` heads of width ``dim_head`` (bias-free Q, K, V)."""

    def __init__(self, dim, heads=8, dim_head=64, dropout=0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if not (heads == 1 and dim_head == dim) else nn.Identity()

    def forward(self, q, k, v):
        return self.to_out(heads_attention(self.to_q(q), self.to_k(k), self.to_v(v), self.heads, self.scale))


def heads_attention(q, k, v, heads, scale):
    """Per-head softmax attention, ``(B, n, h·e)`` in and out."""
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).permute(0, 2, 1, 3)  # (B, h, n, e)
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(torch.einsum("bhid,bhjd->bhij", q, k) * scale, dim=-1)
    out = torch.einsum("bhij,bhjd->bhid", weights, v)
    return out.permute(0, 2, 1, 3).flatten(2)


class PreNormAttention(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, q, k, v):
        return self.fn(self.norm_q(q), self.norm_k(k), self.norm_v(v))


class PreNormForward(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class TransformerEncoder(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, mlp_dim, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNormAttention(dim, Attention(dim, heads, dim_head, dropout)), PreNormForward(dim, FeedForward(dim, mlp_dim, dropout))])
            for _ in range(depth)
        )

    def forward(self, x, save_hidden=False):
        hidden = [x]
        for attn, ff in self.layers:
            x = attn(x, x, x) + x
            x = ff(x) + x
            hidden.append(x)
        return hidden if save_hidden else x


class CrossTransformerEncoder(TransformerEncoder):
    def forward(self, source_x, target_x):
        for attn, ff in self.layers:
            target_x = attn(target_x, source_x, source_x) + target_x
            target_x = ff(target_x) + target_x
        return target_x


class Transformer(nn.Module):
    """Learned tokens (zeros) prepended, learned positions (N(0, 1)), the encoder."""

    def __init__(self, *, num_frames, token_len, save_hidden, dim, depth, heads, mlp_dim, dim_head=64, dropout=0.0, emb_dropout=0.0):
        super().__init__()
        self.token_len, self.save_hidden = token_len, save_hidden
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames + (token_len or 0), dim))
        self.extra_token = nn.Parameter(torch.zeros(1, token_len, dim)) if token_len is not None else None
        self.dropout = nn.Dropout(emb_dropout)
        self.encoder = TransformerEncoder(dim, depth, heads, dim_head, mlp_dim, dropout)

    def forward(self, x):
        b, n, _ = x.shape
        if self.token_len is not None:
            x = torch.cat([self.extra_token.expand(b, -1, -1), x], dim=1)
        x = x + self.pos_embedding[:, : x.shape[1]]
        return self.encoder(self.dropout(x), self.save_hidden)


class CrossTransformer(nn.Module):
    """A [CLS] token (shared) and positions on source and target; the target attends to the source."""

    def __init__(self, *, source_num_frames, tgt_num_frames, dim, depth, heads, mlp_dim, dim_head=64, dropout=0.0, emb_dropout=0.0):
        super().__init__()
        self.pos_embedding_s = nn.Parameter(torch.randn(1, source_num_frames + 1, dim))
        self.pos_embedding_t = nn.Parameter(torch.randn(1, tgt_num_frames + 1, dim))
        self.extra_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.CrossTransformerEncoder = CrossTransformerEncoder(dim, depth, heads, dim_head, mlp_dim, dropout)

    def forward(self, source_x, target_x):
        cls = self.extra_token.expand(source_x.shape[0], -1, -1)
        source_x = torch.cat([cls, source_x], dim=1)
        source_x = source_x + self.pos_embedding_s[:, : source_x.shape[1]]
        target_x = torch.cat([cls, target_x], dim=1)
        target_x = target_x + self.pos_embedding_t[:, : target_x.shape[1]]
        return self.CrossTransformerEncoder(self.dropout(source_x), self.dropout(target_x))


class HhyperLearningLayer(nn.Module):
    """Eqs. 3-5: language queries, audio and vision keys/values, the sum added to the hyper tokens."""

    def __init__(self, dim, heads=8, dim_head=64, dropout=0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k_ta = nn.Linear(dim, inner, bias=False)
        self.to_k_tv = nn.Linear(dim, inner, bias=False)
        self.to_v_ta = nn.Linear(dim, inner, bias=False)
        self.to_v_tv = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if not (heads == 1 and dim_head == dim) else nn.Identity()

    def forward(self, h_t, h_a, h_v, h_hyper):
        q = self.to_q(h_t)
        out_ta = heads_attention(q, self.to_k_ta(h_a), self.to_v_ta(h_a), self.heads, self.scale)
        out_tv = heads_attention(q, self.to_k_tv(h_v), self.to_v_tv(h_v), self.heads, self.scale)
        return h_hyper + self.to_out(out_ta + out_tv)


class PreNormAHL(nn.Module):
    def __init__(self, dim, fn):
        super().__init__()
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))
        self.fn = fn

    def forward(self, h_t, h_a, h_v, h_hyper):
        return self.fn(self.norm1(h_t), self.norm2(h_a), self.norm3(h_v), self.norm4(h_hyper))


class HhyperLearningEncoder(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([PreNormAHL(dim, HhyperLearningLayer(dim, heads, dim_head, dropout))]) for _ in range(depth))

    def forward(self, h_t_list, h_a, h_v, h_hyper):
        for i, (layer,) in enumerate(self.layers):
            h_hyper = layer(h_t_list[i], h_a, h_v, h_hyper)
        return h_hyper


class BertTextEncoder(nn.Module):
    """The authors' text encoder around a given ``BertModel`` (fine-tuned): ``text (B, 3, T)``
    (ids, attention mask, segment ids) -> the last hidden states ``(B, T, H)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, text):
        ids, mask, segments = text[:, 0].long(), text[:, 1].float(), text[:, 2].long()
        return self.model(input_ids=ids, attention_mask=mask, token_type_ids=segments)[0]


def model_args(**fields) -> SimpleNamespace:
    """The authors' ``model:`` section (``configs/mosi.yaml``), updated with ``fields``."""
    base = dict(l_input_dim=768, a_input_dim=5, v_input_dim=20, l_proj_dst_dim=128, a_proj_dst_dim=128, v_proj_dst_dim=128,
                token_len=8, token_dim=128, l_input_length=50, a_input_length=375, v_input_length=500, proj_input_dim=128,
                proj_depth=1, proj_heads=8, proj_mlp_dim=128, token_length=8, l_enc_heads=8, l_enc_mlp_dim=128, AHL_depth=3,
                ahl_heads=8, ahl_dim_head=16, ahl_droup=0.0, fusion_heads=8, fusion_mlp_dim=128, fusion_layer_depth=2,
                dim_head=64)  # dim_head: the default of the authors' Transformer / CrossTransformer, which ALMT never sets
    return SimpleNamespace(**{**base, **fields})


def _projection(input_dim, dst_dim, frames, args):
    return nn.Sequential(
        nn.Linear(input_dim, dst_dim),
        Transformer(num_frames=frames, save_hidden=False, token_len=args.token_length, dim=args.proj_input_dim,
                    depth=args.proj_depth, heads=args.proj_heads, mlp_dim=args.proj_mlp_dim, dim_head=args.dim_head),
    )


class ALMT(nn.Module):
    """``forward(x_visual (B, T_v, D_v), x_audio (B, T_a, D_a), x_text (B, 3, T_l)) -> (B, 1)``."""

    def __init__(self, args: SimpleNamespace, bert: nn.Module):
        super().__init__()
        self.h_hyper = nn.Parameter(torch.ones(1, args.token_len, args.token_dim))
        self.bertmodel = BertTextEncoder(bert)
        self.proj_l = _projection(args.l_input_dim, args.l_proj_dst_dim, args.l_input_length, args)
        self.proj_a = _projection(args.a_input_dim, args.a_proj_dst_dim, args.a_input_length, args)
        self.proj_v = _projection(args.v_input_dim, args.v_proj_dst_dim, args.v_input_length, args)
        self.l_encoder = Transformer(num_frames=args.token_length, save_hidden=True, token_len=None, dim=args.proj_input_dim,
                                     depth=args.AHL_depth - 1, heads=args.l_enc_heads, mlp_dim=args.l_enc_mlp_dim, dim_head=args.dim_head)
        self.h_hyper_layer = HhyperLearningEncoder(dim=args.token_dim, depth=args.AHL_depth, heads=args.ahl_heads,
                                                   dim_head=args.ahl_dim_head, dropout=args.ahl_droup)
        self.fusion_layer = CrossTransformer(source_num_frames=args.token_len, tgt_num_frames=args.token_len, dim=args.proj_input_dim,
                                             depth=args.fusion_layer_depth, heads=args.fusion_heads, mlp_dim=args.fusion_mlp_dim,
                                             dim_head=args.dim_head)
        self.regression_layer = nn.Sequential(nn.Linear(args.token_dim, 1))
        self.n = args.token_len

    def features(self, x_visual, x_audio, x_text):
        """The three compact token sequences ``H^0_v, H^0_a, H^0_l`` (``(B, n, d)`` each, eq. 1)."""
        h_v = self.proj_v(x_visual)[:, : self.n]
        h_a = self.proj_a(x_audio)[:, : self.n]
        h_l = self.proj_l(self.bertmodel(x_text))[:, : self.n]
        return h_v, h_a, h_l

    def head(self, h_v, h_a, h_l):
        h_t_list = self.l_encoder(h_l)
        h_hyper = self.h_hyper_layer(h_t_list, h_a, h_v, self.h_hyper.expand(h_l.shape[0], -1, -1))
        return self.regression_layer(self.fusion_layer(h_hyper, h_t_list[-1])[:, 0])

    def forward(self, x_visual, x_audio, x_text, *, per_sample=False, audio_lengths=None, vision_lengths=None):
        if not per_sample:
            return self.head(*self.features(x_visual, x_audio, x_text))
        outputs = []
        for i in range(x_text.shape[0]):
            length = int(x_text[i, 1].sum())  # valid tokens ([CLS] .. [SEP])
            text = x_text[i : i + 1, :, :length]
            audio = x_audio[i : i + 1, : int(audio_lengths[i])]
            vision = x_visual[i : i + 1, : int(vision_lengths[i])]
            outputs.append(self.head(*self.features(vision, audio, text)))
        return torch.cat(outputs)


def mse(pred, label):
    """The authors' training loss (``torch.nn.MSELoss`` on ``(B, 1)`` outputs and labels)."""
    return F.mse_loss(pred, label.view(-1, 1))
