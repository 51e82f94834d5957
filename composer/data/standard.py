"""The feature pickles of the field's standard releases (CMU-MOSI, CMU-MOSEI, CH-SIMS, ...).

Layout: a dict with splits ``train`` / ``valid`` / ``test`` (``dev`` is read as ``valid``),
each a dict of arrays with one row per sample:

==================  =================================================================
``text``            ``(N, T, D)`` word features (GloVe 300 or BERT 768)
``text_bert``       ``(N, 3, T)``: token ids, attention mask, segment ids, stacked
``audio``           ``(N, T_a, D_a)``; ``audio_lengths`` ``(N,)`` in unaligned files
``vision``          ``(N, T_v, D_v)``; ``vision_lengths`` ``(N,)`` in unaligned files
``regression_labels``  ``(N,)`` (or ``(N, 1)``) sentiment in [-3, 3]
``id``              ``(N,)`` sample names
==================  =================================================================

Each blueprint modality is read from the key of the same name; a ``tokens`` modality reads
``<name>_bert`` (``(N, 3, T)``) when present, else ``<name>`` as ids ``(N, T)`` or
``(N, 3, T)``. Aligned files have every sequence at the same T and usually no ``*_lengths``
(all steps valid). Non-finite feature values (NaN, ±inf, found in some audio releases) are
replaced by 0 and counted in :attr:`DataSplits.notes`. The label key is
``training.data.label_key``; class labels may be indices ``(N,)``, one-hot ``(N, C)``, and
multilabel ``(N, K)`` or ``(N, K, 2)`` (IEMOCAP: argmax of the last axis).

The file is read with a restricted unpickler that only rebuilds NumPy arrays and plain
Python containers, so a feature file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from composer.data.base import SPLITS, DataSplits, TensorSplit, named_splits
from composer.errors import DataError

__all__ = ["load_standard_pickle", "read_pickle", "standard_split", "standard_splits"]

_SAFE_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "complex", "bool", "slice", "bytearray")


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: only the latin-1 codec."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise DataError(f"the pickle asks for codec '{encoding}', which a feature file does not need; refusing to load it")
    return str(text).encode("latin1", errors)


def _numpy_core():
    """NumPy's core module (``numpy._core`` since NumPy 2, ``numpy.core`` before), already imported."""
    return getattr(np, "_core", None) or np.core


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The exact ``(module, name)`` pairs a feature pickle may name, resolved without importing anything.

    Arrays, dtypes and scalars of NumPy 1 and 2 (``numpy.core`` and ``numpy._core`` spellings),
    plain containers, and ``_codecs.encode`` for the bytes of protocol-2 pickles. Every other
    global is refused before any module is looked up, so a file cannot trigger an import.
    """
    core = _numpy_core()
    table: dict[tuple[str, str], Any] = {("builtins", n): getattr(__import__("builtins"), n) for n in _SAFE_BUILTINS}
    table[("__builtin__", "set")] = set  # Python 2 pickles
    table[("collections", "OrderedDict")] = __import__("collections").OrderedDict
    table[("collections", "defaultdict")] = __import__("collections").defaultdict
    table[("_codecs", "encode")] = _latin1_encode
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = core.multiarray.scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return table


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds NumPy arrays, scalars and plain containers from an exact allowlist; refuses any other global."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str):
        if _SafeUnpickler._allowed is None:
            _SafeUnpickler._allowed = _allowed_globals()
        found = _SafeUnpickler._allowed.get((module, name))
        if found is None:
            raise DataError(f"the pickle asks for '{module}.{name}', which a feature file does not need; refusing to load it")
        return found


def read_pickle(path: str | Path) -> Any:
    """Load a feature pickle with the restricted unpickler."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(io.BufferedReader(f)).load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable feature pickle ({type(exc).__name__}: {exc})") from None


def _numeric(where: str, key: str, value: Any, dtype) -> np.ndarray:
    """``value`` as a numeric array, or a DataError naming the key (strings, ragged lists, objects)."""
    try:
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"holds {arr.dtype} values")
        return arr.astype(dtype)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: key '{key}' is not a numeric array ({exc}); expected numbers") from None


def _float_features(where: str, value: Any, counts: dict[str, int]) -> torch.Tensor:
    arr = _numeric(where, where.rsplit(".", 1)[-1], value, np.float32)
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad:
        arr = np.where(bad, np.float32(0.0), arr)
        counts[where] = counts.get(where, 0) + n_bad
    return torch.from_numpy(np.ascontiguousarray(arr))


def _shape_error(where: str, key: str, got: tuple, expected: str, modality: str) -> DataError:
    return DataError(f"{where}: key '{key}' has shape {got}, but modality '{modality}' of the blueprint expects {expected}")


def _labels(where: str, d: dict, key: str, task, n: int) -> torch.Tensor:
    if key not in d:
        raise DataError(f"{where}: no label key '{key}' (keys: {', '.join(map(str, d))}); set training.data.label_key")
    y = _numeric(where, key, d[key], np.float64)
    if y.size == 0 or y.shape[0] != n:
        raise DataError(f"{where}: '{key}' has {y.shape[0] if y.ndim else 0} labels for {n} samples")
    if not np.all(np.isfinite(y)):
        raise DataError(f"{where}: '{key}' holds {int((~np.isfinite(y)).sum())} non-finite labels (NaN or inf); a label must be a number")
    if task.kind == "classification":
        if y.ndim >= 2 and y.reshape(n, -1).shape[1] == task.outputs:
            y = y.reshape(n, -1).argmax(axis=1)
        y = y.reshape(n)
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{where}: '{key}' holds non-integer values; a classification task needs class indices")
        y = y.astype(np.int64)
        if y.min() < 0 or y.max() >= task.outputs:
            raise DataError(f"{where}: '{key}' has classes {y.min()}..{y.max()}, expected 0..{task.outputs - 1}")
        return torch.from_numpy(y)
    if task.kind == "multilabel":
        if y.ndim == 3 and y.shape[2] == 2:
            y = y.argmax(axis=2)
        y = y.reshape(n, -1)
        if y.shape[1] != task.outputs:
            raise DataError(f"{where}: '{key}' has {y.shape[1]} labels per sample, expected {task.outputs}")
        return torch.from_numpy(y.astype(np.float32))
    y = y.astype(np.float32).reshape(n, -1)
    if y.shape[1] != task.outputs:
        raise DataError(f"{where}: '{key}' has {y.shape[1]} values per sample, expected {task.outputs}")
    return torch.from_numpy(y[:, 0].copy() if task.outputs == 1 else y)


def _ids(d: dict, n: int, split: str) -> list[str]:
    raw = d.get("id")
    if raw is None:
        return [f"{split}_{i}" for i in range(n)]
    arr = np.asarray(raw)
    if arr.size != n and not (arr.ndim > 1 and arr.shape[0] == n):
        raise DataError(f"{split}: 'id' has {arr.shape[0] if arr.ndim else 1} entries for {n} samples")
    if arr.ndim > 1:
        return ["_".join(str(x) for x in row) for row in arr.reshape(n, -1)]
    return [str(x) for x in arr.reshape(n)]


def standard_split(blueprint, d: dict, split: str, label_key: str, counts: dict[str, int], where: str = "data") -> TensorSplit:
    """One split of the standard layout -> a :class:`TensorSplit` in the batch layout."""
    if not isinstance(d, dict):
        raise DataError(f"{where}[{split}] is a {type(d).__name__}, expected a dict of arrays")
    if not all(isinstance(k, str) for k in d):
        raise DataError(f"{where}[{split}]: keys must be strings, got {sorted({type(k).__name__ for k in d})}")
    tensors: dict[str, torch.Tensor] = {}
    n = None
    times: dict[str, tuple[str, int]] = {}
    for name, m in blueprint.modalities.items():
        here = f"{where}[{split}]"
        if m.kind == "tokens":
            key = f"{name}_bert" if f"{name}_bert" in d else name
            if key not in d:
                raise DataError(f"{here}: no key '{name}_bert' or '{name}' for token modality '{name}' (keys: {', '.join(map(str, d))})")
            arr = _numeric(here, key, d[key], np.float64)
            if arr.ndim == 3 and arr.shape[1] == 3:
                ids, mask, segment = arr[:, 0], arr[:, 1] > 0, arr[:, 2]
            elif arr.ndim == 2:
                ids, mask, segment = arr, arr != 0, np.zeros_like(arr)
            else:
                raise _shape_error(here, key, arr.shape, "(N, 3, T) (token ids, attention mask, segment ids) or (N, T) ids", name)
            ids = np.round(ids).astype(np.int64)
            if ids.min() < 0 or ids.max() >= m.vocab:
                raise DataError(f"{here}: key '{key}' has token ids {ids.min()}..{ids.max()}, outside the vocabulary of modality '{name}' (vocab {m.vocab})")
            tensors[name] = torch.from_numpy(ids)
            tensors[f"{name}_mask"] = torch.from_numpy(np.ascontiguousarray(mask))
            tensors[f"{name}_segment"] = torch.from_numpy(np.round(segment).astype(np.int64))
            t = ids.shape[1]
        else:
            if name not in d:
                raise DataError(f"{here}: no key '{name}' for modality '{name}' (keys: {', '.join(map(str, d))})")
            x = _float_features(f"{split}.{name}", d[name], counts)
            expected = {"sequence": (3, f"(N, T, {m.features})"), "vector": (2, f"(N, {m.features})")}.get(
                m.kind, (2 + len(m.spatial), "(N, " + ", ".join(map(str, (m.features, *m.spatial))) + ")")
            )
            ok = x.dim() == expected[0] and (
                x.shape[-1] == m.features if m.kind == "sequence" else tuple(x.shape[1:]) == (m.features, *m.spatial)
            )
            if not ok:
                raise _shape_error(here, name, tuple(x.shape), expected[1], name)
            tensors[name] = x
            t = x.shape[1] if m.kind == "sequence" else None
            lengths = d.get(f"{name}_lengths")
            if m.kind == "sequence" and lengths is not None:
                lens = _numeric(here, f"{name}_lengths", lengths, np.int64).reshape(-1)
                if len(lens) != x.shape[0]:
                    raise DataError(f"{here}: '{name}_lengths' has {len(lens)} entries for {x.shape[0]} samples of '{name}'")
                tensors[f"{name}_lengths"] = torch.from_numpy(np.clip(lens, 1, t))
        if n is None:
            n = int(tensors[name].shape[0])
        elif tensors[name].shape[0] != n:
            raise DataError(f"{where}[{split}]: '{name}' has {tensors[name].shape[0]} samples, other keys {n}")
        if t is not None and m.kind in ("sequence", "tokens"):
            symbol = m.time_symbol(name)
            if symbol in times and times[symbol][1] != t:
                other, t_other = times[symbol]
                raise DataError(
                    f"{where}[{split}]: modalities '{other}' and '{name}' share the time axis '{symbol}' (aligned) "
                    f"but have {t_other} and {t} steps; use an aligned file or give them different `time:`"
                )
            times[symbol] = (name, t)
    tensors["label"] = _labels(f"{where}[{split}]", d, label_key, blueprint.task, n)
    return TensorSplit(tensors, _ids(d, n, split))


def load_standard_pickle(blueprint, path: str | Path, *, label_key: str | None = None) -> DataSplits:
    """Read a standard-layout feature pickle for the blueprint's modalities and task."""
    return standard_splits(blueprint, read_pickle(path), path, label_key=label_key)


def standard_splits(blueprint, data: Any, path: str | Path, *, label_key: str | None = None) -> DataSplits:
    """The splits of an already unpickled standard-layout object read from ``path``."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of splits (train, valid, test), got {type(data).__name__}")
    data = named_splits(data, path, SPLITS)
    label_key = label_key or blueprint.training.data.label_key
    counts: dict[str, int] = {}
    splits = {s: standard_split(blueprint, data[s], s, label_key, counts, where=str(path)) for s in SPLITS}
    notes = [f"{path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())]
    total = sum(counts.values())
    detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
    notes.append(f"cleaned {total} non-finite feature value{'s' if total != 1 else ''} (NaN/inf -> 0)" + (f" ({detail})" if detail else ""))
    return DataSplits(splits, notes=notes, source=str(path))
