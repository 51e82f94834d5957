"""Turning a blueprint's ``search.space`` into Optuna suggestions and back into overrides.

Each key of the space is a blueprint path; a trial's sample is a mapping path -> value,
applied to the raw blueprint data and validated again before anything is built. Choices that
are not plain scalars (lists, mappings) are offered to Optuna by index and mapped back.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna

from composer.blueprint.schema import SearchSpaceEntry

__all__ = ["suggest", "grid", "is_plain", "SpaceError"]


def is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _choice_param(entry: SearchSpaceEntry) -> tuple[list[Any], bool]:
    """Optuna-storable choices, and whether they stand for indices into the real values."""
    if all(is_plain(c) for c in entry.choice):
        return list(entry.choice), False
    return list(range(len(entry.choice))), True


class SpaceError(ValueError):
    """A sampled range that cannot be drawn from (an expression bound that fails or an empty range)."""


def suggest(trial: optuna.Trial, space: dict[str, SearchSpaceEntry], bound: Callable[[str, dict[str, Any]], float] | None = None) -> dict[str, Any]:
    """Sample one value per path, in the order of the space; returns path -> value.

    A bound written as an expression (``"${vars.experts}"``) is resolved by ``bound(text,
    sample so far)``, so a range may depend on values sampled before it (``top_k`` up to the
    sampled number of experts)."""
    sample: dict[str, Any] = {}

    def resolve(value):
        if isinstance(value, str):
            if bound is None:
                raise SpaceError(f"bound {value!r} needs the blueprint to be resolved")
            return bound(value, sample)
        return value

    for path, entry in space.items():
        if entry.choice is not None:
            options, indexed = _choice_param(entry)
            picked = trial.suggest_categorical(path, options)
            sample[path] = entry.choice[picked] if indexed else picked
            continue
        low, high = (resolve(b) for b in (entry.int_range or entry.float_range))
        if low > high:
            raise SpaceError(f"{path}: the range [{low}, {high}] is empty for the values sampled before it")
        if entry.int_range is not None:
            step = int(entry.step) if entry.step else 1
            sample[path] = trial.suggest_int(path, int(low), int(high), step=step, log=entry.log)
        else:
            sample[path] = trial.suggest_float(path, float(low), float(high), step=entry.step, log=entry.log)
    return sample


def grid(space: dict[str, SearchSpaceEntry]) -> dict[str, list[Any]]:
    """The search space for Optuna's GridSampler (every path needs a finite set of values)."""
    out: dict[str, list[Any]] = {}
    for path, entry in space.items():
        if entry.choice is not None:
            out[path] = _choice_param(entry)[0]
        elif any(isinstance(b, str) for b in (entry.int_range or entry.float_range)):
            from composer.errors import ComposerError

            raise ComposerError(f"grid search needs fixed bounds for '{path}', not expressions; use tpe or random")
        elif entry.int_range is not None:
            low, high = entry.int_range
            out[path] = list(range(low, high + 1, int(entry.step or 1)))
        elif entry.step:
            low, high = entry.float_range
            n = int(round((high - low) / entry.step))
            out[path] = [low + i * entry.step for i in range(n + 1)]
        else:
            from composer.errors import ComposerError

            raise ComposerError(f"grid search needs a finite set for '{path}': give `step` or use `choice`")
    return out
