"""EMT-DLFR in plain PyTorch (Sun et al., §3.2-3.6, eqs. 1-16), for parity with Composer.

Written from the paper's equations and the authors' documented behaviour (sunlicai/EMT-DLFR),
with no Composer import. :class:`EMTDLFRReference` is the prediction network:

* encoders (eq. 1): BERT for text (``h_l`` = last layer's [CLS]); one LSTM per audio / vision
  sequence (``h_m`` = state at the last valid step), optionally followed by a Linear with bias
  on the sequence and the last state (the authors' ``AuViSubNet.linear_1``);
* one bias-free matrix ``W_m`` per modality projects ``H_m`` and ``h_m`` to ``d`` (§3.2);
* EMT (eqs. 4-9), one-to-all global-local (OAGL) in the parallel form:
  ``H_m^[0] = W_m H_m + PE``; ``G^[0] = [W_l h_l; W_a h_a; W_v h_v]`` (3, d), no positions;
  per layer ``H_m^[i+1] = MPU_{g→m}(H_m^[i], G^[i])``, ``G_m = MPU_{m→g}(G^[i], H_m^[i])``,
  ``G^[i+1] = softmax_m(vᵀ tanh(W G_m + b)) G_m`` over the flattened (3·d) candidates;
  the directional MPU (eq. 5) is pre-LN cross-attention, self-attention, FFN;
  hierarchical sharing (§3.3.4): directions, modalities and layers, three independent flags;
* prediction (§3.4): ``[g; h_l; h_a; h_v]`` → (dropout) → MLP with ReLU → ŷ.

:class:`Restoration` holds the training-only DLFR networks and computes eqs. 10-16 for a
complete batch, its incomplete view and the drop masks ``g_m``.

Padding (as docs/masks.md documents for Composer): ``<m>_mask`` ``(B, T)`` or
``<m>_lengths`` give each modality's valid prefix; padded steps are excluded as attention
keys, skipped by the packed LSTMs, and excluded from the reconstruction loss. The text
sequence ``H_l`` keeps every valid token, [CLS] and [SEP] included (the authors drop [CLS]
and also mask [SEP]; a documented Composer choice).

Positions: the paper names the vanilla Transformer's sinusoid (interleaved sin/cos,
``ω_i = 10000^(-2i/d)``, ``layout="interleaved"``); Composer documents a sin | cos halves
table with ``ω_i = 10000^(-i/(d/2-1))`` (``layout="halves"``), which :func:`reference_for`
selects. The two are not a permutation of one another (the frequencies differ slightly).
"""

from __future__ import annotations

import copy
import math
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["EMTDLFRReference", "Restoration", "reference_for", "build_reference", "weight_map", "mask_inputs", "position_table"]

MODALITIES = ("text", "audio", "vision")


# -- positions ----------------------------------------------------------------------------


def position_table(length: int, dim: int, layout: str = "interleaved") -> torch.Tensor:
    """``(length, dim)`` fixed sinusoid for positions ``0 .. length-1`` (``dim`` even).

    ``interleaved``: ``PE[p, 2i] = sin(p ω_i)``, ``PE[p, 2i+1] = cos(p ω_i)``, ``ω_i = 10000^(-2i/dim)``.
    ``halves``: ``[sin(p ω_i) | cos(p ω_i)]``, ``ω_i = 10000^(-i/(dim/2 - 1))``.
    """
    assert dim % 2 == 0, f"position tables need an even width, got {dim}"
    half = dim // 2
    # float32 arithmetic, as a registered float32 table (the authors' PositionalEmbedding) holds it
    i = torch.arange(half, dtype=torch.float32)
    p = torch.arange(length, dtype=torch.float32)[:, None]
    if layout == "interleaved":
        angles = p * torch.exp(i * (-2.0 * math.log(10000.0) / dim))  # (T, d/2)
        return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, dim)
    if layout == "halves":
        angles = p * torch.exp(i * (-math.log(10000.0) / max(half - 1, 1)))
        return torch.cat([angles.sin(), angles.cos()], dim=-1)
    raise ValueError(f"unknown position layout {layout!r}")


# -- the Mutual Promotion Unit (eqs. 2-5) ----------------------------------------------------


class Attention(nn.Module):
    """Multi-head ``softmax(Q Kᵀ/√d_k) V`` (eqs. 2-3): ``(B, Tq, d), (B, Tk, d), pad (B, Tk) | None -> (B, Tq, d)``.

    ``W_Q, W_K, W_V`` without bias, output projection with bias (authors' code); dropout on
    the attention weights. Padded keys get the most negative float, as the authors fill them.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        self.w_o = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, source: torch.Tensor, source_pad: torch.Tensor | None) -> torch.Tensor:
        B, Tq, d = x.shape
        h, dk = self.heads, d // self.heads

        def split(t):  # (B, T, d) -> (B, h, T, d_k)
            return t.reshape(B, t.shape[1], h, dk).permute(0, 2, 1, 3)

        q, k, v = split(self.w_q(x)), split(self.w_k(source)), split(self.w_v(source))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dk)  # (B, h, Tq, Tk)
        if source_pad is not None:
            scores = scores.masked_fill(source_pad[:, None, None, :], -torch.finfo(scores.dtype).max)
        weights = self.dropout(scores.softmax(dim=-1))
        return self.w_o((weights @ v).permute(0, 2, 1, 3).reshape(B, Tq, d))


class FeedForward(nn.Module):
    """Position-wise FFN: ``relu`` (eq. 5's Transformer FFN) or ``geglu`` (authors' code:
    ``Linear(d, 2·e·d) -> value · GELU(gate) -> Linear(e·d, d)``), dropout on the output."""

    def __init__(self, dim: int, expansion: int, kind: str, dropout: float):
        super().__init__()
        assert kind in ("relu", "geglu"), f"unsupported FFN {kind!r}"
        self.kind = kind
        self.w_in = nn.Linear(dim, dim * expansion * (2 if kind == "geglu" else 1))
        self.w_out = nn.Linear(dim * expansion, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w_in(x)
        if self.kind == "geglu":
            value, gate = h.chunk(2, dim=-1)
            h = value * F.gelu(gate)
        else:
            h = F.relu(h)
        return self.dropout(self.w_out(h))


class DirectionalMPU(nn.Module):
    """``MPU_{n→m}(H_m, H_n)`` (eq. 5): ``H' = MHCA(LN(H_m), LN(H_n)) + H_m``;
    ``H'' = MHSA(LN(H')) + H'``; ``out = FFN(LN(H'')) + H''``. ``(B, Tm, d), (B, Tn, d) -> (B, Tm, d)``."""

    def __init__(self, dim: int, heads: int, expansion: int, ffn: str, attn_dropout: float, ffn_dropout: float):
        super().__init__()
        self.ln_target = nn.LayerNorm(dim)
        self.ln_source = nn.LayerNorm(dim)
        self.cross = Attention(dim, heads, attn_dropout)
        self.ln_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, attn_dropout)
        self.ln_ffn = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, expansion, ffn, ffn_dropout)

    def forward(self, target, source, target_pad, source_pad):
        h = self.cross(self.ln_target(target), self.ln_source(source), source_pad) + target
        normed = self.ln_self(h)
        h = self.self_attn(normed, normed, target_pad) + h
        return self.ffn(self.ln_ffn(h)) + h


class ContextPool(nn.Module):
    """Eq. 9: ``softmax_m(vᵀ tanh(W x_m + b)) · x_m`` over M candidate contexts ``x_m`` (K·d each).

    ``(B, M, K, d) -> (B, K, d)``.
    """

    def __init__(self, width: int):
        super().__init__()
        self.W = nn.Linear(width, width)
        self.v = nn.Linear(width, 1)

    def forward(self, candidates: torch.Tensor) -> torch.Tensor:
        B, M, K, d = candidates.shape
        flat = candidates.reshape(B, M, K * d)
        alpha = self.v(torch.tanh(self.W(flat))).softmax(dim=1)  # (B, M, 1)
        return (alpha * flat).sum(dim=1).reshape(B, K, d)


class EMT(nn.Module):
    """OAGL fusion (eq. 8, parallel form) with hierarchical sharing (§3.3.4).

    ``locals_ M × (B, T_m, d)``, ``pads M × (B, T_m) | None``, ``G (B, K, d)`` ->
    ``(M × (B, T_m, d), (B, K, d))``. Sub-MPUs are created in the order (layer, modality,
    direction) whenever a key not yet seen appears; direction 0 promotes the local sequence.
    """

    def __init__(self, dim, tokens, modalities, layers, heads, expansion, ffn, attn_dropout, ffn_dropout,
                 share_directions, share_modalities, share_layers, layout="interleaved"):
        super().__init__()
        self.dim, self.layers, self.layout = dim, layers, layout
        index: dict[tuple[int, int, int], int] = {}
        self.where = [[[index.setdefault((0 if share_layers else i, 0 if share_modalities else m, 0 if share_directions else r), len(index))
                        for r in range(2)] for m in range(modalities)] for i in range(layers)]
        self.units = nn.ModuleList(DirectionalMPU(dim, heads, expansion, ffn, attn_dropout, ffn_dropout) for _ in index)
        self.pool_of = [0 if share_layers else i for i in range(layers)]
        self.pools = nn.ModuleList(ContextPool(tokens * dim) for _ in range(1 if share_layers else layers))

    def forward(self, locals_, pads, G):
        H = [x + position_table(x.shape[1], self.dim, self.layout).to(x) for x in locals_]  # H_m^[0] = H_m + PE_m
        for i in range(self.layers):
            promoted = [self.units[self.where[i][m][0]](h, G, pad, None) for m, (h, pad) in enumerate(zip(H, pads))]
            contexts = [self.units[self.where[i][m][1]](G, h, None, pad) for m, (h, pad) in enumerate(zip(H, pads))]
            H, G = promoted, self.pools[self.pool_of[i]](torch.stack(contexts, dim=1))
        return H, G


# -- the prediction network ----------------------------------------------------------------


def valid_steps(batch: dict, name: str) -> torch.Tensor | None:
    """``(B, T)`` True on real steps, from ``<name>_mask`` or ``<name>_lengths`` (or None)."""
    if f"{name}_mask" in batch:
        return batch[f"{name}_mask"].bool()
    if f"{name}_lengths" in batch:
        x = batch[name]
        return torch.arange(x.shape[1], device=x.device)[None, :] < batch[f"{name}_lengths"].to(x.device)[:, None]
    return None


class SequenceEncoder(nn.Module):
    """LSTM over the valid prefix (packed), optionally ``Linear`` on its outputs (authors' AuViSubNet).

    ``(B, T, D), valid (B, T) | None -> H (B, T, w), h (B, w)`` with ``h`` the last valid state.
    """

    def __init__(self, features: int, hidden: int, out: int | None):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.out = nn.Linear(hidden, out) if out is not None else None

    def forward(self, x, valid):
        if valid is None:
            seq, (h_n, _) = self.lstm(x)
        else:
            lengths = valid.sum(dim=1).clamp(min=1).cpu()
            packed, (h_n, _) = self.lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
            seq, _ = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])
        last = h_n[-1]
        if self.out is not None:
            seq, last = self.out(seq), self.out(last)
        return seq, last


class EMTDLFRReference(nn.Module):
    """EMT-DLFR's prediction network (eqs. 1-10); ``forward(batch) -> (B, outputs)``.

    ``features(batch)`` also returns what DLFR reads: ``H_l`` (BERT output), ``h`` (utterance
    vectors, unprojected), ``g`` (B, 3·d), ``Z`` (the promoted local sequences ``H_m^[L]``).
    ``restoration`` (a :class:`Restoration` or None) holds the training-only networks.
    """

    def __init__(self, bert_config, audio: tuple[int, int, int | None], vision: tuple[int, int, int | None], dim: int,
                 emt: dict, head_hidden: list[int], outputs: int, head_dropout: float = 0.0, segment_key: str | None = None):
        super().__init__()
        from transformers import BertModel

        self.segment_key = segment_key
        self.text_encoder = BertModel(bert_config, add_pooling_layer=True)
        self.encoders = nn.ModuleDict({"audio": SequenceEncoder(*audio), "vision": SequenceEncoder(*vision)})
        widths = {"text": bert_config.hidden_size, "audio": audio[2] or audio[1], "vision": vision[2] or vision[1]}
        self.proj = nn.ModuleDict({m: nn.Linear(widths[m], dim, bias=False) for m in MODALITIES})
        self.emt = EMT(dim, len(MODALITIES), len(MODALITIES), **emt)
        self.head_dropout = nn.Dropout(head_dropout)
        sizes = [len(MODALITIES) * dim + sum(widths.values()), *head_hidden, outputs]
        self.head = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.restoration: Restoration | None = None

    def features(self, batch: dict) -> dict:
        ids = batch["text"]
        valid = {m: valid_steps(batch, m) for m in MODALITIES}
        text_valid = valid["text"]
        H_l = self.text_encoder(
            input_ids=ids,
            attention_mask=None if text_valid is None else text_valid.long(),
            token_type_ids=batch.get(self.segment_key) if self.segment_key else None,
        ).last_hidden_state  # (B, T_l, D_l)
        seqs, h = {"text": H_l}, {"text": H_l[:, 0]}  # h_l = [CLS]
        for m in ("audio", "vision"):
            seqs[m], h[m] = self.encoders[m](batch[m], valid[m])
        pads = [None if valid[m] is None else ~valid[m] for m in MODALITIES]
        G0 = torch.stack([self.proj[m](h[m]) for m in MODALITIES], dim=1)  # (B, 3, d)
        Z, G = self.emt([self.proj[m](seqs[m]) for m in MODALITIES], pads, G0)
        g = G.flatten(1)  # (B, 3·d)
        x = self.head_dropout(torch.cat([g, h["text"], h["audio"], h["vision"]], dim=-1))
        for i, layer in enumerate(self.head):
            x = layer(x) if i == len(self.head) - 1 else F.relu(layer(x))
        return {"prediction": x, "g": g, "h": h, "Z": dict(zip(MODALITIES, Z)), "H_l": H_l, "valid": valid}

    def forward(self, batch: dict) -> torch.Tensor:
        return self.features(batch)["prediction"]

    def inference_parameters(self) -> int:
        """Parameters used at inference (Table 9 counts these)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("restoration."))


# -- dual-level feature restoration (eqs. 10-16) --------------------------------------------


def mask_inputs(batch: dict, drops: dict[str, torch.Tensor], unk_token: int = 100) -> dict:
    """The mask function F (§3.1): dropped audio/vision steps -> 0, dropped tokens -> [UNK]."""
    out = dict(batch)
    for m, drop in drops.items():
        x = batch[m]
        out[m] = x.masked_fill(drop, unk_token) if x.dim() == 2 else x.masked_fill(drop[..., None], 0.0)
    return out


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
    """Eq. 12 (elementwise): ``0.5 x²`` where ``|x| < 1``, else ``|x| - 0.5``."""
    a = x.abs()
    return torch.where(a < 1, 0.5 * x * x, a - 0.5)


def neg_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 14, batch mean: ``-xᵀy / (|x| |y|)``."""
    return -((x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))).mean()


class SiameseHeads(nn.Module):
    """SimSiam projector ``p = Linear(D, D) -> BN(affine=False)`` and predictor
    ``q = Linear(D, h, bias=False) -> BN -> ReLU -> Linear(h, D)`` (Fig. 3, authors' code)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.proj_linear = nn.Linear(width, width)
        self.proj_bn = nn.BatchNorm1d(width, affine=False)
        self.pred_in = nn.Linear(width, hidden, bias=False)
        self.pred_bn = nn.BatchNorm1d(hidden)
        self.pred_out = nn.Linear(hidden, width)

    def p(self, x):
        return self.proj_bn(self.proj_linear(x))

    def q(self, z):
        return self.pred_out(F.relu(self.pred_bn(self.pred_in(z))))

    def loss(self, complete: torch.Tensor, incomplete: torch.Tensor) -> torch.Tensor:
        """Eq. 13: ``½ [D(q(p(x̃)), sg(p(x̂))) + D(q(p(x̂)), sg(p(x̃)))]`` (one BN pass per view)."""
        z_hat, z_tilde = self.p(complete), self.p(incomplete)
        return 0.5 * (neg_cosine(self.q(z_tilde), z_hat.detach()) + neg_cosine(self.q(z_hat), z_tilde.detach()))


class Restoration(nn.Module):
    """DLFR's training-only networks and the objective of eq. 16.

    ``decoders[m]``: ``r = Linear(d -> D_m)`` (eq. 11; text target: the complete BERT output);
    ``siamese[k]`` for ``k`` in text, audio, vision, global (eq. 13).
    """

    def __init__(self, dim: int, targets: dict[str, int], utterances: dict[str, int], hidden: dict[str, int],
                 lambda1: float, lambda2: float):
        super().__init__()
        self.lambda1, self.lambda2 = lambda1, lambda2
        self.decoders = nn.ModuleDict({m: nn.Linear(dim, targets[m]) for m in MODALITIES})
        self.siamese = nn.ModuleDict({k: SiameseHeads(w, hidden[k]) for k, w in utterances.items()})

    def terms(self, complete: dict, incomplete: dict, complete_batch: dict, drops: dict[str, torch.Tensor],
              label: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each term of eq. 16 from the two views' :meth:`EMTDLFRReference.features`."""
        y = label.reshape(-1, 1).to(complete["prediction"].dtype)
        out = {"task": (incomplete["prediction"] - y).abs().mean()}  # eq. 10, incomplete view
        for m in MODALITIES:  # eq. 11: only valid steps that were dropped count
            target = complete["H_l"].detach() if m == "text" else complete_batch[m]
            selected = drops[m].bool()
            if complete["valid"][m] is not None:
                selected = selected & complete["valid"][m]
            err = smooth_l1(self.decoders[m](incomplete["Z"][m]) - target) * selected[..., None]
            count = selected.sum() * target.shape[-1]  # averaged over masked elements, as the authors' ReconLoss
            out[f"recon_{m}"] = err.sum() / count.clamp(min=1)
        for m in MODALITIES:
            out[f"attr_{m}"] = self.siamese[m].loss(complete["h"][m], incomplete["h"][m])
        out["attr_global"] = self.siamese["global"].loss(complete["g"], incomplete["g"])
        out["attr_task"] = (complete["prediction"] - y).abs().mean()  # eq. 15's complete-view L1
        return out

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 16: ``L_task + λ1 L_recon + λ2 L_attr``."""
        recon = sum(terms[f"recon_{m}"] for m in MODALITIES)
        attr = sum(terms[f"attr_{k}"] for k in (*MODALITIES, "global")) + terms["attr_task"]
        return terms["task"] + self.lambda1 * recon + self.lambda2 * attr


# -- building from a compiled Composer model ------------------------------------------------

LOSS_TERMS = ("task", "recon_text", "recon_audio", "recon_vision", "attr_text", "attr_audio", "attr_vision", "attr_global", "attr_task")
UNIT_NAMES = {"norm_query": "ln_target", "norm_context": "ln_source", "norm_self": "ln_self", "norm_ffn": "ln_ffn",
              "cross_attn.to_q": "cross.w_q", "cross_attn.to_out": "cross.w_o",
              "self_attn.to_q": "self_attn.w_q", "self_attn.to_out": "self_attn.w_o",
              "ffn.fc1": "ffn.w_in", "ffn.fc2": "ffn.w_out"}
KV_NAMES = {"cross_attn.to_kv.weight": "cross", "self_attn.to_kv.weight": "self_attn"}
POOL_NAMES = {"0": "W", "2": "v"}  # score = Sequential(Linear W, tanh, Linear v)
SIAMESE_NAMES = {"projector.0": "proj_linear", "projector.1": "proj_bn", "predictor.0": "pred_in",
                 "predictor.1": "pred_bn", "predictor.3": "pred_out"}


def _wiring(bp) -> dict:
    """Block ids of the paper's roles in a Composer EMT-DLFR blueprint (fails on other wirings)."""
    emt_in = bp.blocks["emt"].inputs
    roles = {"emt": "emt", "proj": {m: emt_in[m] for m in MODALITIES}}
    text_src = bp.blocks[roles["proj"]["text"]].inputs
    roles["text"] = text_src.split(".")[0]
    assert text_src == f"{roles['text']}.seq", f"text projection reads {text_src}, expected the BERT sequence"
    roles["enc"], roles["post"] = {}, {}
    for m in ("audio", "vision"):
        src = bp.blocks[roles["proj"][m]].inputs
        if src.endswith(".seq"):
            roles["enc"][m], roles["post"][m] = src.split(".")[0], None
        else:  # a Linear after the LSTM (authors' AuViSubNet)
            roles["post"][m] = src
            roles["enc"][m] = bp.blocks[src].inputs.split(".")[0]
    for m in MODALITIES:
        utt = bp.blocks[emt_in[f"{m}_utt"]]
        assert utt.share == roles["proj"][m], f"{emt_in[f'{m}_utt']} must share {roles['proj'][m]} (one W_m for H_m and h_m)"
    head_in = bp.blocks["head"].inputs
    roles["head_dropout"] = bp.blocks[head_in].p if bp.blocks[head_in].type == "dropout" else 0.0
    fused = head_in if bp.blocks[head_in].type == "concat" else bp.blocks[head_in].inputs
    fused_in = list(bp.blocks[fused].inputs)
    assert fused_in[:2] == ["emt.global", f"{roles['text']}.cls"] and len(fused_in) == 4, f"head input {fused_in} is not [g; h_l; h_a; h_v]"
    for m, src in zip(("audio", "vision"), fused_in[2:]):
        last = f"{roles['enc'][m]}.last"
        if roles["post"][m] is None:
            assert src == last, f"h_{m} is {src}, expected {last}"
        else:
            assert bp.blocks[src].share == roles["post"][m] and bp.blocks[src].inputs == last, f"h_{m} must be {roles['post'][m]} on {last}"
        assert bp.blocks[emt_in[f"{m}_utt"]].inputs == src, f"G's {m} token must project h_{m} ({src})"
    return roles


def build_reference(model) -> EMTDLFRReference:
    """A reference with the sizes of a compiled Composer EMT-DLFR model (weights not copied)."""
    bp = model.blueprint
    r = _wiring(bp)
    e, head = bp.blocks["emt"], bp.blocks["head"]
    unsupported = {"strategy": (e.strategy, "oagl"), "pooling": (e.pooling, "attention"), "pool_activation": (e.pool_activation, "tanh"),
                   "qkv_bias": (e.qkv_bias, False), "positions": (e.positions, True), "embed_dropout": (e.embed_dropout, 0.0),
                   "head.activation": (head.activation, "relu"), "head.dropout": (head.dropout, 0.0), "head.residual": (head.residual, False)}
    wrong = {k: v for k, (v, want) in unsupported.items() if v != want}
    assert not wrong, f"the reference implements the paper's EMT-DLFR only; unsupported settings {wrong}"
    dim = bp.blocks[r["proj"]["text"]].out

    def encoder(m):
        post = r["post"][m]
        return bp.modalities[m].features, bp.blocks[r["enc"][m]].hidden, (bp.blocks[post].out if post else None)

    ref = EMTDLFRReference(
        copy.deepcopy(getattr(model, r["text"]).bert.config), encoder("audio"), encoder("vision"), dim,
        dict(layers=e.layers, heads=e.heads, expansion=e.ffn_expansion, ffn=e.ffn, attn_dropout=e.attn_dropout,
             ffn_dropout=e.ffn_dropout, share_directions=e.share_directions, share_modalities=e.share_modalities,
             share_layers=e.share_layers, layout="halves"),
        list(head.hidden), head.out, r["head_dropout"], bp.blocks[r["text"]].segment_key,
    )
    names = [loss.name for loss in bp.losses]
    assert names == list(LOSS_TERMS), f"losses {names} are not eq. 16's terms {list(LOSS_TERMS)}"
    assert all(loss.weight == 1.0 for loss in bp.losses), "eq. 16 has only λ1 and λ2; per-term weights must be 1"
    groups = {loss.name: loss.group for loss in bp.losses}
    assert all(groups[n] == ("lambda1" if n.startswith("recon") else "lambda2") for n in LOSS_TERMS[1:]) and groups["task"] is None
    widths = {"text": ref.text_encoder.config.hidden_size, "audio": ref.proj["audio"].in_features,
              "vision": ref.proj["vision"].in_features, "global": len(MODALITIES) * dim}
    hidden = {k: bp.losses[names.index(f"attr_{k}")].hidden or max(widths[k] // 2, 1) for k in widths}
    targets = {"text": widths["text"], "audio": bp.modalities["audio"].features, "vision": bp.modalities["vision"].features}
    ref.restoration = Restoration(dim, targets, widths, hidden, bp.loss_groups["lambda1"], bp.loss_groups["lambda2"])
    return ref


def weight_map(model) -> list[tuple[str, tuple[str, ...]]]:
    """``[(composer key, (reference keys...)), ...]``: one entry per Composer state-dict key;
    an entry with two reference keys splits the tensor in halves along rows (K then V)."""
    bp = model.blueprint
    r = _wiring(bp)
    names = [loss.name for loss in bp.losses]
    direct = {f"{r['text']}.bert.": "text_encoder."}
    for m in ("audio", "vision"):
        direct[f"{r['enc'][m]}.rnn."] = f"encoders.{m}.lstm."
        if r["post"][m]:
            direct[f"{r['post'][m]}.linear."] = f"encoders.{m}.out."
    for m in MODALITIES:
        direct[f"{r['proj'][m]}.linear."] = f"proj.{m}."
        direct[f"losses.{names.index(f'recon_{m}')}.decoder."] = f"restoration.decoders.{m}."
    head_layers = {f"head.net.{2 * i}.": f"head.{i}." for i in range(len(bp.blocks["head"].hidden) + 1)}
    direct.update(head_layers)
    siamese = {names.index(f"attr_{k}"): k for k in (*MODALITIES, "global")}
    entries = []
    for key in model.state_dict():
        if key.startswith("emt.units."):
            index, rest = re.fullmatch(r"emt\.units\.(\d+)\.(.+)", key).groups()
            if rest in KV_NAMES:
                a = f"emt.units.{index}.{KV_NAMES[rest]}"
                entries.append((key, (f"{a}.w_k.weight", f"{a}.w_v.weight")))
                continue
            module, leaf = rest.rsplit(".", 1)
            entries.append((key, (f"emt.units.{index}.{UNIT_NAMES[module]}.{leaf}",)))
        elif key.startswith("emt.pools."):
            index, part, leaf = re.fullmatch(r"emt\.pools\.(\d+)\.score\.(\d)\.(\w+)", key).groups()
            entries.append((key, (f"emt.pools.{index}.{POOL_NAMES[part]}.{leaf}",)))
        elif (m := re.fullmatch(r"losses\.(\d+)\.((?:projector|predictor)\.\d)\.(\w+)", key)) and int(m[1]) in siamese:
            entries.append((key, (f"restoration.siamese.{siamese[int(m[1])]}.{SIAMESE_NAMES[m[2]]}.{m[3]}",)))
        else:
            prefix = next((p for p in direct if key.startswith(p)), None)
            if prefix is None:
                raise KeyError(f"no reference tensor for Composer weight {key}")
            entries.append((key, (direct[prefix] + key[len(prefix):],)))
    return entries


def reference_for(model) -> EMTDLFRReference:
    """The reference with ``model``'s sizes and a copy of its weights (every key on both sides used once)."""
    ref = build_reference(model).to(next(model.parameters()).dtype)
    source, target = model.state_dict(), ref.state_dict()
    entries = weight_map(model)
    used = [k for _, keys in entries for k in keys]
    missing = sorted(set(target) - set(used))
    extra = sorted(set(used) - set(target))
    twice = sorted({k for k in used if used.count(k) > 1})
    if missing or extra or twice:
        raise KeyError(f"weight map: reference tensors never filled {missing[:5]}, unknown {extra[:5]}, filled twice {twice[:5]}")
    with torch.no_grad():
        for key, keys in entries:
            parts = source[key].chunk(len(keys), dim=0) if len(keys) > 1 else (source[key],)
            for k, part in zip(keys, parts):
                if target[k].shape != part.shape:
                    raise ValueError(f"{key} {tuple(part.shape)} does not fit {k} {tuple(target[k].shape)}")
                target[k].copy_(part)
    return ref
