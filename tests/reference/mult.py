"""MulT (Tsai et al., ACL 2019) in plain PyTorch, as the public code yaohungt/Multimodal-Transformer
computes it (``src/models.py``, ``modules/transformer.py``, ``modules/multihead_attention.py``,
``modules/position_embedding.py``), plus the padding rules Composer documents (docs/masks.md).

The network, for modalities ``m ∈ {text, audio, vision}`` (``x_m (B, T_m, D_m)``):

* projection: ``Conv1d(D_m → d, kernel, bias=False)`` over time (kernel 1 in MulT; an odd kernel
  is zero-padded ``(k-1)/2`` on each side, Composer's ``same``), padded steps zeroed first;
* six crossmodal transformers ``CM(s → t)`` (MulT eqs. 3-4): the embedding
  ``√d · x + PE`` (sinusoidal, sin | cos halves, positions 1..T) with dropout, of the target
  (query) and, separately, of the source (key and value); per layer pre-LN with *one*
  LayerNorm for query, key and value, ``softmax(q kᵀ / √h_d + M) v`` over ``h`` heads, the output
  projection, a residual; then ``x + fc2(ReLU(fc1(LN(x))))`` (``d → 4d → d``); a final LayerNorm;
  the source is not updated across layers;
* ``M`` = MulT's future mask ``triu(-inf, 1 + |T_k - T_q|)`` on the padded lengths (when
  ``causal``) plus ``-inf`` on padded keys (Composer's key padding; the public code has none);
* per target ``t`` a self-attention "memory" transformer over ``[CM(s1 → t); CM(s2 → t)]``
  (width ``2d``), and its last valid step (the public code takes ``h[-1]``, the last padded step);
* the residual head ``out(z + proj2(dropout(ReLU(proj1(z)))))`` on ``z = [h_t; h_a; h_v]`` (``6d``).

:func:`reference_for` builds it with the sizes of a compiled Composer MulT blueprint
(``blueprints/mult.yaml`` and its variants: block ids ``proj_*``, ``cm_*_*``, ``mem_*``, ``head``)
and copies the weights through an explicit name map (:func:`copy_weights`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODALITIES",
    "MulTReference",
    "ReferenceTransformer",
    "ResidualHead",
    "reference_for",
    "head_names",
    "copy_weights",
    "transformer_names",
    "transformer_settings",
    "valid_mask",
    "key_padding_bias",
    "last_valid",
]

MODALITIES = ("text", "audio", "vision")
SHORT = {"text": "t", "audio": "a", "vision": "v"}


# -- masks and pooling ------------------------------------------------------------------------


def valid_mask(batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """``(B, T)`` bool, True = a real step, from ``<name>_mask`` or ``<name>_lengths`` (all valid without)."""
    x = batch[name]
    if f"{name}_mask" in batch:
        return batch[f"{name}_mask"].bool()
    if f"{name}_lengths" in batch:
        lengths = batch[f"{name}_lengths"].to(x.device)
        return torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def key_padding_bias(valid: torch.Tensor) -> torch.Tensor:
    """``(B, Tk)`` valid keys -> additive ``(B, 1, 1, Tk)`` bias, ``-inf`` on padded keys.

    A sample without any valid step keeps every key (its outputs are meaningless, never NaN).
    """
    blocked = ~valid & valid.any(dim=1, keepdim=True)
    bias = torch.zeros(blocked.shape, dtype=torch.float32, device=valid.device).masked_fill(blocked, float("-inf"))
    return bias[:, None, None, :]


def future_bias(query_len: int, key_len: int, device) -> torch.Tensor:
    """MulT's ``buffered_future_mask``: ``(Tq, Tk)`` with ``-inf`` where ``j > i + |Tk - Tq|``."""
    ones = torch.full((query_len, key_len), float("-inf"), device=device)
    return torch.triu(ones, 1 + abs(key_len - query_len))


def last_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, D)``: each sample's step ``length - 1`` (zeros for an empty sample)."""
    lengths = valid.sum(dim=1)
    rows = torch.arange(x.shape[0], device=x.device)
    picked = x[rows, (lengths - 1).clamp(min=0)]  # (B, D)
    return picked * (lengths > 0)[:, None].to(x.dtype)


def sinusoidal_table(length: int, dim: int, device=None) -> torch.Tensor:
    """fairseq's sinusoidal embedding for positions ``1..length``: ``(T, dim)`` = [sin | cos] (+ a zero column if odd)."""
    half = dim // 2
    step = math.log(10000.0) / (half - 1)
    inv = torch.exp(-step * torch.arange(half, dtype=torch.float32, device=device))  # (half,)
    angles = torch.arange(1, length + 1, dtype=torch.float32, device=device)[:, None] * inv[None, :]  # (T, half)
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table


# -- the MulT transformer ---------------------------------------------------------------------


class MultiheadAttention(nn.Module):
    """fairseq/MulT attention: ``in_proj_weight (3d, d)`` split into q | k | v, ``q`` scaled by ``h_d^-1/2``."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``query (B, Tq, d)``, ``key, value (B, Tk, d)``, additive ``bias`` broadcastable to ``(B, h, Tq, Tk)``."""
        d, h = self.dim, self.heads
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(query, w[:d], b[:d]) * (d // h) ** -0.5
        k = F.linear(key, w[d : 2 * d], b[d : 2 * d])
        v = F.linear(value, w[2 * d :], b[2 * d :])
        heads = lambda t: t.reshape(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)  # (B, T, d) -> (B, h, T, d/h)
        scores = heads(q) @ heads(k).transpose(-1, -2)  # (B, h, Tq, Tk)
        if bias is not None:
            scores = scores + bias
        weights = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        out = (weights @ heads(v)).transpose(1, 2).reshape(query.shape)  # (B, Tq, d)
        return self.out_proj(out)


class ReferenceLayer(nn.Module):
    """``x + Drop(Attn(LN_a(x), LN_a(k), LN_a(v)))`` then ``x + Drop(fc2(Drop(ReLU(fc1(LN_f(x))))))``."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attention = MultiheadAttention(dim, heads, attn_dropout)
        self.ln_attention = nn.LayerNorm(dim)
        self.ln_ffn = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(self, x, key, value, bias):
        q = self.ln_attention(x)
        k = q if key is None else self.ln_attention(key)
        v = q if value is None else self.ln_attention(value)
        x = x + F.dropout(self.attention(q, k, v, bias), self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.ln_ffn(x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class ReferenceTransformer(nn.Module):
    """MulT's ``TransformerEncoder``: ``x (B, Tq, d)``, optional ``source (B, Tk, d)`` -> ``(B, Tq, d)``.

    ``source_valid (B, Tk)`` (or the query's own mask for self-attention) gives the key padding.
    """

    def __init__(self, dim: int, heads: int, layers: int, *, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0,
                 embed_dropout=0.0, causal=False, positions=True):
        super().__init__()
        self.dim, self.embed_dropout, self.causal, self.positions = dim, embed_dropout, causal, positions
        self.layers = nn.ModuleList(
            ReferenceLayer(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = math.sqrt(self.dim) * x
        if self.positions:
            x = x + sinusoidal_table(x.shape[1], self.dim, x.device)[None]
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None, key_valid: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        key = value = None
        if source is not None:
            key, value = self.embed(source), self.embed(source)  # embedded separately, as the public code does
        key_len = x.shape[1] if source is None else source.shape[1]
        bias = key_padding_bias(key_valid)  # (B, 1, 1, Tk)
        if self.causal:
            bias = bias + future_bias(x.shape[1], key_len, x.device)  # (B, 1, Tq, Tk)
        for layer in self.layers:
            x = layer(x, key, value, bias)
        return self.final_norm(x)


def transformer_names(composer_prefix: str, reference_prefix: str, layers: int) -> dict[str, str]:
    """Name map of one Composer ``MulTEncoder`` (``<prefix>.layers.i...``) onto a :class:`ReferenceTransformer`."""
    per_layer = {
        "attn.in_proj_weight": "attention.in_proj_weight",
        "attn.in_proj_bias": "attention.in_proj_bias",
        "attn.out_proj.weight": "attention.out_proj.weight",
        "attn.out_proj.bias": "attention.out_proj.bias",
        "fc1.weight": "fc1.weight",
        "fc1.bias": "fc1.bias",
        "fc2.weight": "fc2.weight",
        "fc2.bias": "fc2.bias",
        "norms.0.weight": "ln_attention.weight",
        "norms.0.bias": "ln_attention.bias",
        "norms.1.weight": "ln_ffn.weight",
        "norms.1.bias": "ln_ffn.bias",
    }
    names = {
        f"{composer_prefix}.layers.{i}.{ours}": f"{reference_prefix}.layers.{i}.{theirs}"
        for i in range(layers)
        for ours, theirs in per_layer.items()
    }
    names[f"{composer_prefix}.norm.weight"] = f"{reference_prefix}.final_norm.weight"
    names[f"{composer_prefix}.norm.bias"] = f"{reference_prefix}.final_norm.bias"
    return names


def transformer_settings(config, layers: int | None = None) -> dict:
    """Keyword arguments of :class:`ReferenceTransformer` from a block config (attribute access)."""
    return dict(
        layers=config.layers if layers is None else layers,
        attn_dropout=config.attn_dropout,
        relu_dropout=config.relu_dropout,
        res_dropout=config.res_dropout,
        embed_dropout=config.embed_dropout,
        causal=config.causal,
        positions=config.positions,
    )


# -- the residual head and the weight copy ----------------------------------------------------


class ResidualHead(nn.Module):
    """MulT's head: ``out_layer(z + proj2(Drop(ReLU(proj1(z)))))``: ``(B, c) -> (B, outputs)``."""

    def __init__(self, width: int, hidden: int, outputs: int, dropout: float):
        super().__init__()
        self.proj1 = nn.Linear(width, hidden)
        self.proj2 = nn.Linear(hidden, width)
        self.out_layer = nn.Linear(width, outputs)
        self.dropout = dropout

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.proj1(z)), self.dropout, self.training)
        return self.out_layer(z + self.proj2(h))


def head_names(composer_prefix: str, reference_prefix: str, config) -> dict[str, str]:
    """Composer's ``mlp`` Sequential is Linear, ReLU, [Dropout], Linear: the second Linear's index moves."""
    second = 3 if config.dropout else 2
    return {
        f"{composer_prefix}.residual.0.weight": f"{reference_prefix}.proj1.weight",
        f"{composer_prefix}.residual.0.bias": f"{reference_prefix}.proj1.bias",
        f"{composer_prefix}.residual.{second}.weight": f"{reference_prefix}.proj2.weight",
        f"{composer_prefix}.residual.{second}.bias": f"{reference_prefix}.proj2.bias",
        f"{composer_prefix}.out.weight": f"{reference_prefix}.out_layer.weight",
        f"{composer_prefix}.out.bias": f"{reference_prefix}.out_layer.bias",
    }


def copy_weights(reference: nn.Module, model: nn.Module, names: dict[str, str], not_copied: frozenset[str] = frozenset()) -> nn.Module:
    """Copy ``model``'s state into ``reference`` through ``names`` (Composer key -> reference key).

    Every Composer key must be mapped (or listed in ``not_copied``), every reference key must be
    the target of exactly one Composer key, and shapes must agree; otherwise a ``KeyError`` lists
    every problem. Returns ``reference``, with the map kept as ``reference.composer_names``.
    """
    source, target = model.state_dict(), reference.state_dict()
    targets = list(names.values())
    problems = [f"Composer key not mapped: {k}" for k in source if k not in names and k not in not_copied]
    problems += [f"mapped Composer key does not exist: {k}" for k in names if k not in source]
    problems += [f"reference key does not exist: {v}" for v in targets if v not in target]
    problems += [f"reference key not filled: {k}" for k in target if k not in targets]
    problems += [f"reference key filled twice: {v}" for v in sorted(set(targets)) if targets.count(v) > 1]
    problems += [
        f"shape of {k} {tuple(source[k].shape)} != {v} {tuple(target[v].shape)}"
        for k, v in names.items()
        if k in source and v in target and source[k].shape != target[v].shape
    ]
    if problems:
        raise KeyError("weight copy failed:\n  " + "\n  ".join(problems))
    reference.load_state_dict({v: source[k] for k, v in names.items()}, strict=True)
    reference.composer_names = dict(names)
    return reference


# -- MulT -------------------------------------------------------------------------------------


class MulTReference(nn.Module):
    """MulT on ``batch = {text, audio, vision (B, T_m, D_m), <m>_lengths | <m>_mask}`` -> ``(B, outputs)``.

    ``features``: ``D_m`` per modality; ``dim``: d; ``kernel``: Conv1d kernel per modality;
    ``crossmodal[(t, s)]`` / ``memory[t]``: :class:`ReferenceTransformer` settings (heads, layers,
    dropouts, causal); ``text_dropout``: dropout on the raw text features (MulT uses its
    ``embed_dropout`` there, MMSA its ``text_dropout``); ``head``: (hidden, outputs, dropout).
    """

    def __init__(self, features: dict[str, int], dim: int, kernel: dict[str, int], crossmodal: dict, memory: dict,
                 head: tuple[int, int, float], text_dropout: float = 0.0):
        super().__init__()
        self.kernel = kernel
        self.text_dropout = text_dropout
        self.proj = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(dim, features[m], kernel[m])) for m in MODALITIES}
        )  # Conv1d weights (d, D_m, k), no bias
        for w in self.proj.values():
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.crossmodal = nn.ModuleDict(
            {f"{t}_{s}": ReferenceTransformer(dim, **settings) for (t, s), settings in crossmodal.items()}
        )
        self.memory = nn.ModuleDict({t: ReferenceTransformer(2 * dim, **settings) for t, settings in memory.items()})
        hidden, outputs, dropout = head
        self.head = ResidualHead(6 * dim, hidden, outputs, dropout)

    def project(self, x: torch.Tensor, valid: torch.Tensor, name: str) -> torch.Tensor:
        """``(B, T, D) -> (B, T, d)``: Conv1d over time on the zero-padded sequence, ``(k-1)/2`` zeros per side."""
        k = self.kernel[name]
        x = x * valid[..., None].to(x.dtype)
        h = F.conv1d(x.transpose(1, 2), self.proj[name], padding=(k - 1) // 2)  # (B, d, T)
        return h.transpose(1, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        valid = {m: valid_mask(batch, m) for m in MODALITIES}
        x = {m: batch[m] for m in MODALITIES}
        x["text"] = F.dropout(x["text"], self.text_dropout, self.training)
        h = {m: self.project(x[m], valid[m], m) for m in MODALITIES}  # (B, T_m, d)
        last = []
        for t in MODALITIES:
            s1, s2 = (s for s in MODALITIES if s != t)
            enhanced = torch.cat(
                [self.crossmodal[f"{t}_{s}"](h[t], h[s], valid[s]) for s in (s1, s2)], dim=-1
            )  # (B, T_t, 2d): CM(s1 -> t) | CM(s2 -> t)
            memory = self.memory[t](enhanced, None, valid[t])  # (B, T_t, 2d)
            last.append(last_valid(memory, valid[t]))
        return self.head(torch.cat(last, dim=-1))  # (B, 6d) -> (B, outputs)


def reference_for(model) -> MulTReference:
    """A :class:`MulTReference` with the sizes and the weights of a compiled Composer MulT model."""
    bp = model.blueprint
    blocks = bp.blocks
    proj = {m: blocks[f"proj_{SHORT[m]}"] for m in MODALITIES}
    dims = {p.out for p in proj.values()}
    assert len(dims) == 1, f"MulT needs d_l = d_a = d_v, got {dims}"
    for p in proj.values():
        assert not p.bias and p.stride == 1 and p.dilation == 1 and p.kernel % 2 == 1 and p.padding in ("same", (p.kernel - 1) // 2), p
    text_input = proj["text"].inputs
    text_dropout = blocks[text_input].p if text_input in blocks and blocks[text_input].type == "dropout" else 0.0
    crossmodal, memory = {}, {}
    names: dict[str, str] = {}
    for t in MODALITIES:
        for s in MODALITIES:
            if s == t:
                continue
            block_id = f"cm_{SHORT[t]}_{SHORT[s]}"
            config = blocks[block_id]
            assert config.dim is None, "the reference has no extra crossmodal input projection"
            crossmodal[(t, s)] = dict(heads=config.heads, **transformer_settings(config))
            names.update(transformer_names(f"{block_id}.encoder", f"crossmodal.{t}_{s}", config.layers))
        config = blocks[f"mem_{SHORT[t]}"]
        assert config.dim is None
        memory[t] = dict(heads=config.heads, **transformer_settings(config))
        names.update(transformer_names(f"mem_{SHORT[t]}.encoder", f"memory.{t}", config.layers))
    head = blocks["head"]
    assert len(head.hidden) == 1 and head.residual and head.activation == "relu", f"not MulT's head: {head}"
    reference = MulTReference(
        {m: bp.modalities[m].features for m in MODALITIES},
        dims.pop(),
        {m: proj[m].kernel for m in MODALITIES},
        crossmodal,
        memory,
        (int(head.hidden[0]), head.out, head.dropout),
        text_dropout,
    )
    names.update({f"proj_{SHORT[m]}.conv.weight": f"proj.{m}" for m in MODALITIES})
    names.update(head_names("head", "head", head))
    return copy_weights(reference, model, names)
