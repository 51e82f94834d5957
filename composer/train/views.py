"""Extra views of a batch (``training.views``): random temporal masking for incomplete data.

Contract with :meth:`~composer.graph.model.ComposedModel.compute_loss`: per training step the
trainer builds ``batches = {"main": batch, "<view>": masked_batch, ...}``; a masked batch is a
shallow copy of the batch with the masked modalities replaced and ``view_masks = {modality:
bool (B, T), True where a step was dropped}`` added, so losses can read ``VIEW:mask.MODALITY``.

``temporal_mask`` (EMT-DLFR §3.5): each *valid* time step of each chosen modality is dropped
independently with probability ``rate``: float features become 0, token ids become the
unknown token, and special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``) are never dropped.
Padding steps are never marked as dropped. The same function masks test data in
``composer evaluate --missing-rates``.

``resample: split`` fixes the masks of a split as EMT-DLFR's data loader does: per modality,
NumPy's Mersenne Twister seeded with the modality's seed draws ``U (N, T)`` uniform numbers
over the whole split (``N`` samples of ``T`` padded steps, in the split's order) once; sample
``i`` loses step ``t`` when ``U[i, t] <= rate`` (the authors keep ``U > rate``). The draws
equal ``np.random.seed(s); np.random.uniform(size=(N, T))`` of the authors' code, so with
their seeds and the split in the pickle's order the masks are theirs; they do not depend on
the batch order, the epoch or the rate (masks are nested across rates).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

from composer.blueprint.check import maskable_modalities
from composer.blueprint.training import ViewConfig
from composer.layers.missing import drop_steps

__all__ = ["temporal_mask", "drop_modalities", "modality_conditions", "make_views", "maskable_modalities", "split_uniforms", "masked_modalities"]


def _valid_steps(batch: dict[str, Any], name: str, x: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` True on real (non-padding) steps."""
    if f"{name}_mask" in batch:
        return batch[f"{name}_mask"].bool()
    if f"{name}_lengths" in batch:
        lengths = batch[f"{name}_lengths"].to(x.device)
        return torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def temporal_mask(
    batch: dict[str, Any],
    blueprint,
    rate: float | torch.Tensor,
    generator: torch.Generator,
    *,
    modalities: list[str] | None = None,
    unk_token: int = 100,
    special_tokens: tuple[int, ...] | list[int] = (101, 102, 0),
    uniforms: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """A copy of ``batch`` with each valid step of each modality dropped with probability ``rate``.

    ``generator`` is a CPU generator (draws are made on the CPU, so results do not depend on
    the device). ``uniforms[m]`` ``(B, T)``: given uniform numbers for modality ``m`` instead
    of draws (a step is dropped where ``u <= rate``; see :func:`split_uniforms`). Returns the
    masked batch with ``view_masks[m]`` ``(B, T)`` bool, True = dropped.
    """
    out = dict(batch)
    masks: dict[str, torch.Tensor] = {}
    for name in modalities if modalities is not None else maskable_modalities(blueprint):
        x = batch[name]
        if uniforms is not None and name in uniforms:
            draw = uniforms[name].to(x.device) <= rate  # (B, T)
        else:
            draw = torch.rand(x.shape[:2], generator=generator).to(x.device) < rate  # (B, T)
        tokens = blueprint.modalities[name].kind == "tokens"
        out[name], masks[name] = drop_steps(x, draw, _valid_steps(batch, name, x), tokens=tokens, unk_token=unk_token,
                                            special_tokens=special_tokens)
    out["view_masks"] = masks
    return out


def drop_modalities(batch: dict[str, Any], blueprint, names: list[str], *, unk_token: int = 100,
                    special_tokens: tuple[int, ...] | list[int] = (101, 102, 0)) -> dict[str, Any]:
    """A copy of ``batch`` without the modalities ``names``: every valid step of a sequence
    dropped as :func:`temporal_mask` drops it at rate 1 (features zeroed, tokens ``[UNK]``,
    special tokens and lengths kept), a vector or feature map zeroed. The missing-modality
    conditions of the field's tables (a modality absent at test time) are this transform."""
    timed = [n for n in names if n in maskable_modalities(blueprint)]
    out = temporal_mask(batch, blueprint, 1.0, torch.Generator(), modalities=timed, unk_token=unk_token, special_tokens=special_tokens)
    for name in names:
        if name not in timed:
            out[name] = torch.zeros_like(batch[name])
    return out


def modality_conditions(modalities: list[str]) -> list[tuple[str, ...]]:
    """The conditions of the literature's missing-modality tables: the complete set, then each
    single modality present, then each pair, ... (every non-empty subset, larger last before
    complete): for text, audio, vision the seven rows {t,a,v}, {t}, {a}, {v}, {t,a}, {t,v}, {a,v}."""
    from itertools import combinations

    subsets = [c for k in range(1, len(modalities)) for c in combinations(modalities, k)]
    return [tuple(modalities), *subsets]


def _view_rate(view: ViewConfig, generator: torch.Generator) -> float | torch.Tensor:
    """The view's rate, or one drawn from ``rate_range`` (a 0-d CPU tensor: nothing is read back)."""
    if view.rate_range is None:
        return view.rate
    low, high = view.rate_range
    return low + (high - low) * torch.rand((), generator=generator)


@lru_cache(maxsize=16)
def _split_numbers(seed: int, samples: int, steps: int) -> np.ndarray:
    return np.random.RandomState(seed).uniform(size=(samples, steps))


def _split_draws(seed: int, samples: int, steps: int) -> torch.Tensor:
    """``(N, T)`` uniform numbers (float64) of NumPy's legacy Mersenne Twister seeded with ``seed``,
    the generator ``np.random.seed`` sets; the array is cached, since every batch of a split reads
    it, and wrapped afresh each call (no tensor made under a fake-tensor trace is ever kept)."""
    return torch.from_numpy(_split_numbers(seed, samples, steps))


def split_uniforms(batch: dict[str, Any], blueprint, view: ViewConfig, modalities: list[str]) -> dict[str, torch.Tensor]:
    """For ``resample: split``: each modality's fixed uniform numbers at the batch's samples.

    The batch's ``index`` and ``split_size`` (from :meth:`TensorSplit.batch`) locate its samples
    in their split; a batch without them (random example inputs) is a split of its own."""
    index = batch.get("index")
    first = batch[modalities[0]] if modalities else None
    if index is None:
        size = int(first.shape[0]) if first is not None else 0
        index, split_size = torch.arange(size), size
    else:
        split_size = int(batch["split_size"])
    names = list(blueprint.modalities)
    out = {}
    for m in modalities:
        seed = (view.seeds or {}).get(m, blueprint.training.seed + names.index(m))
        out[m] = _split_draws(seed, split_size, int(batch[m].shape[1]))[index]
    return out


def masked_modalities(blueprint, view: ViewConfig) -> list[str]:
    """The modalities a view masks: those of ``rates``, else ``modalities``, else every maskable one."""
    if view.rates is not None:
        return list(view.rates)
    return list(view.modalities or maskable_modalities(blueprint))


def make_views(batch: dict[str, Any], blueprint, generator: torch.Generator) -> dict[str, dict[str, Any]]:
    """``{"main": batch, view: masked batch, ...}`` for the blueprint's ``training.views``
    (a view with ``rates`` masks each listed modality at its own rate; ``resample: split``
    takes each sample's fixed draws, see :func:`split_uniforms`)."""
    batches = {"main": batch}
    for name, view in blueprint.training.views.items():
        tokens = {"unk_token": view.unk_token, "special_tokens": view.special_tokens}
        if view.resample == "split":
            tokens["uniforms"] = split_uniforms(batch, blueprint, view, masked_modalities(blueprint, view))
        if view.rates is None:
            batches[name] = temporal_mask(batch, blueprint, _view_rate(view, generator), generator, modalities=view.modalities, **tokens)
            continue
        masked, masks = dict(batch), {}
        for modality, rate in view.rates.items():
            one = temporal_mask(batch, blueprint, rate, generator, modalities=[modality], **tokens)
            masked[modality] = one[modality]
            masks.update(one["view_masks"])
        masked["view_masks"] = masks
        batches[name] = masked
    return batches
