"""Per-feature z-normalisation of modalities with the train split's statistics.

``training.data.normalize: [audio, vision]``: for each listed ``sequence`` (or ``vector``)
modality, the mean ``mu`` and population standard deviation ``sigma`` of every feature are
taken over the *valid* steps of the train split (padding excluded, per ``<m>_lengths`` or
``<m>_mask``), and every split's valid steps become ``(x - mu) / (sigma + 1e-6)``; padded steps
stay 0. This is what EMT-DLFR's authors do to CH-SIMS audio and vision
(``preprocess/normalize_sims.py``). A split set is normalised once (``DataSplits.normalized``).
"""

from __future__ import annotations

import torch

from composer.data.base import DataSplits, TensorSplit
from composer.errors import DataError

__all__ = ["normalize_splits", "EPS"]

EPS = 1e-6


def _valid(split: TensorSplit, name: str) -> torch.Tensor:
    """``(N, T)`` True on valid steps (all steps when the split gives no lengths or mask)."""
    x = split.tensors[name]
    if f"{name}_mask" in split.tensors:
        return split.tensors[f"{name}_mask"].bool()
    if f"{name}_lengths" in split.tensors:
        return torch.arange(x.shape[1])[None, :] < split.tensors[f"{name}_lengths"][:, None]
    return torch.ones(x.shape[:2], dtype=torch.bool)


def normalize_splits(blueprint, data: DataSplits) -> DataSplits:
    """``data`` with the modalities of ``training.data.normalize`` z-normalised (see the module docstring)."""
    wanted = [m for m in blueprint.training.data.normalize if m not in data.normalized]
    if not wanted:
        return data
    for name in wanted:
        modality = blueprint.modalities.get(name)
        if modality is None or modality.kind not in ("sequence", "vector"):
            raise DataError(f"training.data.normalize: '{name}' is not a sequence or vector modality of the blueprint")
    splits = {k: TensorSplit(dict(v.tensors), v.ids) for k, v in data.splits.items()}
    notes = list(data.notes)
    for name in wanted:
        sequence = blueprint.modalities[name].kind == "sequence"
        train = splits["train"].tensors[name].double()
        rows = train[_valid(splits["train"], name)] if sequence else train  # (frames, D)
        if rows.shape[0] == 0:
            raise DataError(f"training.data.normalize: the train split has no valid steps of '{name}'")
        mean, std = rows.mean(0), rows.std(0, unbiased=False)
        for split in splits.values():
            x = split.tensors[name]
            scaled = ((x.double() - mean) / (std + EPS)).to(x.dtype)
            if sequence:
                scaled = scaled.masked_fill(~_valid(split, name)[..., None], 0.0)
            split.tensors[name] = scaled
        notes.append(f"{name}: z-normalised per feature with the train split's mean and std over {rows.shape[0]:,} valid steps")
    return DataSplits(splits, notes, data.source, data.normalized | frozenset(wanted))
