"""Training: configuration, trainer, checkpoints, views, evaluation.

``composer.train(...)`` calls :func:`composer.train.trainer.train` (this package is callable),
so the Python API reads like the CLI while ``composer.blueprint.training`` & co. stay importable.
The trainer is imported lazily: :mod:`composer.blueprint.training` is part of the blueprint
schema, which must import without the trainer (and its imports of the blueprint loader).
"""

from __future__ import annotations

import importlib

from composer._callable import make_callable

__all__ = ["EvalResult", "Trainer", "TrainResult", "evaluate", "evaluate_split", "load_trained", "parse_rates", "train"]

_WHERE = {
    "EvalResult": "evaluation",
    "evaluate": "evaluation",
    "load_trained": "evaluation",
    "parse_rates": "evaluation",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "evaluate_split": "trainer",
    "train": "trainer",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"composer.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'composer.train' has no attribute '{name}'")


make_callable(__name__, "composer.train.trainer:train")  # composer.train(...) trains
