"""One entry point for a run's data: :func:`load_data`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from composer.data.normalize import normalize_splits
from composer.data.base import DataSplits, Dataset, check_split, splits_from_arrays
from composer.data.budget import Budget
from composer.data.csd import load_csd
from composer.data.mag import is_mag_layout, mag_splits
from composer.data.standard import standard_splits
from composer.data.unpickle import read_pickle
from composer.data.synthetic import synthetic_data
from composer.errors import DataError

__all__ = ["load_data", "load_feature_pickle"]

PICKLE_SUFFIXES = (".pkl", ".pickle")


def load_feature_pickle(blueprint, path: str | Path, *, layout: str | None = None) -> DataSplits:
    """A feature pickle in the standard layout (splits are dicts of arrays) or the MAG layout
    (splits are lists of examples), told apart by its content; ``layout="mag_pickle"`` insists
    on the MAG layout."""
    budget = Budget([path]) if Path(path).is_file() else None
    data = read_pickle(path, budget)
    if is_mag_layout(data) or layout == "mag_pickle":  # the MAG reader names the layout it expected
        return mag_splits(blueprint, data, path, vocab=blueprint.training.data.vocab, budget=budget)
    return standard_splits(blueprint, data, path, budget=budget)


def _configured(blueprint) -> Any:
    cfg = blueprint.training.data
    if cfg.source == "csd":
        return load_csd(blueprint, cfg.paths, cfg.split, vocab=cfg.vocab, label_columns=cfg.label_columns)
    if cfg.source in ("pickle", "mag_pickle"):
        if cfg.path is None:
            raise DataError(f"training.data.source is '{cfg.source}' but training.data.path is not set")
        return load_feature_pickle(blueprint, cfg.path, layout=cfg.source)
    return "synthetic"


def load_data(blueprint, data: Any = None) -> DataSplits:
    """Splits for ``blueprint`` from ``data``:

    * ``None``: what ``training.data`` says (the synthetic set by default; ``source: pickle`` or
      ``mag_pickle`` with ``path``; ``source: csd`` with ``paths`` and ``split``);
    * ``"synthetic"``: the built-in synthetic set;
    * a path to a ``.pkl`` / ``.pickle`` file in the standard or the MAG layout;
    * a :class:`DataSplits`, an object with ``load(blueprint) -> DataSplits`` (:class:`Dataset`),
      or a mapping ``{split: {key: array}}`` in the batch layout.

    Every split is checked against the blueprint's modalities.
    """
    if data is None:
        data = _configured(blueprint)
    if isinstance(data, DataSplits):
        out = data
    elif isinstance(data, Dataset):
        out = data.load(blueprint)
        if not isinstance(out, DataSplits):
            raise DataError(f"{type(data).__name__}.load() returned {type(out).__name__}, expected DataSplits")
    elif isinstance(data, Mapping):
        out = splits_from_arrays(blueprint, data)
    elif str(data) == "synthetic":
        out = synthetic_data(blueprint)
    elif Path(str(data)).suffix in PICKLE_SUFFIXES:
        out = load_feature_pickle(blueprint, data)
    elif Path(str(data)).suffix == ".csd":
        raise DataError(
            f"'{data}' is one computational sequence; a run reads one per modality plus labels: set training.data.source: csd "
            "with training.data.paths and training.data.split"
        )
    else:
        raise DataError(f"don't know how to read '{data}': give 'synthetic' or a .pkl/.pickle file (standard or MAG layout)")
    for name, split in out.splits.items():
        check_split(blueprint, split, f"{out.source or 'data'}[{name}]")
    return normalize_splits(blueprint, out)
