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
"""

from __future__ import annotations

from typing import Any

import torch

from composer.errors import ComposerError
from composer.blueprint.training import ViewConfig

__all__ = ["temporal_mask", "make_views", "maskable_modalities", "check_views"]


def maskable_modalities(blueprint) -> list[str]:
    """Modalities with a time axis (``sequence`` and ``tokens``)."""
    return [n for n, m in blueprint.modalities.items() if m.kind in ("sequence", "tokens")]


def check_views(blueprint) -> None:
    """Raise :class:`ComposerError` when a view names a modality it cannot mask."""
    ok = maskable_modalities(blueprint)
    for name, view in blueprint.training.views.items():
        if view.rates is not None and view.modalities is not None:
            raise ComposerError(f"training.views.{name}: `rates` names the masked modalities; drop `modalities`")
        for m in list(view.modalities or []) + list(view.rates or {}):
            if m not in ok:
                raise ComposerError(
                    f"training.views.{name}.modalities: '{m}' is not a sequence or token modality of the blueprint (maskable: {', '.join(ok) or 'none'})"
                )


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
) -> dict[str, Any]:
    """A copy of ``batch`` with each valid step of each modality dropped with probability ``rate``.

    ``generator`` is a CPU generator (draws are made on the CPU, so results do not depend on
    the device). Returns the masked batch with ``view_masks[m]`` ``(B, T)`` bool, True = dropped.
    """
    out = dict(batch)
    masks: dict[str, torch.Tensor] = {}
    for name in modalities if modalities is not None else maskable_modalities(blueprint):
        x = batch[name]
        draw = torch.rand(x.shape[:2], generator=generator).to(x.device) < rate  # (B, T)
        if blueprint.modalities[name].kind == "tokens":
            special = torch.zeros_like(draw)
            for tok in special_tokens:
                special |= x == tok
            dropped = draw & _valid_steps(batch, name, x) & ~special
            out[name] = x.masked_fill(dropped, unk_token)
        else:
            dropped = draw & _valid_steps(batch, name, x)
            out[name] = x.masked_fill(dropped[..., None], 0.0)  # (B, T, D), dropped steps -> 0
        masks[name] = dropped
    out["view_masks"] = masks
    return out


def _view_rate(view: ViewConfig, generator: torch.Generator) -> float | torch.Tensor:
    """The view's rate, or one drawn from ``rate_range`` (a 0-d CPU tensor: nothing is read back)."""
    if view.rate_range is None:
        return view.rate
    low, high = view.rate_range
    return low + (high - low) * torch.rand((), generator=generator)


def make_views(batch: dict[str, Any], blueprint, generator: torch.Generator) -> dict[str, dict[str, Any]]:
    """``{"main": batch, view: masked batch, ...}`` for the blueprint's ``training.views``
    (a view with ``rates`` masks each listed modality at its own rate)."""
    batches = {"main": batch}
    for name, view in blueprint.training.views.items():
        tokens = {"unk_token": view.unk_token, "special_tokens": view.special_tokens}
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
