"""``composer data inspect``: what a feature file holds, read without trusting it.

For a standard-layout pickle (read with the restricted unpickler) it lists, per split, every
key with its shape, dtype and number of non-finite values, the sample count, and for
``*_lengths`` keys the range of lengths; nothing is built from the file and no code runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from composer.data.standard import read_pickle
from composer.errors import DataError

__all__ = ["inspect_file"]


def _describe(value: Any) -> dict[str, Any]:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        return {"kind": type(value).__name__, "note": f"not an array ({exc})"}
    row: dict[str, Any] = {"shape": tuple(arr.shape), "dtype": str(arr.dtype)}
    if arr.dtype.kind not in "biuf":
        return row
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr.reshape(-1)
    if arr.dtype.kind == "f":
        row["non_finite"] = int(arr.size - finite.size)
    if finite.size:
        row["min"], row["max"] = float(finite.min()), float(finite.max())
    return row


def inspect_file(path: str | Path) -> dict[str, Any]:
    """Splits -> {key -> shape, dtype, non-finite count, min/max} of a standard-layout feature pickle."""
    path = Path(path)
    if path.suffix not in (".pkl", ".pickle"):
        raise DataError(f"{path}: `data inspect` reads standard-layout feature pickles (.pkl/.pickle)")
    data = read_pickle(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of splits (train, valid, test), got {type(data).__name__}")
    out: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size, "splits": {}}
    for split, content in data.items():
        if not isinstance(content, dict):
            out["splits"][str(split)] = {"note": f"a {type(content).__name__}, not a dict of arrays"}
            continue
        keys = {str(k): _describe(v) for k, v in content.items()}
        sizes = {row["shape"][0] for row in keys.values() if row.get("shape")}
        out["splits"][str(split)] = {"samples": sorted(sizes), "keys": keys}
    return out
