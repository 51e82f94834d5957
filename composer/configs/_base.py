"""What every block config is: the YAML side of a block, known without PyTorch.

A block type is two classes registered together (see :mod:`composer.registry`):

* a config class, subclass of :class:`BlockConfig`, in a module of :mod:`composer.configs`
  (no ``torch`` import). It holds the block's fields and everything a blueprint check needs:

  - ``infer(inputs) -> dict[port, Spec]``: output specs from input specs, no tensors; raise
    :class:`SpecError` with a readable message on a mismatch;
  - ``parameter_shapes(inputs) -> dict[name, shape]``: the module's parameters by name, as
    ``named_parameters()`` of the built module gives them (the size estimate and the check of
    ``share:`` read it, so ``composer validate`` builds nothing);
  - ``examples()`` (a classmethod): small configs with input specs for the registry-wide tests;
  - ``aux_ports()``, ``vocabulary()``, ``main_port``: see each;

* a module class, subclass of :class:`composer.blocks._base.Block` (an ``nn.Module``), named by
  the config's registration and imported only when a model is built.

Inputs arrive as a dict keyed by *port*: a single reference gives the port ``"in"``, a list
gives ports ``"0"``, ``"1"``, ... in order, a mapping gives its own keys. A block with one
output returns a tensor (port ``"out"``); several outputs return a dict. Output ports listed
in ``aux_loss_ports`` are scalar auxiliary losses collected by the model.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from composer.configs._limits import LAYERS, WIDTH
from composer.errors import ComposerError
from composer.spec import Spec

__all__ = [
    "BlockConfig",
    "SpecError",
    "InputRef",
    "Shapes",
    "Width",
    "port_names",
    "expect_kind",
    "expect_ports",
    "shared_vector_width",
    "last_axis_output",
]

InputRef = Union[str, list[str], dict[str, str]]

#: Parameter name -> shape, as ``named_parameters()`` of the built module lists them.
Shapes = dict[str, tuple[int, ...]]

#: A layer width in a config field: a positive int (sizes are also bounded by the memory budget).
Width = Annotated[int, Field(ge=1)]

#: Integer fields that count repeated modules (``layers``, ``gru_layers``, ``stages``, ``experts``):
#: bounded by ``COMPOSER_MAX_LAYERS``; every other integer of a block config by ``COMPOSER_MAX_WIDTH``.
COUNT_FIELD = re.compile(r"(^|_)(layers|stages|experts)$")


def bounded_integers(field: str, value: Any) -> Any:
    """``value`` of the block field ``field`` if its integers are within the budget, else a
    ValueError naming the limit and its setting. Counts (:data:`COUNT_FIELD`) are at most
    ``COMPOSER_MAX_LAYERS``, a list of integers (widths of layers) has at most that many entries,
    and any other integer is at most ``COMPOSER_MAX_WIDTH``: so no per-layer work or size
    arithmetic ever starts on ``layers: 10**30``."""
    if isinstance(value, int) and not isinstance(value, bool):
        limit = (LAYERS if COUNT_FIELD.search(field) else WIDTH)
        if value > limit.value():
            raise ValueError(limit.exceeded(value) if limit is LAYERS else f"{field} = {limit.exceeded(value)}")
    elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(value) > LAYERS.value():
            raise ValueError(f"{len(value):,} entries: {LAYERS.exceeded(len(value))}")
        for v in value:
            bounded_integers(field if not COUNT_FIELD.search(field) else "width", v)
    return value


class SpecError(ComposerError):
    """A block cannot accept the specs it was given; ``field`` names the config field at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class BlockConfig(BaseModel):
    """Fields every block has. Subclasses add ``type: Literal[...]``, their own fields, and
    ``infer``, ``parameter_shapes`` and ``examples``."""

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

    @field_validator("*", mode="after")
    @classmethod
    def _within_budget(cls, value: Any, info: ValidationInfo) -> Any:
        return bounded_integers(info.field_name or "", value)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, data: Any) -> Any:
        return no_booleans_for_numbers(cls, data)

    #: Output ports that always hold scalar auxiliary losses (see :meth:`aux_ports`).
    aux_loss_ports: ClassVar[tuple[str, ...]] = ()
    #: The output a bare reference to a block with several outputs means (``fusion`` = ``fusion.out``),
    #: or None when the outputs are symmetric and a reference must name one.
    main_port: ClassVar[str | None] = None
    #: The outputs are targets for losses, made without gradients on purpose (Self-MM's generated
    #: labels): the registry-wide backward and content-sensitivity checks expect no gradient; the
    #: block's own tests prove what its outputs depend on.
    targets_only: ClassVar[bool] = False
    #: Input ports read for their shape and padding mask only (a decoder's ``target``, whose length
    #: and width it generates), or at most as a teacher-forced decoder's previous steps (never the
    #: last one): the content-sensitivity check skips them.
    shape_only_ports: ClassVar[tuple[str, ...]] = ()

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

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        """Output specs for these input specs; a :class:`SpecError` when they do not fit."""
        raise NotImplementedError(f"{type(self).__name__} must implement infer()")

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes | None:
        """The built module's parameters (name -> shape) for these input specs, without building it.

        None means "only known by building the module" (a plug-in may leave it so: its size is
        then estimated by building it on the ``meta`` device, which imports PyTorch)."""
        return None

    @classmethod
    def examples(cls) -> list[tuple[dict[str, Any], dict[str, Spec]]]:
        """Small configs (without ``type``/``in``) with input specs for the registry-wide tests.

        Each entry is ``(fields, {port: spec})``; ports named ``"in"`` become ``in: <ref>``,
        ``"0"``, ``"1"``... a list, anything else a mapping. Every block type must give one.
        """
        raise NotImplementedError(f"{cls.__name__} must implement examples()")

    def aux_ports(self) -> tuple[str, ...]:
        """Output ports holding scalar auxiliary losses for this config (default: ``aux_loss_ports``)."""
        return tuple(self.aux_loss_ports)

    def vocabulary(self) -> int | None:
        """For blocks that read token ids: how many ids they embed (ids must lie below it), else None.
        ``validate`` compares it with the ``vocab`` of every tokens modality wired to the block."""
        return None


# -- helpers shared by block configs ------------------------------------------------------


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type takes a boolean (``bool``, ``Any``, or a union/container holding one)."""
    import typing

    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(a) for a in typing.get_args(annotation) if not isinstance(a, (str, int, float)) or a is bool)


def no_booleans_for_numbers(model: type[BaseModel], data: Any) -> Any:
    """Pydantic reads ``true`` as 1 for a number; YAML reads ``true``, ``yes`` and ``on`` as booleans.
    A boolean given for a field (or list item) that takes no boolean is refused instead."""
    if not isinstance(data, dict):
        return data
    for name, info in model.model_fields.items():
        value = data.get(info.alias or name, data.get(name))
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in items) and not _admits_bool(info.annotation):
            raise ValueError(f"{info.alias or name}: expected a number, got {str(value).lower()} (a boolean; YAML reads true, yes and on as booleans)")
    return data


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


def widths_per_port(hidden: int | list[int] | dict[str, int], ports: list[str], what: str = "hidden") -> dict[str, int]:
    """One width per input port from a field that gives them as a list (in port order) or a
    mapping by port (one recurrent cell per modality: RMFN's LSTHMs, MFN's LSTMs); a SpecError
    naming the field when they do not cover the ports."""
    if isinstance(hidden, list):
        if len(hidden) != len(ports):
            raise SpecError(f"{what} lists {len(hidden)} widths for {len(ports)} inputs", field=what)
        return dict(zip(ports, hidden))
    if set(hidden) != set(ports):
        missing, extra = sorted(set(ports) - set(hidden)), sorted(set(hidden) - set(ports))
        raise SpecError(
            f"{what} must give one width per input ({', '.join(ports)})"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else ""),
            field=what,
        )
    return {p: hidden[p] for p in ports}


def last_axis_output(inputs: dict[str, Spec], width: int | None = None) -> dict[str, Spec]:
    """Spec of a block mapping the last axis of one vector or sequence input to ``width``
    (``None``: the same width, an elementwise function)."""
    expect_ports(inputs, exactly=1)
    (port, spec), = inputs.items()
    expect_kind(port, spec, "vector", "sequence")
    return {"out": spec if width is None else spec.with_features(width)}
