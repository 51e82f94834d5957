"""Weights that hold NaN or infinity are refused, with the tensor names.

Used where weights enter a model: ``ComposedModel.load`` (``best.safetensors``), the
checkpoint checks of :mod:`composer.train.checkpoint` (``last.ckpt``) and ``load_trained``.
"""

from __future__ import annotations

from typing import Mapping

import torch

from composer.errors import DataError

__all__ = ["nonfinite_names", "require_finite"]

SHOWN = 5


def nonfinite_names(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point (or complex) tensors holding a NaN or an infinity, in order."""
    return [
        name for name, t in tensors.items()
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())
    ]


def require_finite(tensors: Mapping[str, torch.Tensor], source: str) -> Mapping[str, torch.Tensor]:
    """``tensors`` unchanged, or :class:`DataError` naming (up to five of) the non-finite ones."""
    bad = nonfinite_names(tensors)
    if bad:
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise DataError(
            f"{source}: NaN or infinite values in {', '.join(bad[:SHOWN])}{more}; the file is damaged or "
            "was saved from a diverged run: use an earlier file or train again"
        )
    return tensors
