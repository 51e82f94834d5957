"""MSAF module (Multimodal Split Attention Fusion, Su et al., §3): split attention over feature
blocks of all modalities, BlockDropout and time segments (config, shapes and equations:
:mod:`composer.configs.fusion.msaf`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Block, Context
from composer.blocks.pooling import masked_pool
from composer.configs.fusion.msaf import MSAFConfig
from composer.errors import DataError
from composer.spec import Spec

__all__ = ["MSAF", "SplitAttention", "block_dropout_mask", "segment_ids", "valid_segment_ids"]


# -- pieces ------------------------------------------------------------------------------


class SplitAttention(nn.Module):
    """One MSAF block's learned part: ``G (B, C) -> A (B, N, C)`` (eqs. 2-4).

    ``join`` is ``Linear(C → C') → BatchNorm1d(C') → ReLU`` (eq. 2). The ``N`` per-block maps
    ``W_m^i (C × C')`` of eq. 3 are stacked into one ``Linear(C' → N·C)``: the same parameters
    and initialisation (fan-in ``C'`` either way), one matrix product. Softmax over the ``N``
    blocks, per channel (eq. 4).
    """

    def __init__(self, channels: int, reduced: int, blocks: int):
        super().__init__()
        self.channels, self.blocks = channels, blocks
        self.join = nn.Sequential(nn.Linear(channels, reduced), nn.BatchNorm1d(reduced), nn.ReLU())
        self.highlight = nn.Linear(reduced, blocks * channels)

    def forward(self, descriptor: torch.Tensor) -> torch.Tensor:
        joint = self.join(descriptor)  # (B, C) -> (B, C')   eq. 2
        logits = self.highlight(joint).view(-1, self.blocks, self.channels)  # (B, N·C) -> (B, N, C)   eq. 3
        return logits.softmax(dim=1)  # over all blocks of all modalities, per channel   eq. 4


def block_dropout_mask(shape: tuple[int, ...], p: float, *, like: torch.Tensor) -> torch.Tensor:
    """BlockDropout (§3.1): Bernoulli(1 - p) samples scaled by ``1 / (1 - p)``, of ``shape``."""
    keep = torch.full(shape, 1.0 - p, dtype=like.dtype, device=like.device)
    return torch.bernoulli(keep) / (1.0 - p)


def segment_ids(steps: int, segments: int, device: torch.device | None = None) -> torch.Tensor:
    """Segment index of each of ``steps`` time steps: ``⌊S/q⌋`` steps each, remainder in the last (§3.2)."""
    if steps < segments:
        raise DataError(f"msaf: a time axis of {steps} steps cannot be cut into {segments} segments (set segments <= {steps})")
    return (torch.arange(steps, device=device) // (steps // segments)).clamp(max=segments - 1)  # (S,)


def valid_segment_ids(lengths: torch.Tensor, steps: int, segments: int) -> torch.Tensor:
    """Per-sample segments of the *valid* steps: ``(B,)`` lengths -> ``(B, S)`` segment indices.

    Sample ``b`` with ``L_b`` valid steps is cut as :func:`segment_ids` cuts an unpadded axis of
    ``L_b`` steps (``⌊L_b/q⌋`` each, the remainder in the last), so its segments do not move when
    the batch is padded further. Padded steps get the last segment (they are excluded from every
    mean by the mask). A sample shorter than ``q`` steps gets one step per segment and empty
    segments at the end (their mean is 0).
    """
    size = (lengths.clamp(min=1) // segments).clamp(min=1)[:, None]  # (B, 1)
    t = torch.arange(steps, device=lengths.device)[None, :]  # (1, S)
    return (t // size).clamp(max=segments - 1)  # (B, S)


def _segment_means(x: torch.Tensor, mask: torch.Tensor | None, segments: int) -> torch.Tensor:
    """``(B, S, C)`` -> ``(B, q, C)``: mean of each time segment over its valid steps (eq. 1)."""
    if segments == 1:
        return masked_pool(x, mask, "mean")[:, None]  # (B, 1, C)
    if mask is None:
        onehot = F.one_hot(segment_ids(x.shape[1], segments, x.device), segments).to(x.dtype)[None]  # (1, S, q)
        weights = onehot.expand(x.shape[0], -1, -1)
    else:
        ids = valid_segment_ids(mask.sum(dim=1), x.shape[1], segments)  # (B, S)
        weights = F.one_hot(ids, segments).to(x.dtype) * mask[:, :, None].to(x.dtype)  # (B, S, q)
    totals = torch.einsum("bsc,bsq->bqc", x, weights)  # (B, q, C)
    counts = weights.sum(dim=1).clamp(min=1.0)  # (B, q); an all-padding segment averages to 0
    return totals / counts[..., None]


def _per_step(scale: torch.Tensor, steps: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Segment factors ``(B, q, C)`` -> per-step factors ``(B, S, C)`` (segments of the valid steps)."""
    q = scale.shape[1]
    if mask is None:
        return scale[:, segment_ids(steps, q, scale.device)]  # (B, S, C)
    ids = valid_segment_ids(mask.sum(dim=1), steps, q)  # (B, S)
    return scale.gather(1, ids[..., None].expand(-1, -1, scale.shape[2]))  # (B, S, C)


# -- the block ---------------------------------------------------------------------------


class MSAF(Block):
    """Multimodal Split Attention Fusion, eqs. 1-6 (:class:`~composer.configs.fusion.msaf.MSAFConfig`).

    The softmax attention of the last forward pass is kept (detached) in ``self.attention``
    ``(B, q, N, C)``; ``attention_by_modality()`` splits it per input port.
    """

    def __init__(self, config: MSAFConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports = list(inputs)
        self.widths = [int(spec.features) for spec in inputs.values()]  # C_m
        self.block_counts = [math.ceil(w / config.channels) for w in self.widths]  # |B_m|
        reduced = config.channels // config.reduction  # C'
        self.segment = nn.ModuleList(
            SplitAttention(config.channels, reduced, sum(self.block_counts)) for _ in range(config.segments)
        )
        self.attention: torch.Tensor | None = None

    # -- helpers -------------------------------------------------------------------------
    def _mask(self, spec: Spec, ctx: Context) -> torch.Tensor | None:
        """Padding mask ``(B, T)`` of a sequence, or of a map whose time axis (axis 2) is a masked symbol."""
        if spec.kind == "sequence":
            return ctx.mask(spec)
        if spec.kind == "map" and len(spec.shape) >= 3 and isinstance(spec.shape[2], str):
            return ctx.masks.get(spec.shape[2])
        return None

    def _means(self, x: torch.Tensor, spec: Spec, ctx: Context) -> torch.Tensor:
        """Global average over the non-channel axes, per time segment: any layout -> ``(B, q, C_m)`` (eq. 1)."""
        q = self.config.segments
        if spec.kind == "vector" or x.dim() == 2:
            return x[:, None]  # nothing to average: (B, C) -> (B, 1, C)
        mask = self._mask(spec, ctx)
        if spec.kind == "sequence":
            steps = x  # (B, T, C)
        elif q == 1 and mask is None:
            return x.flatten(2).mean(dim=2)[:, None]  # (B, C, *S) -> (B, 1, C)
        else:
            steps = (x.flatten(3).mean(dim=3) if x.dim() > 3 else x).transpose(1, 2)  # (B, C, T, *R) -> (B, T, C)
        if q == 1 and mask is None:
            return steps.mean(dim=1, keepdim=True)  # (B, 1, C)
        return _segment_means(steps, mask, q)

    def _scale(self, x: torch.Tensor, spec: Spec, scale: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Multiply ``x`` by per-(segment, channel) factors ``scale (B, q, C_m)`` in x's layout."""
        q = scale.shape[1]
        if spec.kind == "vector" or (spec.kind == "map" and x.dim() == 2):
            return x * scale[:, 0]
        if spec.kind == "sequence":
            if q > 1:
                scale = _per_step(scale, x.shape[1], self._mask(spec, ctx))  # (B, q, C) -> (B, T, C)
            return x * scale
        if q > 1:
            scale = _per_step(scale, x.shape[2], self._mask(spec, ctx)).transpose(1, 2)  # (B, q, C) -> (B, C, T)
        else:
            scale = scale.transpose(1, 2)  # (B, 1, C) -> (B, C, 1)
        return x * scale.reshape(scale.shape + (1,) * (x.dim() - 3))  # broadcast over the other axes

    def attention_by_modality(self) -> dict[str, torch.Tensor]:
        """The last attention split per input port: ``{port: (B, q, |B_m|, C)}``."""
        if self.attention is None:
            raise RuntimeError("msaf: no attention recorded yet; run a forward pass first")
        return dict(zip(self.ports, self.attention.split(self.block_counts, dim=2)))

    # -- forward -------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        C, q = self.config.channels, self.config.segments
        lam = self.config.lowest_attention
        p = self.config.block_dropout
        authors = self.config.block_dropout_style == "authors"
        first = next(iter(inputs.values()))
        mask = None
        if self.training and p > 0:  # BlockDropout (§3.1): one Bernoulli(1-p)/(1-p) factor per (sample, segment, block)
            mask = block_dropout_mask((first.shape[0], q, sum(self.block_counts), 1), p, like=first)  # (B, q, N, 1)
        masks = mask.split(self.block_counts, dim=2) if mask is not None else [None] * len(self.ports)
        # split + join (eq. 1): per modality, segment means (B, q, C_m) -> zero-pad -> sum of blocks (B, q, C)
        descriptor = None
        for port, width, blocks, m_mask in zip(self.ports, self.widths, self.block_counts, masks):
            spec = self.in_specs[port]
            means = self._means(inputs[port], spec, ctx)  # (B, q, C_m)
            padded = F.pad(means, (0, blocks * C - width)).unflatten(-1, (blocks, C))  # (B, q, |B_m|, C)
            if authors and m_mask is not None:
                padded = padded * m_mask  # the authors drop the feature blocks before the join
            d_m = padded.sum(dim=2)  # (B, q, |B_m|, C) -> (B, q, C)
            descriptor = d_m if descriptor is None else descriptor + d_m  # G = Σ_m D_m
        attention = torch.stack([core(descriptor[:, k]) for k, core in enumerate(self.segment)], dim=1)  # (B, q, N, C)
        self.attention = attention.detach()
        if mask is not None and not authors:
            attention = attention * mask  # paper: the scaled mask multiplies the attention
        factors = lam + (1.0 - lam) * attention if lam > 0 else attention  # eq. 5, (B, q, N, C)
        if mask is not None and authors:
            factors = factors * (mask * mask)  # authors: dropped blocks times the mask again: a dropped block is 0
        outputs: dict[str, torch.Tensor] = {}
        for port, width, per_modality in zip(self.ports, self.widths, factors.split(self.block_counts, dim=2)):
            scale = per_modality.flatten(2)[..., :width]  # (B, q, |B_m|, C) -> (B, q, C_m), padding dropped   eq. 6
            outputs[port] = self._scale(inputs[port], self.in_specs[port], scale, ctx)
        return outputs
