"""What every block is: a Pydantic config, a spec function, and an ``nn.Module``.

A block type is a pair registered together (see :mod:`composer.registry`):

* a config class, subclass of :class:`BlockConfig`, with ``type: Literal["name"]``;
* a module class, subclass of :class:`Block`, with

  - ``infer(config, inputs) -> dict[port, Spec]`` (a classmethod): output specs from input
    specs, no tensors; raise :class:`SpecError` with a readable message on a mismatch;
  - ``__init__(config, inputs)``: build submodules from the resolved input specs (widths
    are read from the specs, never repeated in the config);
  - ``forward(inputs, ctx) -> Tensor | dict[port, Tensor]``.

Inputs arrive as a dict keyed by *port*: a single reference gives the port ``"in"``, a list
gives ports ``"0"``, ``"1"``, ... in order, a mapping gives its own keys. A block with one
output returns a tensor (port ``"out"``); several outputs return a dict. Output ports listed
in ``aux_loss_ports`` are scalar auxiliary losses collected by the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Union

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from composer.errors import ComposerError
from composer.spec import Spec

__all__ = [
    "BlockConfig",
    "Block",
    "Context",
    "SpecError",
    "InputRef",
    "port_names",
    "expect_kind",
    "expect_ports",
    "length_mask",
    "last_axis_output",
    "building_on_meta",
    "Width",
]

InputRef = Union[str, list[str], dict[str, str]]

#: A layer width in a config field: a positive int (sizes are also bounded by the memory budget).
Width = Annotated[int, Field(ge=1)]


class SpecError(ComposerError):
    """A block cannot accept the specs it was given; ``field`` names the config field at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class BlockConfig(BaseModel):
    """Fields every block has. Subclasses add ``type: Literal[...]`` and their own fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    inputs: InputRef = Field(
        alias="in",
        description="Inputs: a reference (modality, block or block.port), a list, or a mapping of named ports.",
    )
    share: str | None = Field(
        default=None, description="Reuse the weights of another block of the same type (explicit weight sharing)."
    )
    enabled: bool = Field(
        default=True,
        description="When false the block passes its input through; allowed when its output shape equals its input's.",
    )

    def input_map(self) -> dict[str, str]:
        """Port -> reference, normalised from the three spellings of ``in``."""
        if isinstance(self.inputs, str):
            return {"in": self.inputs}
        if isinstance(self.inputs, list):
            return {str(i): ref for i, ref in enumerate(self.inputs)}
        return dict(self.inputs)

    def hyperparameters(self) -> dict[str, Any]:
        """Fields that shape the module (everything but wiring)."""
        return self.model_dump(exclude={"inputs", "share", "enabled", "type"})


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
    aux_loss_ports: ClassVar[tuple[str, ...]] = ()
    #: The output a bare reference to a block with several outputs means (``fusion`` = ``fusion.out``),
    #: or None when the outputs are symmetric and a reference must name one.
    main_port: ClassVar[str | None] = None

    def __init__(self, config: BlockConfig, inputs: dict[str, Spec]):
        super().__init__()
        self.config = config
        self.in_specs = dict(inputs)
        self.out_specs = self.infer(config, inputs)

    @classmethod
    def infer(cls, config: BlockConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        raise NotImplementedError(f"{cls.__name__} must implement infer()")

    @classmethod
    def examples(cls) -> list[tuple[dict[str, Any], dict[str, Spec]]]:
        """Small configs (without ``type``/``in``) with input specs for the registry-wide tests.

        Each entry is ``(fields, {port: spec})``; ports named ``"in"`` become ``in: <ref>``,
        ``"0"``, ``"1"``... a list, anything else a mapping. Every block type must give one.
        """
        raise NotImplementedError(f"{cls.__name__} must implement examples()")

    @classmethod
    def aux_ports(cls, config: BlockConfig) -> tuple[str, ...]:
        """Output ports holding scalar auxiliary losses for this config (default: ``aux_loss_ports``)."""
        return tuple(cls.aux_loss_ports)

    @classmethod
    def vocabulary(cls, config: BlockConfig) -> int | None:
        """For blocks that read token ids: how many ids they embed (ids must lie below it), else None.
        ``validate`` compares it with the ``vocab`` of every tokens modality wired to the block."""
        return None

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def extra_repr(self) -> str:
        return f"type={self.type_name!r}"


# -- helpers shared by block implementations ---------------------------------------------


def port_names(inputs: dict[str, Spec]) -> list[str]:
    """Ports in declaration order."""
    return list(inputs)


def expect_ports(inputs: dict[str, Spec], *, exactly: int | None = None, at_least: int | None = None) -> None:
    n = len(inputs)
    if exactly is not None and n != exactly:
        raise SpecError(f"expected {exactly} input{'s' if exactly != 1 else ''}, got {n}", field="in")
    if at_least is not None and n < at_least:
        raise SpecError(f"expected at least {at_least} inputs, got {n}", field="in")


def expect_kind(port: str, spec: Spec, *kinds: str) -> None:
    if spec.kind not in kinds:
        raise SpecError(f"input '{port}' must be a {' or '.join(kinds)}, got {spec}", field="in")


def shared_vector_width(inputs: dict[str, Spec], what: str = "inputs") -> int:
    """The one width ``d`` of inputs that must all be vectors ``(B, d)``; a SpecError otherwise."""
    for port, spec in inputs.items():
        expect_kind(port, spec, "vector")
    widths = {spec.features for spec in inputs.values()}
    if len(widths) != 1:
        raise SpecError(f"{what} need one width, got {', '.join(str(s) for s in inputs.values())}", field="in")
    return int(widths.pop())


def last_axis_output(inputs: dict[str, Spec], width: int) -> dict[str, Spec]:
    """Spec of a block mapping the last axis of one vector or sequence input to ``width``."""
    expect_ports(inputs, exactly=1)
    (port, spec), = inputs.items()
    expect_kind(port, spec, "vector", "sequence")
    return {"out": spec.with_features(width)}


def length_mask(lengths: torch.Tensor, time: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, T)`` bool mask, True on real steps."""
    return torch.arange(time, device=lengths.device)[None, :] < lengths[:, None]


def building_on_meta() -> bool:
    """True while a model is built on the ``meta`` device (a size estimate: no data, no files read)."""
    return torch.empty(0).is_meta
