"""The block and loss registries.

A type is a config class (torch-free: fields, shape inference, parameter shapes) and an
implementation (an ``nn.Module``). Two ways register one:

* ``@block_type(family, implementation="composer.blocks.projection:LinearProjection")`` on a
  config class (``@loss_type(implementation=...)`` for a loss) names the implementation by
  its import path; it is imported the first time :attr:`Entry.impl` is read, that is when a
  model is built. The built-in types register so, which keeps ``composer validate``,
  ``schema``, ``blocks`` and ``render`` free of PyTorch;
* ``@register_block(ConfigClass, family=...)`` on a :class:`~composer.blocks._base.Block`
  subclass (``@register_loss(ConfigClass)`` on a loss) registers a class already imported:
  the form for plug-ins, which define both classes in one module.

The type name comes from the config's ``type: Literal["name"]`` field. Names are unique:
registering a second class under a taken name raises. The discriminated unions used by
the blueprint schema are generated from these registries on demand, so blocks registered
from user code after import are picked up.

This module sits at the bottom, with the specs and errors: it imports no block. The built-in
types register when :mod:`composer.configs` is imported, which the blueprint schema (and so
every use of a blueprint) does.
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
    "block_type",
    "loss_type",
    "register_block",
    "register_loss",
    "allow_plugins",
    "plugins_allowed",
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
    """One registered type: its name, config class, family and implementation.

    ``implementation`` is the class, or its import path ``"package.module:Class"`` until
    :attr:`impl` first imports it."""

    name: str
    config: type[BaseModel]
    implementation: type | str
    family: str

    @property
    def impl(self) -> type:
        """The implementation class (imported on first use)."""
        if isinstance(self.implementation, str):
            module, _, attribute = self.implementation.partition(":")
            impl = getattr(importlib.import_module(module), attribute)
            _attach(impl, self.config, self.name, self.family)
            object.__setattr__(self, "implementation", impl)
        return self.implementation  # type: ignore[return-value]

    @property
    def builtin(self) -> bool:
        """True for the types that ship with Composer."""
        return self.config.__module__.startswith("composer.")

    @property
    def doc(self) -> str:
        """The type's description: the config's docstring (a plug-in's may sit on its module class)."""
        doc = self.config.__doc__
        if not doc and not isinstance(self.implementation, str):
            doc = self.implementation.__doc__
        return (doc or "").strip()

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


def _attach(impl: type, config_cls: type[BaseModel], name: str, family: str) -> None:
    impl.config_class = config_cls
    impl.type_name = name
    impl.family = family


def _register(table: dict[str, Entry], config_cls: type[BaseModel], family: str, implementation: type | str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    name = type_name_of(config_cls)
    if name in _BLOCKS or name in _LOSSES:
        taken = (_BLOCKS.get(name) or _LOSSES[name]).config
        raise ComposerError(
            f"type name '{name}' is already registered by {taken.__module__}.{taken.__qualname__}; "
            "choose another name"
        )
    if not isinstance(implementation, str):
        _attach(implementation, config_cls, name, family)
    table[name] = Entry(name, config_cls, implementation, family)
    _UNION_CACHE.clear()


def block_type(family: str, *, implementation: str) -> Callable[[type], type]:
    """Config-class decorator: register a block type whose module class lives at ``implementation``
    (``"package.module:Class"``, imported when a model is built)."""

    def decorate(config_cls: type) -> type:
        _register(_BLOCKS, config_cls, family, implementation)
        return config_cls

    return decorate


def loss_type(*, implementation: str) -> Callable[[type], type]:
    """Config-class decorator: register a loss type whose module class lives at ``implementation``."""

    def decorate(config_cls: type) -> type:
        _register(_LOSSES, config_cls, "loss", implementation)
        return config_cls

    return decorate


def register_block(config_cls: type[BaseModel], *, family: str = "other") -> Callable[[type], type]:
    """Class decorator: register a Block implementation (already imported) under its config's type name."""

    def decorate(impl: type) -> type:
        _register(_BLOCKS, config_cls, family, impl)
        return impl

    return decorate


def register_loss(config_cls: type[BaseModel]) -> Callable[[type], type]:
    """Class decorator: register a Loss implementation (already imported) under its config's type name."""

    def decorate(impl: type) -> type:
        _register(_LOSSES, config_cls, "loss", impl)
        return impl

    return decorate


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


#: Whether this process may import the modules a blueprint lists under ``plugins:`` (the
#: command line's ``--allow-plugins``; Python: :func:`allow_plugins` or ``allow_plugins=True``).
_PLUGINS = {"allowed": False}


def allow_plugins(allowed: bool = True) -> None:
    """Let every blueprint loaded by this process (and the search workers it starts) import the
    modules under its ``plugins:``; the command line's ``--allow-plugins`` calls it."""
    _PLUGINS["allowed"] = bool(allowed)


def plugins_allowed() -> bool:
    return _PLUGINS["allowed"]


def load_plugins(modules: list[str]) -> None:
    """Import user modules that register blocks or losses (only called when the user opts in)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ComposerError(f"could not import plugin module '{name}': {exc}") from exc
