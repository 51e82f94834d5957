"""MSAF sentiment network in plain PyTorch (Su et al., "MSAF: Multimodal Split Attention
Fusion", §3 and §4.2), written from the paper and the authors' code (anita-hu/MSAF).

Network (the authors' ``MSAFLSTMNet``, ``cmu_mosei/networks/msaf_mosei.py``): per modality a
first LSTM, the MSAF module (RNN variant, §3.2) on the first LSTMs' output sequences, a
second LSTM per modality whose last state is taken, the last states concatenated, a head.

MSAF module, written literally (:class:`SplitAttentionFusion`), for sequences
``x_m (B, T, C_m)`` and ``C`` channels per block, ``C' = ⌊C / r⌋``:

* split (§3): pad the *channel* axis of ``x_m`` with zeros up to ``|B_m| · C`` with
  ``|B_m| = ⌈C_m / C⌉``, then view it as blocks ``(B, T, |B_m|, C)``;
* segments (§3.2): the time axis is cut into ``q`` segments of ``⌊L/q⌋`` steps, the remainder
  in the last. Without lengths ``L = T`` (the authors' aligned files, exactly their
  ``torch.split``); with lengths each sample's ``L_b`` valid steps are cut (docs/masks.md) and
  padded steps are left out of every mean (a sample shorter than ``q`` gets one step per
  segment and empty trailing segments, whose mean is 0); padded steps are scaled like the
  last segment;
* join (eqs. 1-2): ``D_m`` = mean over the segment's steps of the sum of ``m``'s blocks,
  ``G = Σ_m D_m``, ``Z = ReLU(BN(W_Z G + b_Z))``;
* highlight (eqs. 3-6): one ``Linear(C' → C)`` per block, softmax over all ``N = Σ_m |B_m|``
  blocks per channel, ``B̂ = [λ + (1 - λ) A] ⊙ B``, blocks re-joined, padded channels dropped;
* BlockDropout (§3.1), training only, one Bernoulli(1 - p) / (1 - p) factor ``m`` per
  (sample, segment, block): ``paper`` style multiplies the attention, ``A ← m A``, before
  eq. 5; ``authors`` style (``MSAF.py``, ``BlockDropout`` and ``MSAFBlock.forward``)
  multiplies the feature blocks before the join, ``B ← m B`` (so ``G`` and ``A`` see the
  dropped blocks), and the result again: ``B̂ = (m B) ⊙ m ⊙ [λ + (1 - λ) A]``, a dropped
  block is zero for every ``λ``. ``fixed_block_mask`` (``(B, q, N)``) replaces the random draw.

LSTMs: packed by the lengths when the batch has them (the last state is the state at each
sample's last valid step, padded outputs are zero), as Composer documents; the authors read
``x[:, -1]`` of an unpacked LSTM, which is the same thing when there is no padding.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["SplitAttentionFusion", "MSAFSegment", "MSAFLSTMNetwork", "reference_for", "weight_map"]

Tensor = torch.Tensor


# -- the MSAF module -----------------------------------------------------------------------


class MSAFSegment(nn.Module):
    """The learned part of one MSAF block: ``G (B, C) -> A (B, N, C)`` (eqs. 2-4)."""

    def __init__(self, channels: int, reduced: int, blocks: int):
        super().__init__()
        self.join_linear = nn.Linear(channels, reduced)  # W_Z, eq. 2
        self.join_norm = nn.BatchNorm1d(reduced)
        self.highlight = nn.ModuleList(nn.Linear(reduced, channels) for _ in range(blocks))  # W_m^i, eq. 3

    def forward(self, descriptor: Tensor) -> Tensor:
        z = torch.relu(self.join_norm(self.join_linear(descriptor)))  # (B, C')   eq. 2
        logits = torch.stack([w(z) for w in self.highlight], dim=1)  # (B, N, C)   eq. 3
        return logits.softmax(dim=1)  # over all blocks of all modalities   eq. 4


def segment_membership(steps: int, segments: int, lengths: Tensor | None, batch: int, device) -> tuple[Tensor, Tensor]:
    """Which steps belong to which segment (§3.2): ``(averaged, scaled)``, both ``(B, q, T)`` bool.

    ``averaged`` holds the valid steps of each segment (the means of eq. 1); ``scaled``
    additionally gives the padded steps to the last segment (the factor they are scaled by).
    """
    t = torch.arange(steps, device=device)[None, None, :]  # (1, 1, T)
    k = torch.arange(segments, device=device)[None, :, None]  # (1, q, 1)
    length = torch.full((batch,), steps, device=device) if lengths is None else lengths.to(device)
    length = length[:, None, None]  # (B, 1, 1)
    size = (length // segments).clamp(min=1)
    start = k * size
    end = torch.where(k == segments - 1, length, (k + 1) * size)  # the remainder joins the last segment
    averaged = (t >= start) & (t < end) & (t < length)
    last = k == segments - 1
    scaled = averaged | (last & (t >= length))
    return averaged, scaled


class SplitAttentionFusion(nn.Module):
    """MSAF on ``M`` sequences ``(B, T, C_m)`` -> ``M`` sequences of the same shapes (eqs. 1-6, §3.1-3.2)."""

    def __init__(self, widths: list[int], channels: int, reduction: int, segments: int,
                 lowest_attention: float, block_dropout: float, style: str):
        super().__init__()
        if style not in ("paper", "authors"):
            raise ValueError(f"unknown BlockDropout style {style!r}")
        self.widths, self.channels, self.q = widths, channels, segments
        self.lam, self.p, self.style = lowest_attention, block_dropout, style
        self.block_counts = [math.ceil(w / channels) for w in widths]  # |B_m|
        blocks = sum(self.block_counts)
        self.segments = nn.ModuleList(MSAFSegment(channels, channels // reduction, blocks) for _ in range(segments))
        self.fixed_block_mask: Tensor | None = None  # (B, q, N): replaces the Bernoulli draw when set

    def block_mask(self, batch: int, like: Tensor) -> Tensor | None:
        """BlockDropout factors ``(B, q, N)``: 0 or ``1/(1-p)`` per (sample, segment, block), training only."""
        if not (self.training and self.p > 0):
            return None
        if self.fixed_block_mask is not None:
            return self.fixed_block_mask
        keep = torch.bernoulli(torch.full((batch, self.q, sum(self.block_counts)), 1.0 - self.p, device=like.device))
        return keep.to(like.dtype) / (1.0 - self.p)

    def forward(self, xs: list[Tensor], lengths: list[Tensor | None]) -> list[Tensor]:
        """``xs[m] (B, T_m, C_m)`` with valid steps ``lengths[m] (B,)`` (None: all) -> same shapes."""
        C = self.channels
        batch = xs[0].shape[0]
        blocks = [F.pad(x, (0, n * C - x.shape[2])).unflatten(2, (n, C)) for x, n in zip(xs, self.block_counts)]  # (B, T, |B_m|, C)
        members = [segment_membership(x.shape[1], self.q, l, batch, x.device) for x, l in zip(xs, lengths)]  # 2 x (B, q, T_m)
        drop = self.block_mask(batch, xs[0])  # (B, q, N) or None
        outputs = [torch.zeros_like(b) for b in blocks]
        for k, core in enumerate(self.segments):
            m = drop[:, k].split(self.block_counts, dim=1) if drop is not None else [None] * len(blocks)  # (B, |B_m|)
            if self.style == "authors" and drop is not None:
                seen = [b * mk[:, None, :, None] for b, mk in zip(blocks, m)]  # blocks dropped before the join
            else:
                seen = blocks
            descriptor = 0.0
            for b, (averaged, _) in zip(seen, members):
                weights = averaged[:, k].to(b.dtype)  # (B, T_m)
                count = weights.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1); an empty segment averages to 0
                descriptor = descriptor + (b.sum(dim=2) * weights[..., None]).sum(dim=1) / count  # + D_m (B, C)   eq. 1
            attention = core(descriptor)  # (B, N, C)
            if drop is not None and self.style == "paper":
                attention = attention * drop[:, k, :, None]  # the mask on the attention (§3.1)
            factor = self.lam + (1.0 - self.lam) * attention  # eq. 5
            for i, (b, f, (_, scaled)) in enumerate(zip(seen, factor.split(self.block_counts, dim=1), members)):
                out = b * f[:, None]  # (B, T, |B_m|, C)
                if drop is not None and self.style == "authors":
                    out = out * m[i][:, None, :, None]  # the authors multiply by the mask again
                outputs[i] = torch.where(scaled[:, k, :, None, None], out, outputs[i])
        return [o.flatten(2)[..., :w] for o, w in zip(outputs, self.widths)]  # eq. 6, padded channels dropped


# -- the network ---------------------------------------------------------------------------


def run_lstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(B, T, D)`` -> outputs ``(B, T, H)`` (zero at padded steps) and the last valid state ``(B, H)``."""
    if lengths is None:
        seq, _ = lstm(x)
        return seq, seq[:, -1]  # the authors' x[:, -1]
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, (h_n, _) = lstm(packed)
    seq, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return seq, h_n[-1]


class MSAFLSTMNetwork(nn.Module):
    """LSTM -> MSAF -> LSTM (last state) per modality, concatenation, MLP head (§4.2).

    ``modalities``: ``[(batch key, time symbol, in features, hidden 1, hidden 2)]`` in the
    MSAF module's port order; ``order``: the modality indices in the concatenation's order;
    ``lookup``: ``[(batch key, time symbol)]`` of every sequence modality in blueprint order,
    where a time symbol's padding is looked up. ``forward(batch) -> (B, outputs)``.
    """

    def __init__(self, modalities: list[tuple[str, str, int, int, int]], order: list[int], lookup: list[tuple[str, str]],
                 msaf: dict, head_hidden: list[int], head_dropout: float, outputs: int):
        super().__init__()
        self.keys = [m[0] for m in modalities]
        self.times = [m[1] for m in modalities]
        self.lookup = lookup
        self.order = order
        self.layer1 = nn.ModuleList(nn.LSTM(d, h1, batch_first=True) for _, _, d, h1, _ in modalities)
        self.layer2 = nn.ModuleList(nn.LSTM(h1, h2, batch_first=True) for _, _, _, h1, h2 in modalities)
        self.msaf = SplitAttentionFusion([m[3] for m in modalities], **msaf)
        layers: list[nn.Module] = []
        width = sum(m[4] for m in modalities)
        for h in head_hidden:
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(head_dropout)] if head_dropout else [])
            width = h
        self.head = nn.Sequential(*layers, nn.Linear(width, outputs))

    def _lengths(self, batch: dict[str, Tensor]) -> list[Tensor | None]:
        """Valid steps per modality: those of its time symbol, from the first modality on it with a mask or lengths."""
        by_symbol: dict[str, Tensor] = {}
        for key, symbol in self.lookup:
            if symbol in by_symbol:
                continue
            if f"{key}_mask" in batch:
                by_symbol[symbol] = batch[f"{key}_mask"].sum(dim=1)  # masks are prefixes (docs/masks.md)
            elif f"{key}_lengths" in batch:
                by_symbol[symbol] = batch[f"{key}_lengths"]
        return [by_symbol.get(symbol) for symbol in self.times]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        lengths = self._lengths(batch)
        first = [run_lstm(lstm, batch[k], l)[0] for lstm, k, l in zip(self.layer1, self.keys, lengths)]  # (B, T, H1_m)
        fused = self.msaf(first, lengths)
        last = [run_lstm(lstm, x, l)[1] for lstm, x, l in zip(self.layer2, fused, lengths)]  # (B, H2_m)
        return self.head(torch.cat([last[i] for i in self.order], dim=-1))  # (B, outputs)


# -- from a compiled Composer model --------------------------------------------------------


def _lstm_entries(composer_id: str, ref_prefix: str) -> dict[str, Callable]:
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    return {f"{composer_id}.rnn.{n}": (lambda t, r=f"{ref_prefix}.{n}": {r: t}) for n in names}


def weight_map(model) -> dict[str, Callable[[Tensor], dict[str, Tensor]]]:
    """Composer state-dict key -> function of its tensor giving the reference's tensors.

    Every key of both state dicts appears exactly once (``reference_for`` checks it). The
    stacked ``highlight`` map of each segment, ``Linear(C' → N·C)``, is split into the
    ``N`` per-block maps of eq. 3 (block ``i`` = rows ``i·C … (i+1)·C - 1``).
    """
    plan = _plan(model.blueprint)
    entries: dict[str, Callable] = {}
    for i, (l1, l2) in enumerate(zip(plan["layer1"], plan["layer2"])):
        entries.update(_lstm_entries(l1, f"layer1.{i}"))
        entries.update(_lstm_entries(l2, f"layer2.{i}"))
    C = plan["msaf"]["channels"]
    for k in range(plan["msaf"]["segments"]):
        src, dst = f"{plan['msaf_id']}.segment.{k}", f"msaf.segments.{k}"
        for field in ["weight", "bias"]:
            entries[f"{src}.join.0.{field}"] = lambda t, r=f"{dst}.join_linear.{field}": {r: t}
        for field in ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]:
            entries[f"{src}.join.1.{field}"] = lambda t, r=f"{dst}.join_norm.{field}": {r: t}
        for field in ["weight", "bias"]:
            entries[f"{src}.highlight.{field}"] = lambda t, r=f"{dst}.highlight", f=field: _split_blocks(t, r, f, C)
    stride = 3 if plan["head_dropout"] and plan["head_hidden"] else 2  # Linear, ReLU[, Dropout] per hidden layer
    for j in range(len(plan["head_hidden"]) + 1):
        for field in ["weight", "bias"]:
            entries[f"{plan['head_id']}.net.{stride * j}.{field}"] = lambda t, r=f"head.{stride * j}.{field}": {r: t}
    return entries


def _split_blocks(t: Tensor, prefix: str, field: str, channels: int) -> dict[str, Tensor]:
    return {f"{prefix}.{i}.{field}": part for i, part in enumerate(t.split(channels, dim=0))}


def _plan(bp) -> dict:
    """The network's wiring and sizes, read from the blueprint (attribute access only)."""
    blocks = bp.blocks
    msaf_ids = [b for b, cfg in blocks.items() if cfg.type == "msaf" and cfg.enabled]
    if len(msaf_ids) != 1:
        raise ValueError(f"the MSAF reference needs exactly one enabled msaf block, found {msaf_ids}")
    msaf_id = msaf_ids[0]
    cfg = blocks[msaf_id]
    ports = cfg.input_map()
    layer1 = list(ports.values())
    consumers = {ref: b for b, c in blocks.items() for ref in c.input_map().values()}
    layer2 = [consumers[f"{msaf_id}.{port}"] for port in ports]
    for b in layer1 + layer2:
        c = blocks[b]
        if c.type != "lstm" or c.layers != 1 or c.bidirectional or not c.packed or c.share is not None:
            raise ValueError(f"block {b}: the reference has single-layer, unidirectional, packed LSTMs")
    if any(blocks[b].output != "last" for b in layer2):
        raise ValueError("the second LSTMs must give their last state")
    keys = [blocks[b].input_map()["in"] for b in layer1]
    concat_id = consumers[layer2[0]]
    order = [layer2.index(ref) for ref in blocks[concat_id].input_map().values()]
    head_id = consumers[concat_id]
    head = blocks[head_id]
    if blocks[concat_id].type != "concat" or head.type != "mlp" or head.residual or head.activation != "relu":
        raise ValueError("the reference ends in concat -> mlp (relu, no residual)")
    modalities = [
        (key, bp.modalities[key].time or f"T_{key}", bp.modalities[key].features, blocks[a].hidden, blocks[b].hidden)
        for key, a, b in zip(keys, layer1, layer2)
    ]
    msaf = {
        "channels": cfg.channels, "reduction": cfg.reduction, "segments": cfg.segments,
        "lowest_attention": cfg.lowest_attention, "block_dropout": cfg.block_dropout, "style": cfg.block_dropout_style,
    }
    lookup = [(name, m.time or f"T_{name}") for name, m in bp.modalities.items() if m.kind in ("sequence", "tokens")]
    return {"msaf_id": msaf_id, "layer1": layer1, "layer2": layer2, "order": order, "modalities": modalities, "lookup": lookup,
            "msaf": msaf, "head_id": head_id, "head_hidden": list(head.hidden), "head_dropout": head.dropout,
            "outputs": head.out}


def reference_for(model) -> MSAFLSTMNetwork:
    """A reference with the compiled Composer ``model``'s sizes and a copy of its weights (and BN statistics)."""
    plan = _plan(model.blueprint)
    ref = MSAFLSTMNetwork(plan["modalities"], plan["order"], plan["lookup"], plan["msaf"], plan["head_hidden"], plan["head_dropout"], plan["outputs"])
    source = model.state_dict()
    entries = weight_map(model)
    unmapped = sorted(set(source) - set(entries))
    missing = sorted(set(entries) - set(source))
    if unmapped or missing:
        raise KeyError(f"MSAF name map: Composer keys without a mapping {unmapped}; mapped keys Composer lacks {missing}")
    target: dict[str, Tensor] = {}
    for key, convert in entries.items():
        for name, tensor in convert(source[key]).items():
            if name in target:
                raise KeyError(f"MSAF name map: reference key {name} filled twice")
            target[name] = tensor.clone()
    expected = set(ref.state_dict())
    if set(target) != expected:
        raise KeyError(f"MSAF name map: reference keys not filled {sorted(expected - set(target))}, "
                       f"unknown {sorted(set(target) - expected)}")
    for name, tensor in ref.state_dict().items():
        if tensor.shape != target[name].shape:
            raise ValueError(f"MSAF name map: {name} is {tuple(tensor.shape)}, Composer gives {tuple(target[name].shape)}")
    ref.load_state_dict(target)
    return ref.train(model.training)
