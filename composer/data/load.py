"""One entry point for a run's data: :func:`load_data`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from composer.data.base import DataSplits, Dataset, check_split, splits_from_arrays
from composer.data.standard import load_standard_pickle
from composer.data.synthetic import synthetic_data
from composer.errors import DataError

__all__ = ["load_data"]


def load_data(blueprint, data: Any = None) -> DataSplits:
    """Splits for ``blueprint`` from ``data``:

    * ``None``: what ``training.data`` says (the synthetic set by default, or ``source: pickle``
      with ``path``);
    * ``"synthetic"``: the built-in synthetic set;
    * a path to a ``.pkl`` / ``.pickle`` file in the standard layout;
    * a :class:`DataSplits`, an object with ``load(blueprint) -> DataSplits`` (:class:`Dataset`),
      or a mapping ``{split: {key: array}}`` in the batch layout.

    Every split is checked against the blueprint's modalities.
    """
    cfg = blueprint.training.data
    if data is None:
        data = cfg.path if cfg.source == "pickle" else "synthetic"
        if data is None:
            raise DataError("training.data.source is 'pickle' but training.data.path is not set")
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
    elif Path(str(data)).suffix in (".pkl", ".pickle"):
        out = load_standard_pickle(blueprint, data)
    else:
        raise DataError(f"don't know how to read '{data}': give 'synthetic' or a standard-layout .pkl/.pickle file")
    for name, split in out.splits.items():
        check_split(blueprint, split, f"{out.source or 'data'}[{name}]")
    return out
