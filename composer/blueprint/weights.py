"""A weights file back to a model: the blueprint stored with the weights is checked like any
other, and the file's tensors are compared with the model it describes before any is read.

``ComposedModel.save`` writes the weights (safetensors) with the blueprint's text in the
file's metadata; :func:`load_model` rebuilds the model from that text and loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from composer.blueprint.load import load_blueprint
from composer.errors import ComposerError, DataError

__all__ = ["load_model", "model_for_weights"]


def load_model(path: str | Path, map_location: Any = "cpu"):
    """Rebuild the :class:`~composer.graph.model.ComposedModel` stored in a safetensors file.

    Nothing in the file is trusted: the blueprint is validated and size-checked like any other,
    and every tensor's name and shape in the header is compared with the model the blueprint
    describes (built on ``meta``) before a weight is allocated or read.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from composer.graph.finite import require_finite

    path = Path(path)
    if not path.is_file():
        raise ComposerError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"{path} is not a safetensors file: {exc}") from None
    model = model_for_weights(metadata.get("composer.blueprint"), header, str(path))
    model.load_state_dict(require_finite(load_file(str(path), device=str(map_location)), str(path)), strict=True)
    return model.to(map_location)


def model_for_weights(blueprint_text: Any, shapes: dict[str, tuple[int, ...]], source: str):
    """The model a weights file's stored blueprint describes, checked against the file's tensor
    names and shapes (``shapes``) before it is built; raises :class:`DataError`."""
    import torch

    from composer.graph.model import ComposedModel

    if not isinstance(blueprint_text, str):
        raise DataError(f"{source} holds no blueprint; it was not written by Composer")
    blueprint = load_blueprint(blueprint_text, source=f"{source}#blueprint")  # size-checked: an edited size is refused here
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ComposedModel(blueprint).state_dict().items()}
    if not expected:
        raise DataError(f"{source}: its blueprint describes a model without weights; nothing to load")
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k} {shapes[k]} (blueprint: {expected[k]})" for k in sorted(set(shapes) & set(expected)) if shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                 f"wrong shapes {wrong[:5]}" if wrong else ""]
        raise DataError(f"{source}: weights do not match the blueprint stored with them ({'; '.join(p for p in parts if p)})")
    return ComposedModel(blueprint)
