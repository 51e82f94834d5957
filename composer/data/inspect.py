"""``composer data inspect``: what a feature file holds, read without trusting it.

The layout is detected from the file: HDF5 (a CMU-MultimodalSDK computational sequence,
``.csd``), else a pickle read with the restricted unpickler, in the standard layout (splits are
dicts of arrays) or the MAG layout (splits are lists of ``((words, visual, acoustic), label,
segment)``). Per split (for a ``.csd``: its one sequence) it lists every key with its shape,
dtype, value range and number of non-finite values, and the sample count; ragged parts (one
array per sample or per video) are summarised as ``(N, min..max, D)``. Nothing is built from
the file and no code runs; metadata is shown as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from composer.data.budget import Budget
from composer.data.csd import Sequence, is_hdf5
from composer.data.base import shown
from composer.data.mag import is_mag_layout
from composer.data.unpickle import as_array, read_pickle
from composer.errors import DataError

__all__ = ["inspect_file"]


def _describe(value: Any, budget: Budget) -> dict[str, Any]:
    try:
        arr = as_array(value, budget, "a value")
    except (ValueError, TypeError, RecursionError) as exc:  # ragged lists and the like
        return {"kind": type(value).__name__, "note": f"not an array ({shown(str(exc), 120)})"}
    row: dict[str, Any] = {"shape": tuple(arr.shape), "dtype": str(arr.dtype)}
    if arr.dtype.kind not in "biuf":
        return row
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr.reshape(-1)
    if arr.dtype.kind == "f":
        row["non_finite"] = int(arr.size - finite.size)
    if finite.size:
        row["min"], row["max"] = float(finite.min()), float(finite.max())
    return row


class _Ragged:
    """Running summary of many arrays of shape ``(rows_i, D)``: ``(N, min..max rows, D)``."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.n, self.rows, self.widths, self.dtypes = 0, [], set(), set()
        self.non_finite, self.low, self.high = 0, np.inf, -np.inf
        self._seen: dict[int, tuple[Any, dict]] = {}

    def add(self, arr: Any) -> None:
        self.n += 1
        a = as_array(arr, self.budget, "a value")
        self.rows.append(a.shape[0] if a.ndim else 1)
        self.widths.add(a.shape[1:] if a.ndim > 1 else ())
        self.dtypes.add(str(a.dtype))
        seen = self._seen.get(id(arr))  # the same object referenced twice is summarised once
        if seen is None:  # (the object is kept so that its id is not reused)
            seen = self._seen[id(arr)] = (arr, _describe(a, self.budget) if a.dtype.kind in "biuf" else {})
        stats = seen[1]
        self.non_finite += stats.get("non_finite", 0)
        self.low, self.high = min(self.low, stats.get("min", np.inf)), max(self.high, stats.get("max", -np.inf))

    def row(self) -> dict[str, Any]:
        if not self.n:
            return {"note": "empty"}
        lo, hi = min(self.rows), max(self.rows)
        rows = str(lo) if lo == hi else f"{lo}..{hi}"
        width = ", ".join(" | ".join(str(d) for d in sorted({w[i] for w in self.widths if len(w) > i})) for i in range(max(map(len, self.widths))))
        out: dict[str, Any] = {"shape": f"({self.n}, {rows}{', ' + width if width else ''})", "dtype": " | ".join(sorted(self.dtypes))}
        if np.isfinite(self.low):
            out["min"], out["max"] = float(self.low), float(self.high)
        if any(d.startswith("float") for d in self.dtypes):
            out["non_finite"] = self.non_finite
        return out


def _mag_split(examples: Any, budget: Budget) -> dict[str, Any]:
    if not isinstance(examples, (list, tuple)):
        return {"note": f"a {type(examples).__name__}, not a list of examples"}
    parts = {k: _Ragged(budget) for k in ("words", "visual", "acoustic", "label")}
    first = None
    for i, ex in enumerate(examples):
        try:
            (words, visual, acoustic), label, segment = ex
        except (TypeError, ValueError):
            return {"note": f"example {i} is not ((words, visual, acoustic), label, segment)"}
        try:
            parts["words"].add(np.asarray(words if isinstance(words, (list, tuple, np.ndarray)) else [words], dtype=object).reshape(-1))
            parts["visual"].add(visual)
            parts["acoustic"].add(acoustic)
            parts["label"].add(as_array(label, budget, "a label").reshape(-1))
        except (ValueError, TypeError) as exc:
            return {"note": f"example {i} holds parts that are not arrays ({shown(str(exc), 120)})"}
        first = segment if first is None else first
    keys = {k: v.row() for k, v in parts.items()}
    keys["words"]["dtype"] = "words"
    keys["segment"] = {"note": f"first: {shown(first, 80) if isinstance(first, (str, bytes, int, float)) else 'a ' + type(first).__name__}"}
    return {"samples": [len(examples)], "keys": keys}


def _inspect_pickle(path: Path) -> dict[str, Any]:
    budget = Budget([path])
    data = read_pickle(path, budget)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of splits (train, valid, test), got {type(data).__name__}")
    mag = is_mag_layout(data)
    out: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size, "layout": "mag_pickle" if mag else "standard", "splits": {}}
    for split, content in data.items():
        if mag:
            out["splits"][shown(split)] = _mag_split(content, budget)
            continue
        if not isinstance(content, dict):
            out["splits"][shown(split)] = {"note": f"a {type(content).__name__}, not a dict of arrays"}
            continue
        keys = {shown(k): _describe(v, budget) for k, v in content.items()}
        sizes = {row["shape"][0] for row in keys.values() if row.get("shape")}
        out["splits"][shown(split)] = {"samples": sorted(sizes), "keys": keys}
    return out


def _inspect_csd(path: Path) -> dict[str, Any]:
    budget = Budget([path])
    with Sequence(path) as seq:
        feats, ivals, bad = _Ragged(budget), _Ragged(budget), 0
        words = 0
        for entry in seq.entries:
            intervals, values = seq.read(entry, budget)
            ivals.add(intervals)
            bad += int((intervals[:, 1] < intervals[:, 0]).sum())
            if isinstance(values, list):
                words += len(values)
                feats.add(np.zeros((len(values), 1), dtype="S1"))
            else:
                feats.add(values)
        keys = {"features": feats.row(), "intervals": {**ivals.row(), "note": f"{bad} end before start"}}
        if words:
            keys["features"]["dtype"] = f"words ({words})"
        keys.update({f"metadata: {shown(k)}": {"note": shown(v, 120)} for k, v in seq.metadata(limit=120).items()})
        return {
            "file": str(path), "bytes": path.stat().st_size, "layout": "csd", "root": shown(seq.name),
            "splits": {shown(seq.name): {"samples": [len(seq.entries)], "keys": keys}},
        }


def inspect_file(path: str | Path) -> dict[str, Any]:
    """Splits -> {key -> shape, dtype, non-finite count, min/max} of a feature file (layout detected)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if is_hdf5(path):
        return _inspect_csd(path)
    if path.suffix not in (".pkl", ".pickle"):
        raise DataError(f"{path}: `data inspect` reads feature pickles (.pkl/.pickle, standard or MAG layout) and computational sequences (.csd, HDF5)")
    return _inspect_pickle(path)
