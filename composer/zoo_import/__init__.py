"""Weights saved by MMSA 2.2.1 for a zoo model, as a Composer weights file (``composer import-weights``).

One explicit name map per zoo model (``blueprints/zoo/``) says which MMSA tensor becomes which
Composer tensor; ``tests/test_mmsa_zoo.py`` proves the same maps (every tensor on both sides
used once, equal predictions and gradients). A map is a function of the compiled Composer model
(the blueprint at the chosen dataset), so the MMSA names it expects follow from the blueprint,
never from the file: ``MMSA name -> Composer name``, or ``None`` for MMSA's frozen constants that
are config values in Composer (checked against the blueprint instead).

The file is read with ``torch.load(weights_only=True)``: only tensors and plain containers are
unpickled, anything else is refused without running code. MMSA's trainers save
``AMIO.state_dict()``, whose names start with ``Model.``; a bare module's state dict is read too.

The maps live one family a module in this package (``classic``, ...): each module that does not
start with ``_`` exports ``NAME_MAPS`` (blueprint name -> map function) and, where it has them,
``CONSTANTS`` (MMSA's frozen constants -> their value in the blueprint), ``MISSING_NOTES``
(blueprint name -> (tensor-name prefix, why MMSA's files lack such tensors)) and ``UNUSED``
(blueprint name -> prefixes of tensors, mapped to None, that MMSA saves but its forward never
reads: MFM's unused MFN output layers; they must be in the file and are dropped). This module
collects them; a blueprint name claimed twice is an error at import.
"""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from composer.errors import ComposerError, DataError
from composer.zoo_import._pieces import NameMap

__all__ = ["NAME_MAPS", "CONSTANTS", "MISSING_NOTES", "UNUSED", "import_mmsa_weights", "read_state_dict", "map_state_dict", "trainer_state"]


def _collect() -> tuple[dict, dict, dict, dict]:
    """Every family module's maps, constants, notes and unused tensors, keyed by blueprint name."""
    maps: dict[str, Callable[[Any], NameMap]] = {}
    constants: dict[str, dict[str, Callable[[Any], float]]] = {}
    notes: dict[str, tuple[str, str]] = {}
    unused: dict[str, tuple[str, ...]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name in module.NAME_MAPS:
            if name in maps:
                raise RuntimeError(f"composer.zoo_import.{info.name} maps '{name}', which another family module maps already")
        maps.update(module.NAME_MAPS)
        constants.update(getattr(module, "CONSTANTS", {}))
        notes.update(getattr(module, "MISSING_NOTES", {}))
        unused.update(getattr(module, "UNUSED", {}))
    return maps, constants, notes, unused


NAME_MAPS, CONSTANTS, MISSING_NOTES, UNUSED = _collect()


# -- reading and mapping -------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, unpickling nothing but tensors (``weights_only``).

    MMSA's ``Model.`` prefix (its ``AMIO`` wrapper) is removed. Raises :class:`DataError` for a
    missing file, a pickle with other objects, or anything but a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no MMSA weights file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: not a tensors-only state dict (read with torch.load(weights_only=True), which unpickles "
            f"tensors and plain containers only and runs no code): {reason}"
        ) from None
    if not isinstance(state, Mapping):
        raise DataError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DataError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor named by a string")
    if state and all(k.startswith("Model.") for k in state):  # AMIO.state_dict(): the model under AMIO.Model
        state = {k.removeprefix("Model."): v for k, v in state.items()}
    return dict(state)


def map_state_dict(state: Mapping[str, torch.Tensor], model, source: str = "the MMSA state dict") -> dict[str, torch.Tensor]:
    """MMSA's tensors renamed for ``model`` through its zoo name map, every one checked.

    Refuses (:class:`DataError`) a tensor the map does not expect, one it expects that is missing,
    a shape that differs from the model's, and a frozen constant that differs from the blueprint.
    """
    name = model.blueprint.name
    if name not in NAME_MAPS:
        raise ComposerError(f"blueprint '{name}' has no MMSA name map; import-weights reads {', '.join(sorted(NAME_MAPS))}")
    names = NAME_MAPS[name](model)
    missing, extra = sorted(set(names) - set(state)), sorted(set(state) - set(names))
    problems = []
    if missing:
        prefix, why = MISSING_NOTES.get(name, (None, ""))
        note = f" ({why})" if prefix is not None and any(k.startswith(prefix) for k in missing) else ""
        problems.append(f"missing {len(missing)} tensor(s) the {name} blueprint needs: {', '.join(missing)}{note}")
    if extra:
        problems.append(f"{len(extra)} tensor(s) the {name} blueprint has no place for: {', '.join(extra)}")
    target = model.state_dict()
    for mmsa_name, ours in names.items():
        if mmsa_name not in state:
            continue
        tensor = state[mmsa_name]
        if ours is None and mmsa_name.startswith(UNUSED.get(name, ())):
            continue  # saved by MMSA, never read by its forward: dropped
        if ours is None:
            expected = CONSTANTS[name][mmsa_name](model)
            if tensor.numel() != 1 or abs(float(tensor) - expected) > 1e-6:
                problems.append(f"{mmsa_name} is {tensor.tolist()}, the blueprint's value is {expected}")
        elif tuple(tensor.shape) != tuple(target[ours].shape):
            problems.append(f"{mmsa_name} has shape {tuple(tensor.shape)}, {ours} needs {tuple(target[ours].shape)}")
        elif tensor.dtype != target[ours].dtype and not (tensor.is_floating_point() and target[ours].is_floating_point()):
            problems.append(f"{mmsa_name} is {tensor.dtype}, {ours} is {target[ours].dtype}")
    if problems:
        hint = "check --dataset and --set: the blueprint must be the configuration MMSA trained"
        raise DataError(f"{source} does not match blueprint '{name}' exactly: " + "; ".join(problems) + f" ({hint})")
    return {ours: state[k].to(target[ours].dtype) for k, ours in names.items() if ours is not None}


def trainer_state(model) -> dict[str, torch.Tensor]:
    """The buffers of the model's training-only blocks, as built: state MMSA's trainers keep outside
    the module (Self-MM's generated labels), so no MMSA file holds it."""
    owners = tuple(f"{bid.replace('/', '.')}." for bid in model.plan.training_only)
    parameters = {n for n, _ in model.named_parameters()}
    return {k: v for k, v in model.state_dict().items() if k.startswith(owners) and k not in parameters}


def import_mmsa_weights(
    state_path: str | Path, blueprint: str | Path, output: str | Path, *, dataset: str | None = None, overrides: list[str] | None = None
) -> Path:
    """Read an MMSA state dict, map it onto the zoo blueprint (at ``dataset``, with ``--set`` style
    ``overrides``) and write a Composer weights file (:func:`composer.load_model` reads it)."""
    from composer.blueprint.load import load_blueprint
    from composer.graph.model import compile_blueprint

    state = read_state_dict(state_path)
    model = compile_blueprint(load_blueprint(Path(blueprint), list(overrides or []), dataset=dataset))
    # buffers of training-only blocks (Self-MM's ulgm: its labels and features) are trainer state
    # that MMSA keeps outside the model and never saves: they stay as built
    mapped = {**trainer_state(model), **map_state_dict(state, model, str(state_path))}
    model.load_state_dict(mapped, strict=True)
    return model.save(output, extra={"composer.imported_from": f"MMSA 2.2.1 state dict {Path(state_path).name}"})
