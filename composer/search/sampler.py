"""The sampler of a study, stated in full and recorded in the study, so that the installed
Optuna's defaults never decide what a search draws and a study is never resumed under another sampler.

Optuna changes its samplers' defaults between versions (Optuna 5 made TPE multivariate and its
constant liar the default), so Composer passes every setting that shapes the draws itself
(:data:`SAMPLER_OPTIONS`) instead of inheriting the installed version's defaults. The study's
user attributes record what it was begun with (:func:`record_sampler`):

* ``sampler``: ``{"name", "seed", "options"}``: the sampler's name (``tpe``, ``random``,
  ``grid``, ``nsga2``), the seed the study was begun with (each worker seeds its own sampler from
  the search's seed, its index and the study's trial count) and the options above;
* ``sampler_seeds``: every search seed that ran the study (workers on other machines may join
  with their own ``--seed``, so that they draw other configurations);
* ``optuna_version``: the Optuna that began the study; ``optuna_versions``: every Optuna that ran it.

Resuming (or joining) a study with another sampler or other options is refused with the
difference and the way out (the recorded ``--sampler``, or a new ``--study``). Another seed or
another Optuna version is allowed, with a note, and added to its list.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import optuna

from composer.errors import ComposerError
from composer.search.space import grid

__all__ = ["SAMPLER_OPTIONS", "make_sampler", "sampler_record", "record_sampler", "describe_sampler"]

#: Every setting of each sampler that shapes its draws (Optuna 5's behaviour, pinned).
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"n_startup_trials": 10, "n_ei_candidates": 24, "multivariate": True, "group": False, "constant_liar": True},
    "random": {},
    "grid": {},
    "nsga2": {"population_size": 50, "crossover_prob": 0.9, "swapping_prob": 0.5},
}


def make_sampler(name: str, space: dict, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` with its :data:`SAMPLER_OPTIONS` and ``seed`` given explicitly
    (``grid``: the space's grid, :func:`~composer.search.space.grid`)."""
    options = SAMPLER_OPTIONS[name]
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **options)
    return optuna.samplers.TPESampler(seed=seed, **options)


def sampler_record(name: str, seed: int) -> dict[str, Any]:
    """What a study records about its sampler: ``{"name", "seed", "options"}``."""
    return {"name": name, "seed": int(seed), "options": dict(SAMPLER_OPTIONS[name])}


def describe_sampler(record: dict[str, Any]) -> str:
    """``tpe (seed 0; n_startup_trials=10, ...)``."""
    options = ", ".join(f"{k}={v}" for k, v in (record.get("options") or {}).items())
    return f"{record.get('name')} (seed {record.get('seed')}{'; ' + options if options else ''})"


def _differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = [f"name {then.get('name')!r} then, {now['name']!r} now"] if then.get("name") != now["name"] else []
    old, new = then.get("options") or {}, now["options"]
    out += [f"option {k} {old.get(k, 'unset')!r} then, {new.get(k, 'unset')!r} now" for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
    return out


def _add(study: optuna.Study, key: str, value: Any, first: Any) -> list:
    """Append ``value`` to the study's list attribute ``key`` (begun with ``first``); returns
    the list as it was."""
    before = list(study.user_attrs.get(key) or [first])
    if value not in before:
        study.set_user_attr(key, [*before, value])
    elif study.user_attrs.get(key) != before:
        study.set_user_attr(key, before)
    return before


def record_sampler(study: optuna.Study, record: dict[str, Any], where: str, say: Callable[[str], None] | None = None) -> None:
    """Record ``record`` (:func:`sampler_record`) and the Optuna version in a new study; in one
    being resumed, refuse another sampler or other options, and note another seed or Optuna version.

    ``where`` names the storage in messages; ``say(text)`` hears the notes (default: stderr)."""
    say = say or (lambda text: print(text, file=sys.stderr))
    attrs = study.user_attrs
    then = attrs.get("sampler")
    if isinstance(then, dict):
        differ = _differences(then, record)
        if differ:
            began = attrs.get("optuna_version", "an unrecorded version")
            raise ComposerError(
                f"{where}: study '{study.study_name}' was begun with sampler {describe_sampler(then)} under Optuna {began}; resuming it "
                f"with {describe_sampler(record)} would draw its remaining trials another way and the search could not be reproduced "
                f"({'; '.join(differ)}); run it with --sampler {then.get('name')} (and the same search.sampler), or start a new study "
                "with --study NAME"
            )
    else:
        if study.trials:
            say(f"note: study '{study.study_name}' in {where} records no sampler (begun by an older Composer); "
                f"from now on it records {describe_sampler(record)}")
        study.set_user_attr("sampler", record)
        study.set_user_attr("optuna_version", optuna.__version__)
        then, attrs = record, {**attrs, "sampler": record, "optuna_version": optuna.__version__}
    seeds = _add(study, "sampler_seeds", record["seed"], then.get("seed"))
    if record["seed"] not in seeds:
        say(f"note: study '{study.study_name}' was begun with seed {then.get('seed')}; this search draws with seed {record['seed']} "
            f"(recorded: seeds {', '.join(map(str, [*seeds, record['seed']]))})")
    versions = _add(study, "optuna_versions", optuna.__version__, attrs.get("optuna_version", optuna.__version__))
    if optuna.__version__ not in versions:
        say(f"note: study '{study.study_name}' was begun under Optuna {versions[0]} and now runs under {optuna.__version__}; "
            f"its sampler's settings are stated in full ({describe_sampler(record)}), so the draws do not depend on either version's defaults")
