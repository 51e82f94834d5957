"""What every block module is: an ``nn.Module`` built from its config and the input specs.

A block type's config (fields, shape inference, parameter shapes, examples) lives in
:mod:`composer.configs` and imports no PyTorch; its module class, a subclass of
:class:`Block`, is registered with it and imported when a model is built:

* ``__init__(config, inputs)``: build submodules from the resolved input specs (widths are
  read from the specs, never repeated in the config); ``out_specs`` is ``config.infer(inputs)``;
* ``forward(inputs, ctx) -> Tensor | dict[port, Tensor]``.

The config's names are re-exported here so a plug-in can define both classes from one import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from composer.configs._base import (
    BlockConfig,
    InputRef,
    Shapes,
    SpecError,
    Width,
    expect_kind,
    expect_ports,
    last_axis_output,
    port_names,
    shared_vector_width,
)
from composer.spec import Spec

__all__ = [
    "BlockConfig",
    "Block",
    "Context",
    "SpecError",
    "InputRef",
    "Shapes",
    "shared_vector_width",
    "port_names",
    "expect_kind",
    "expect_ports",
    "length_mask",
    "last_axis_output",
    "building_on_meta",
    "Width",
]


@dataclass
class Context:
    """Side information a forward pass needs besides its inputs.

    ``masks`` maps a time symbol (``"T_audio"``) to a bool tensor ``(B, T)``, True where a
    step is real; a sequence whose spec uses that symbol is padded by that mask. A block
    that creates a new time axis may add its mask here. ``batch`` is the raw batch (for
    extras such as token type ids). ``lengths`` caches valid steps per time symbol;
    ``host_lengths`` holds them as Python ints where the batch brought them (Composer's data
    loaders do), so code that needs them on the host (packing) reads no device tensor.
    """

    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    batch: dict[str, Any] = field(default_factory=dict)
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    host_lengths: dict[str, list[int]] = field(default_factory=dict)

    def lengths_of(self, spec: Spec) -> torch.Tensor | None:
        """Valid steps per sample ``(B,)`` for a masked sequence (from the batch when given), or None."""
        mask = self.mask(spec)
        if mask is None:
            return None
        if spec.time not in self.lengths:
            self.lengths[spec.time] = mask.sum(1)
        return self.lengths[spec.time]

    def host_lengths_of(self, spec: Spec) -> list[int] | None:
        """Valid steps per sample as Python ints when the batch carried them, else None."""
        return self.host_lengths.get(spec.time) if isinstance(spec.time, str) else None

    def packing_lengths(self, spec: Spec, steps: int) -> torch.Tensor | None:
        """Valid steps per sample as a CPU tensor ``(B,)`` for ``pack_padded_sequence``, from the
        Python ints Composer's loaders put in the batch (no read back from the device), or None
        when the input has no mask or none of its ``steps`` is padding (packing would change nothing)."""
        lengths = self.lengths_of(spec)
        if lengths is None:
            return None
        host = self.host_lengths_of(spec)
        if host is None:
            return lengths.cpu()
        return None if min(host) >= steps else torch.tensor(host)

    def mask(self, spec: Spec) -> torch.Tensor | None:
        """Padding mask ``(B, T)`` (True = valid) for a sequence or token spec, or None."""
        if spec.kind in ("sequence", "tokens") and isinstance(spec.time, str):
            return self.masks.get(spec.time)
        return None


class Block(nn.Module):
    """Base class of all blocks. ``in_specs`` and ``out_specs`` are set by ``__init__``."""

    config_class: ClassVar[type[BlockConfig]]
    type_name: ClassVar[str]
    family: ClassVar[str] = "other"

    def __init__(self, config: BlockConfig, inputs: dict[str, Spec]):
        super().__init__()
        self.config = config
        self.in_specs = dict(inputs)
        self.out_specs = config.infer(inputs)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def extra_repr(self) -> str:
        return f"type={self.config.type!r}"  # the config's, so a module built outside the registry prints too


# -- helpers shared by block implementations ---------------------------------------------


def length_mask(lengths: torch.Tensor, time: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, T)`` bool mask, True on real steps."""
    return torch.arange(time, device=lengths.device)[None, :] < lengths[:, None]


def building_on_meta() -> bool:
    """True while a model is built on the ``meta`` device (a size estimate: no data, no files read)."""
    return torch.empty(0).is_meta
