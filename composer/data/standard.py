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
``(N, 3, T)``. Aligned files have every sequence at the same T and usually no ``*_lengths``: a
modality aligned with another (one ``time:`` symbol) takes the lengths of the first on that axis
whose lengths the file gives (MMSA's ``aligned_50``: audio and vision take the words' attention
mask, ``text_bert[:, 1]``, as MMSA does), and one note per modality says where its lengths came
from. Non-finite feature values (NaN, ±inf, found in some audio releases) are replaced by 0 and
counted in :attr:`DataSplits.notes`. The label key is
``training.data.label_key``; each ``training.data.extra_labels`` entry ``name: key`` adds
``label_<name>`` read from ``key`` the same way (CH-SIMS' unimodal ``regression_labels_T/A/V``); class labels may be indices ``(N,)``, one-hot ``(N, C)``, and
multilabel ``(N, K)`` or ``(N, K, 2)`` (IEMOCAP: argmax of the last axis).

The file is read with a restricted unpickler that only rebuilds NumPy arrays and plain
Python containers, so a feature file cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from composer.data.base import SPLITS, DataSplits, TensorSplit, named_splits, shown
from composer.data.budget import Budget
from composer.data.unpickle import as_array, read_pickle
from composer.errors import DataError

__all__ = ["load_standard_pickle", "read_pickle", "standard_split", "standard_splits"]



@dataclass
class _Read:
    """What reading one file keeps across its splits: the budget, the non-finite counts per
    ``split.modality``, and one note per modality whose padding came from somewhere else."""

    budget: Budget
    counts: dict[str, int] = field(default_factory=dict)
    padding: dict[str, str] = field(default_factory=dict)
    clipped: dict[tuple[str, str], int] = field(default_factory=dict)


def _numeric(where: str, key: str, value: Any, dtype, budget: Budget | None = None) -> np.ndarray:
    """``value`` as a numeric array, or a DataError naming the key (strings, ragged lists, objects).
    With a ``budget``, what the conversion allocates is counted first."""
    try:
        arr = np.asarray(value) if budget is None else as_array(value, budget, f"key '{key}' of {where}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"holds {arr.dtype} values")
        if budget is not None:
            budget.take(arr.size * np.dtype(dtype).itemsize, f"key '{key}' of {where} as {np.dtype(dtype)}")
        return arr.astype(dtype)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: key '{key}' is not a numeric array ({exc}); expected numbers") from None


def _float_features(where: str, key: str, value: Any, read: _Read) -> torch.Tensor:
    """Float32 features with NaN/inf replaced by 0 (counted); all of them non-finite is an error."""
    arr = _numeric(where, key, value, np.float32, read.budget)
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad and n_bad == arr.size:
        raise DataError(f"{where}: every value of '{key}' ({n_bad:,}) is NaN or infinite; there is nothing to train on")
    if n_bad:
        np.copyto(arr, np.float32(0.0), where=bad)
        name = f"{where.rsplit('[', 1)[-1].rstrip(']')}.{key}"
        read.counts[name] = read.counts.get(name, 0) + n_bad
    return torch.from_numpy(np.ascontiguousarray(arr))


def _shape_error(where: str, key: str, got: tuple, expected: str, modality: str) -> DataError:
    return DataError(f"{where}: key '{key}' has shape {got}, but modality '{modality}' of the blueprint expects {expected}")


def _labels(where: str, d: dict, key: str, task, n: int, budget: Budget | None = None) -> torch.Tensor:
    if key not in d:
        raise DataError(f"{where}: no label key '{key}' (keys: {shown(d)}); set training.data.label_key")
    y = _numeric(where, key, d[key], np.float64, budget)
    if y.ndim == 0 or y.size == 0 or y.shape[0] != n:
        count = "a single number" if y.ndim == 0 else f"{y.shape[0]} labels"
        raise DataError(f"{where}: '{key}' has {count} for {n} samples; expected one label per sample ({n}, ...)")
    if not np.all(np.isfinite(y)):
        raise DataError(f"{where}: '{key}' holds {int((~np.isfinite(y)).sum())} non-finite labels (NaN or inf); a label must be a number")
    if task.kind == "classification":
        if y.ndim >= 2 and y.reshape(n, -1).shape[1] == task.outputs:
            y = y.reshape(n, -1).argmax(axis=1)
        if y.size != n:
            raise DataError(f"{where}: '{key}' has {y.size // n} values per sample; a classification task needs one class index or a one-hot row of {task.outputs}")
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


def _ids(d: dict, n: int, where: str, split: str, budget: Budget) -> list[str]:
    raw = d.get("id")
    if raw is None:
        return [f"{split}_{i}" for i in range(n)]
    arr = as_array(raw, budget, f"key 'id' of {where}")
    if arr.size != n and not (arr.ndim > 1 and arr.shape[0] == n):
        raise DataError(f"{where}: 'id' has {arr.shape[0] if arr.ndim else 1} entries for {n} samples")
    flat = arr.reshape(-1).tolist()
    if not all(isinstance(x, (str, bytes, int, float, np.generic)) for x in flat):
        raise DataError(f"{where}: 'id' holds {sorted({type(x).__name__ for x in flat})}; expected names (strings or numbers)")
    names = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    if arr.ndim > 1:
        width = len(names) // n
        return ["_".join(names[i * width : (i + 1) * width]) for i in range(n)]
    return names


def _tokens(here: str, d: dict, name: str, m, budget: Budget) -> tuple[dict[str, torch.Tensor], str, str]:
    """A tokens modality: ids, mask and segments from ``<name>_bert`` ``(N, 3, T)`` or ids ``(N, T)``;
    with the key read and what its mask is (for the note of a modality aligned with it)."""
    key = f"{name}_bert" if f"{name}_bert" in d else name
    if key not in d:
        raise DataError(f"{here}: no key '{name}_bert' or '{name}' for token modality '{name}' (keys: {shown(d)})")
    arr = _numeric(here, key, d[key], np.float64, budget)
    if arr.ndim == 3 and arr.shape[1] == 3:
        ids, mask, segment = arr[:, 0], arr[:, 1] > 0, arr[:, 2]
    elif arr.ndim == 2:
        ids, mask, segment = arr, arr != 0, np.zeros_like(arr)
    else:
        raise _shape_error(here, key, arr.shape, "(N, 3, T) (token ids, attention mask, segment ids) or (N, T) ids", name)
    if not np.isfinite(arr).all():
        raise DataError(f"{here}: key '{key}' holds NaN or infinite token ids")
    ids = np.round(ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= m.vocab):
        raise DataError(f"{here}: key '{key}' has token ids {ids.min()}..{ids.max()}, outside the vocabulary of modality '{name}' (vocab {m.vocab})")
    source = f"the attention mask of '{key}'" if arr.ndim == 3 else f"the non-zero ids of '{key}'"
    tensors = {name: torch.from_numpy(ids), f"{name}_mask": torch.from_numpy(np.ascontiguousarray(mask)),
               f"{name}_segment": torch.from_numpy(np.round(segment).astype(np.int64))}
    return tensors, key, source


def _integer_lengths(here: str, key: str, value: Any, n: int, t: int, budget: Budget) -> np.ndarray:
    """``(N,)`` lengths from a list or array: whole numbers in ``0..T``, one per sample."""
    lens = _numeric(here, key, value, np.float64, budget).reshape(-1)
    if len(lens) != n:
        raise DataError(f"{here}: '{key}' has {len(lens)} entries for {n} samples")
    bad = ~np.isfinite(lens) | (lens != np.round(lens))
    if bad.any():
        raise DataError(f"{here}: '{key}' holds {float(lens[bad][0]):g} (sample {int(np.argmax(bad))}); a length is a whole number of steps")
    if lens.size and lens.min() < 0:
        i = int(np.argmax(lens < 0))
        raise DataError(f"{here}: '{key}' of sample {i} is {int(lens[i])}; a length counts steps, from 0 to {t} (the padded length)")
    return lens.astype(np.int64)


def _mask_lengths(here: str, key: str, mask: np.ndarray, t: int) -> np.ndarray:
    """Valid lengths from an ``(N, T)`` 0/1 mask that must be right padding (valid steps first)."""
    valid = mask > 0
    lens = valid.sum(axis=1)
    prefix = np.arange(t)[None, :] < lens[:, None]
    if not np.array_equal(valid, prefix):
        i = int(np.argmax((valid != prefix).any(axis=1)))
        raise DataError(f"{here}: the mask in '{key}' of sample {i} is not right padding (valid steps first, then padding)")
    return lens.astype(np.int64)


def _lengths(here: str, d: dict, name: str, n: int, t: int, budget: Budget) -> tuple[np.ndarray | None, str]:
    """A sequence's valid lengths from what the file stores, and where they came from:
    ``<name>_lengths``; else the attention mask of ``<name>_bert`` ``(N, 3, T)`` (MMSA's
    ``text_bert``); else a ``<name>_mask`` ``(N, T)``; else None (no length information)."""
    if f"{name}_lengths" in d:
        return _integer_lengths(here, f"{name}_lengths", d[f"{name}_lengths"], n, t, budget), f"'{name}_lengths'"
    for key, pick in ((f"{name}_bert", lambda a: a[:, 1] if a.ndim == 3 and a.shape[1] == 3 else None), (f"{name}_mask", lambda a: a if a.ndim == 2 else None)):
        if key not in d:
            continue
        arr = _numeric(here, key, d[key], np.float32, budget)
        mask = pick(arr)
        if mask is None or mask.shape != (n, t):
            expected = f"({n}, 3, {t})" if key.endswith("_bert") else f"({n}, {t})"
            raise DataError(f"{here}: '{key}' has shape {arr.shape}; to give the lengths of '{name}' ({n} samples of {t} steps) it must be {expected}")
        return _mask_lengths(here, key, mask, t), f"the attention mask of '{key}'" if key.endswith("_bert") else f"'{key}'"
    return None, ""


def _features(here: str, d: dict, name: str, m, read: _Read) -> torch.Tensor:
    if name not in d:
        raise DataError(f"{here}: no key '{name}' for modality '{name}' (keys: {shown(d)})")
    x = _float_features(here, name, d[name], read)
    expected = {"sequence": (3, f"(N, T, {m.features})"), "vector": (2, f"(N, {m.features})")}.get(
        m.kind, (2 + len(m.spatial), "(N, " + ", ".join(map(str, (m.features, *m.spatial))) + ")")
    )
    ok = x.dim() == expected[0] and (x.shape[-1] == m.features if m.kind == "sequence" else tuple(x.shape[1:]) == (m.features, *m.spatial))
    if not ok:
        raise _shape_error(here, name, tuple(x.shape), expected[1], name)
    return x


def _clipped_lengths(name: str, lens: np.ndarray, t: int, read: _Read) -> torch.Tensor:
    """Lengths as the batch holds them: 0 read as 1 step and beyond ``t`` as ``t``, each case counted."""
    for reason, count in (("of length 0 read as 1 step", int((lens == 0).sum())), (f"longer than the {t} padded steps read as {t}", int((lens > t).sum()))):
        if count:
            read.clipped[(name, reason)] = read.clipped.get((name, reason), 0) + count
    return torch.from_numpy(np.clip(lens, 1, t))


def _share_lengths(here: str, blueprint, tensors: dict[str, torch.Tensor], given: dict[str, tuple[str, str | None]], read: _Read) -> None:
    """Aligned modalities (one time symbol) whose lengths the file does not give take those of the
    first modality on that axis whose lengths it gives (``given``: name -> (where from, the key of a
    token modality's mask)): a sequence's, or a token modality's attention mask. MMSA's aligned
    files are this case: audio and vision aligned with the words, their valid steps those of
    ``text_bert[:, 1]``, and no ``audio_lengths`` / ``vision_lengths``. A sequence left without
    lengths is read as fully valid, and its note says so."""
    by_symbol: dict[str, list[str]] = {}
    for name, m in blueprint.modalities.items():
        if m.kind in ("sequence", "tokens"):
            by_symbol.setdefault(m.time_symbol(name), []).append(name)
    for symbol, names in by_symbol.items():
        partners = [n for n in names if n in given]
        for name in names:
            if blueprint.modalities[name].kind != "sequence" or name in given:
                continue
            t = tensors[name].shape[1]
            if not partners:
                aligned = f", and none for the modalities aligned with it on time axis '{symbol}'" if len(names) > 1 else ""
                read.padding.setdefault(name, f"'{name}': the file gives no lengths for it (no '{name}_lengths', '{name}_bert' or '{name}_mask'{aligned}); all {t} steps read as valid")
                continue
            partner = partners[0]
            source, mask_key = given[partner]
            if mask_key is None:
                tensors[f"{name}_lengths"] = tensors[f"{partner}_lengths"]
            else:
                tensors[f"{name}_lengths"] = _clipped_lengths(name, _mask_lengths(here, mask_key, tensors[f"{partner}_mask"].numpy(), t), t, read)
            read.padding.setdefault(name, f"'{name}': the lengths of '{partner}' (from {source}), which it is aligned with on time axis '{symbol}'")


def standard_split(blueprint, d: dict, split: str, label_key: str, read: _Read, where: str = "data") -> TensorSplit:
    """One split of the standard layout -> a :class:`TensorSplit` in the batch layout."""
    here = f"{where}[{split}]"
    if not isinstance(d, dict):
        hint = ""
        if isinstance(d, (list, tuple)):
            first = type(d[0]).__name__ if d else "nothing"
            hint = f" (the standard layout); a split of the MAG layout is a list of ((words, visual, acoustic), label, segment) examples, but this one starts with {first}"
        raise DataError(f"{here} is a {type(d).__name__}, expected a dict of arrays{hint}")
    if not all(isinstance(k, str) for k in d):
        raise DataError(f"{here}: keys must be strings, got {sorted({type(k).__name__ for k in d})}")
    tensors: dict[str, torch.Tensor] = {}
    given: dict[str, tuple[str, str | None]] = {}  # modalities whose valid steps the file gives: where from, a mask's key
    n = None
    times: dict[str, tuple[str, int]] = {}
    for name, m in blueprint.modalities.items():
        if m.kind == "tokens":
            read_tokens, key, source = _tokens(here, d, name, m, read.budget)
            tensors.update(read_tokens)
            given[name] = (source, key)
        else:
            tensors[name] = _features(here, d, name, m, read)
        t = tensors[name].shape[1] if m.kind in ("sequence", "tokens") else None
        if n is None:
            n = int(tensors[name].shape[0])
        elif tensors[name].shape[0] != n:
            raise DataError(f"{here}: '{name}' has {tensors[name].shape[0]} samples, other keys {n}")
        if m.kind == "sequence":
            lens, source = _lengths(here, d, name, n, t, read.budget)
            if lens is not None:
                tensors[f"{name}_lengths"] = _clipped_lengths(name, lens, t, read)
                given[name] = (source, None)
                if source != f"'{name}_lengths'":
                    read.padding[name] = f"'{name}': lengths from {source}"
        if t is not None:
            symbol = m.time_symbol(name)
            if symbol in times and times[symbol][1] != t:
                other, t_other = times[symbol]
                raise DataError(
                    f"{here}: modalities '{other}' and '{name}' share the time axis '{symbol}' (aligned) "
                    f"but have {t_other} and {t} steps; use an aligned file or give them different `time:`"
                )
            times[symbol] = (name, t)
    _share_lengths(here, blueprint, tensors, given, read)
    tensors["label"] = _labels(here, d, label_key, blueprint.task, n, read.budget)
    tensors.update(_extra_labels(here, d, blueprint, n, read.budget))
    return TensorSplit(tensors, _ids(d, n, here, split, read.budget))


def _extra_labels(here: str, d: dict, blueprint, n: int, budget: Budget) -> dict[str, torch.Tensor]:
    """``label_<name>`` for each ``training.data.extra_labels`` entry (CH-SIMS' ``regression_labels_T``
    for ``text``), read and checked as the main label is: the task's label spec, ``(N,)`` for one output."""
    out = {}
    for name, key in blueprint.training.data.extra_labels.items():
        if key not in d:
            raise DataError(
                f"{here}: no key '{key}' for training.data.extra_labels.{name} (keys: {shown(d)}); "
                "name a key of the file or remove the entry (and the losses that read label." + name + ")"
            )
        out[f"label_{name}"] = _labels(here, d, key, blueprint.task, n, budget)
    return out


def load_standard_pickle(blueprint, path: str | Path, *, label_key: str | None = None) -> DataSplits:
    """Read a standard-layout feature pickle for the blueprint's modalities and task."""
    budget = Budget([path])
    return standard_splits(blueprint, read_pickle(path, budget), path, label_key=label_key, budget=budget)


def standard_splits(blueprint, data: Any, path: str | Path, *, label_key: str | None = None, budget: Budget | None = None) -> DataSplits:
    """The splits of an already unpickled standard-layout object read from ``path``."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of splits (train, valid, test), got {type(data).__name__}")
    data = named_splits(data, path, SPLITS)
    label_key = label_key or blueprint.training.data.label_key
    read = _Read(budget if budget is not None else Budget([path]))
    splits = {s: standard_split(blueprint, data[s], s, label_key, read, where=str(path)) for s in SPLITS}
    notes = [f"{path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())]
    notes += [f"padding: {text}" for text in read.padding.values()]
    notes += [f"padding: '{m}': {k} sample{'s' if k != 1 else ''} {reason}" for (m, reason), k in read.clipped.items()]
    total = sum(read.counts.values())
    detail = ", ".join(f"{k}: {v}" for k, v in read.counts.items())
    notes.append(f"cleaned {total} non-finite feature value{'s' if total != 1 else ''} (NaN/inf -> 0)" + (f" ({detail})" if detail else ""))
    return DataSplits(splits, notes=notes, source=str(path))
