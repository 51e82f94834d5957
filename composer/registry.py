"""The block and loss registries.

``register_block(ConfigClass, family=...)`` decorates a :class:`~composer.blocks._base.Block`
subclass; ``register_loss(ConfigClass)`` a :class:`~composer.losses._base.Loss` subclass.
The type name comes from the config's ``type: Literal["name"]`` field. Names are unique:
registering a second class under a taken name raises. The discriminated unions used by
the blueprint schema are generated from these registries on demand, so blocks registered
from user code after import are picked up.

This module sits at the bottom, with the specs and errors: it imports no block. The built-in
blocks and losses register themselves when :mod:`composer.blocks` and :mod:`composer.losses`
are imported, which the blueprint schema (and so every use of a blueprint) does.
"""

from __future__ import annotations

import fnmatch
import importlib
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Union

from pydantic import BaseModel, Field, TypeAdapter

from composer.errors import ComposerError, did_you_mean

__all__ = [
    "Entry",
    "register_block",
    "register_loss",
    "get_block",
    "get_loss",
    "list_blocks",
    "list_losses",
    "block_union",
    "loss_union",
    "type_name_of",
    "load_plugins",
    "FAMILIES",
]

FAMILIES = ("modality", "encoder", "projection", "pooling", "fusion", "head", "regularizer", "loss", "other")


@dataclass(frozen=True)
class Entry:
    """One registered type: its name, config class, implementation and family."""

    name: str
    config: type[BaseModel]
    impl: type
    family: str

    @property
    def doc(self) -> str:
        return (self.impl.__doc__ or "").strip()

    @property
    def summary(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""


_BLOCKS: dict[str, Entry] = {}
_LOSSES: dict[str, Entry] = {}
_UNION_CACHE: dict[str, Any] = {}


def type_name_of(config_cls: type[BaseModel]) -> str:
    """The literal value of a config class's ``type`` field."""
    field = config_cls.model_fields.get("type")
    if field is None:
        raise TypeError(f"{config_cls.__name__} needs a field `type: Literal['name']`")
    args = typing.get_args(field.annotation)
    if len(args) != 1 or not isinstance(args[0], str):
        raise TypeError(f"{config_cls.__name__}.type must be Literal['name'] with exactly one name")
    return args[0]


def _register(table: dict[str, Entry], config_cls: type[BaseModel], family: str) -> Callable[[type], type]:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    name = type_name_of(config_cls)

    def decorate(impl: type) -> type:
        if name in _BLOCKS or name in _LOSSES:
            taken = (_BLOCKS.get(name) or _LOSSES[name]).impl
            raise ComposerError(
                f"type name '{name}' is already registered by {taken.__module__}.{taken.__qualname__}; "
                "choose another name"
            )
        impl.config_class = config_cls
        impl.type_name = name
        impl.family = family
        table[name] = Entry(name, config_cls, impl, family)
        _UNION_CACHE.clear()
        return impl

    return decorate


def register_block(config_cls: type[BaseModel], *, family: str = "other") -> Callable[[type], type]:
    """Class decorator: register a Block implementation under its config's type name."""
    return _register(_BLOCKS, config_cls, family)


def register_loss(config_cls: type[BaseModel]) -> Callable[[type], type]:
    """Class decorator: register a Loss implementation under its config's type name."""
    return _register(_LOSSES, config_cls, "loss")


def _lookup(table: dict[str, Entry], name: str, what: str) -> Entry:
    if name not in table:
        hint = did_you_mean(name, table)
        raise ComposerError(f"unknown {what} type '{name}'" + (f" (did you mean '{hint}'?)" if hint else ""))
    return table[name]


def get_block(name: str) -> Entry:
    return _lookup(_BLOCKS, name, "block")


def get_loss(name: str) -> Entry:
    return _lookup(_LOSSES, name, "loss")


def list_blocks(pattern: str = "*", family: str | None = None) -> list[Entry]:
    """Registered blocks whose name matches a glob pattern, sorted by family then name."""
    rows = [e for e in _BLOCKS.values() if fnmatch.fnmatch(e.name, pattern) and (family is None or e.family == family)]
    return sorted(rows, key=lambda e: (FAMILIES.index(e.family), e.name))


def list_losses(pattern: str = "*") -> list[Entry]:
    return sorted((e for e in _LOSSES.values() if fnmatch.fnmatch(e.name, pattern)), key=lambda e: e.name)


def _union(table: dict[str, Entry], key: str) -> Any:
    if key not in _UNION_CACHE:
        configs = tuple(e.config for e in sorted(table.values(), key=lambda e: e.name))
        if len(configs) == 1:
            _UNION_CACHE[key] = configs[0]
        else:
            _UNION_CACHE[key] = Annotated[Union[configs], Field(discriminator="type")]
    return _UNION_CACHE[key]


def block_union() -> Any:
    """``Annotated[AConfig | BConfig | ..., Field(discriminator="type")]`` over all blocks."""
    return _union(_BLOCKS, "blocks")


def loss_union() -> Any:
    return _union(_LOSSES, "losses")


def block_adapter() -> TypeAdapter:
    key = "blocks-adapter"
    if key not in _UNION_CACHE:
        _UNION_CACHE[key] = TypeAdapter(block_union())
    return _UNION_CACHE[key]


def load_plugins(modules: list[str]) -> None:
    """Import user modules that register blocks (only called when the user opts in)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ComposerError(f"could not import plugin module '{name}': {exc}") from exc
