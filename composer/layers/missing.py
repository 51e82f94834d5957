"""Dropping time steps of a sequence or token input: the one rule behind Composer's incomplete
views (:func:`composer.train.views.temporal_mask`) and LNLN's training-time drop block
(:mod:`composer.blocks.lnln`).

A step is dropped where it was drawn **and** is a real step (padding stays padding) **and**,
for token ids, is not a special token ([CLS], [SEP], [PAD] by default). A dropped feature step
becomes zeros; a dropped token becomes the unknown token (BERT's [UNK], 100).
"""

from __future__ import annotations

import torch

__all__ = ["drop_steps"]


def drop_steps(x: torch.Tensor, draw: torch.Tensor, valid: torch.Tensor, *, tokens: bool, unk_token: int = 100,
               special_tokens: tuple[int, ...] | list[int] = (101, 102, 0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B, T) token ids or (B, T, D) features with the drawn steps dropped; returns it and
    the ``(B, T)`` bool mask of the steps actually dropped. ``draw`` and ``valid``: ``(B, T)`` bool."""
    if tokens:
        special = torch.zeros_like(draw)
        for tok in special_tokens:
            special |= x == tok
        dropped = draw & valid & ~special
        return x.masked_fill(dropped, unk_token), dropped
    dropped = draw & valid
    return x.masked_fill(dropped[..., None], 0.0), dropped  # (B, T, D), dropped steps -> 0
