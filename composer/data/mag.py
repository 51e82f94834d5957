"""The word-aligned MAG/MIB feature pickle: the CMU-MOSI / CMU-MOSEI files that MAG-BERT, MIB
and GLoMo read.

Layout (MAG-BERT's README; GLoMo ``GLoMo_MSA/main_GLoMo.py``): a dict of splits ``train``,
``dev`` (read as ``valid``) and ``test``, each a *list* of examples
``((words, visual, acoustic), label, segment)``:

=============  ==============================================================
``words``      L words: a list of str or a NumPy string array
``visual``     ``(L, D_v)``, one row per word (Facet: 47 on MOSI, 35 on MOSEI)
``acoustic``   ``(L, D_a)``, one row per word (COVAREP: 74)
``label``      a number or an array of numbers (MOSI: ``[[score]]``)
``segment``    the sample's name, e.g. ``"03bSnISJMiM[11]"``
=============  ==============================================================

The batch follows the authors' ``convert_to_features`` / ``prepare_bert_input``. With a
``tokens`` modality (words need ``training.data.vocab``): every word becomes its word pieces
and its visual and acoustic rows are repeated once per piece; pieces are cut to ``T - 2``;
the sentence is ``[CLS] pieces [SEP]`` padded to ``T``, the tokens modality's ``length`` (the
authors' ``max_seq_length``); visual and acoustic rows are zero at ``[CLS]``, ``[SEP]`` and
padding, and their ``<m>_lengths`` count the text's valid steps (pieces + 2). Without a tokens
modality the sequences are the word rows themselves: the first ``T`` words (``T`` = the longest
``length`` of the sequence modalities), right-padded, ``<m>_lengths`` = words kept.

Modalities read by name: the ``tokens`` modality reads ``words``; a sequence modality named
``vision`` or ``visual`` reads ``visual``, one named ``audio`` or ``acoustic`` reads
``acoustic``. The file goes through the restricted unpickler of :mod:`composer.data.standard`
(these pickles need nothing beyond NumPy arrays, scalars and plain containers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from composer.data.base import SPLITS, DataSplits, TensorSplit, named_splits
from composer.data.budget import Budget
from composer.data.standard import _labels
from composer.data.unpickle import as_array, read_pickle
from composer.data.wordpiece import WordPieces
from composer.errors import DataError

__all__ = ["is_mag_layout", "load_mag_pickle", "mag_splits", "FIELDS"]

FIELDS = {"vision": 1, "visual": 1, "audio": 2, "acoustic": 2}  # position in (words, visual, acoustic)
_FIELD_NAMES = ("words", "visual", "acoustic")
_EXAMPLE = "((words, visual, acoustic), label, segment)"


def _looks_like_example(example: Any) -> bool:
    return isinstance(example, (tuple, list)) and len(example) == 3 and isinstance(example[0], (tuple, list)) and len(example[0]) == 3


def is_mag_layout(data: Any) -> bool:
    """True for a dict whose splits are lists of ``((words, visual, acoustic), label, segment)``
    examples (judged by the first one); the standard layout has dicts of arrays."""
    if not isinstance(data, dict):
        return False
    lists = [data.get(s) for s in ("train", "dev", "valid", "test") if isinstance(data.get(s), (list, tuple))]
    return bool(lists) and all(not part or _looks_like_example(part[0]) for part in lists)


@dataclass
class _Plan:
    """Which modality reads what: ``fields[m]`` = 1 (visual) or 2 (acoustic), ``tokens`` the text modality."""

    fields: dict[str, int]
    tokens: str | None
    length: int


def _plan(blueprint, where: str) -> _Plan:
    fields: dict[str, int] = {}
    tokens = [n for n, m in blueprint.modalities.items() if m.kind == "tokens"]
    if len(tokens) > 1:
        raise DataError(f"{where}: the MAG pickle has one transcript, but the blueprint has token modalities {', '.join(tokens)}")
    for name, m in blueprint.modalities.items():
        if m.kind == "tokens":
            continue
        if m.kind != "sequence":
            raise DataError(f"{where}: modality '{name}' is a {m.kind}; the MAG pickle holds words and word-aligned visual and acoustic sequences")
        if name not in FIELDS:
            raise DataError(
                f"{where}: no field for modality '{name}'; name the modalities after the fields: vision/visual "
                "(visual rows), audio/acoustic (acoustic rows), and a tokens modality for the words"
            )
        fields[name] = FIELDS[name]
    if tokens:
        length = blueprint.modalities[tokens[0]].length
    else:
        length = max((blueprint.modalities[n].length for n in fields), default=1)
    return _Plan(fields, tokens[0] if tokens else None, length)


def _unpack(example: Any, where: str) -> tuple[Any, Any, Any, Any, Any]:
    if not _looks_like_example(example):
        got = type(example).__name__ + (f" of {len(example)}" if isinstance(example, (tuple, list)) else "")
        raise DataError(f"{where}: an example is {_EXAMPLE}, got a {got}")
    (words, visual, acoustic), label, segment = example
    return words, visual, acoustic, label, segment


def _words(value: Any, where: str) -> list[str]:
    if isinstance(value, np.ndarray) and value.dtype.kind in "US" and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: 'words' is a {type(value).__name__}, expected a list of words")
    out = []
    for w in value:
        if isinstance(w, bytes):
            w = w.decode("utf-8", "replace")
        if not isinstance(w, str):
            raise DataError(f"{where}: 'words' holds a {type(w).__name__}, expected str")
        out.append(w)
    return out


def _rows(value: Any, field: int, where: str, n_words: int, width: int, modality: str, budget: Budget) -> np.ndarray:
    name = _FIELD_NAMES[field]
    arr = value if isinstance(value, np.ndarray) else as_array(value, budget, f"'{name}' of {where}") if isinstance(value, (list, tuple)) else None
    if arr is None or arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: '{name}' is not a numeric array; expected ({n_words} words, {width}) numbers")
    if arr.ndim != 2 or arr.shape[0] != n_words:
        raise DataError(f"{where}: '{name}' has shape {arr.shape}, expected one row per word: ({n_words}, {width})")
    if arr.shape[1] != width:
        raise DataError(f"{where}: '{name}' has {arr.shape[1]} features per word, but modality '{modality}' of the blueprint expects {width}")
    return arr


def _label(value: Any, where: str, budget: Budget) -> np.ndarray:
    try:
        arr = as_array(value, budget, f"'label' of {where}")
        if arr.dtype.kind not in "biuf" or arr.size == 0:
            raise ValueError(f"holds {arr.dtype} values" if arr.size else "is empty")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: 'label' is not a number ({exc}); expected a number or an array of numbers") from None
    return arr.astype(np.float64).reshape(-1)


def _split(blueprint, examples: Any, split: str, plan: _Plan, pieces: WordPieces | None, budget: Budget, counts: dict[str, int], path: str) -> TensorSplit:
    where = f"{path}[{split}]"
    if not isinstance(examples, (list, tuple)):
        raise DataError(f"{where} is a {type(examples).__name__}, expected a list of {_EXAMPLE} examples")
    n, t = len(examples), plan.length
    mods = blueprint.modalities
    per_sample = sum(t * mods[m].features * 4 + 8 for m in plan.fields) + (t * 17 if plan.tokens else 0)
    budget.take(n * per_sample, f"{split}: {n} samples of {t} steps")
    x = {m: np.zeros((n, t, mods[m].features), np.float32) for m in plan.fields}
    lengths = {m: np.zeros(n, np.int64) for m in plan.fields}
    ids = np.zeros((n, t), np.int64)
    mask = np.zeros((n, t), bool)
    labels, names = [], []
    seen = {m: [0, 0] for m in plan.fields}  # values read, of which non-finite
    for i, example in enumerate(examples):
        here = f"{where}[{i}]"
        raw_words, *fields, label, segment = _unpack(example, here)
        words = _words(raw_words, here)
        rows = {m: _rows(fields[f - 1], f, here, len(words), mods[m].features, m, budget) for m, f in plan.fields.items()}
        for m, r in rows.items():
            seen[m][0] += r.size
            seen[m][1] += int(r.size - np.isfinite(r).sum()) if r.dtype.kind == "f" else 0
        if pieces is not None:
            row, owner, valid = pieces.frame(words, t)
            ids[i], mask[i, :valid] = row, True
            owner = np.asarray(owner)
            steps = np.nonzero(owner >= 0)[0]
            for m, r in rows.items():
                x[m][i, steps] = r[owner[steps]]
                lengths[m][i] = valid
        else:
            k = min(len(words), t)
            for m, r in rows.items():
                x[m][i, :k] = r[:k]
                lengths[m][i] = max(k, 1)
        labels.append(_label(label, here, budget))
        if not isinstance(segment, (str, bytes, int, float, np.generic)):
            raise DataError(f"{here}: 'segment' is a {type(segment).__name__}; expected the sample's name")
        names.append(segment.decode("utf-8", "replace") if isinstance(segment, bytes) else str(segment))
    if n == 0:
        raise DataError(f"{where}: the split is empty; every split needs at least one sample")
    for m, (total, bad) in seen.items():
        if total and bad == total:
            raise DataError(f"{where}: every value of '{_FIELD_NAMES[plan.fields[m]]}' ({total:,}) is NaN or infinite; modality '{m}' has nothing to train on")
    widths = {len(y) for y in labels}
    if len(widths) > 1:
        raise DataError(f"{where}: labels have {sorted(widths)} values per sample; every example needs the same number")
    tensors: dict[str, torch.Tensor] = {}
    for m, arr in x.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            counts[f"{split}.{m}"] = int(bad.sum())
            arr[bad] = 0.0
        tensors[m] = torch.from_numpy(arr)
        tensors[f"{m}_lengths"] = torch.from_numpy(lengths[m])
    if plan.tokens:
        if int(ids.max()) >= mods[plan.tokens].vocab:
            raise DataError(f"{pieces.path}: word-piece ids reach {int(ids.max())}, outside the vocabulary of modality '{plan.tokens}' (vocab {mods[plan.tokens].vocab})")
        tensors[plan.tokens] = torch.from_numpy(ids)
        tensors[f"{plan.tokens}_mask"] = torch.from_numpy(mask)
        tensors[f"{plan.tokens}_segment"] = torch.zeros((n, t), dtype=torch.long)
    budget.take(n * len(labels[0]) * 8, f"{split}: {n} labels")
    tensors["label"] = _labels(where, {"label": np.stack(labels)}, "label", blueprint.task, n)
    return TensorSplit(tensors, names)


def mag_splits(blueprint, data: Any, path: str | Path, *, vocab: str | None = None, budget: Budget | None = None) -> DataSplits:
    """The splits of an already unpickled MAG/MIB object read from ``path``."""
    path = str(path)
    if not is_mag_layout(data):
        raise DataError(f"{path}: expected the MAG layout, a dict of splits (train, dev, test) that are lists of {_EXAMPLE} examples")
    data = named_splits(data, path, SPLITS)
    plan = _plan(blueprint, path)
    pieces = None
    if plan.tokens:
        if vocab is None:
            raise DataError(
                f"{path}: modality '{plan.tokens}' needs word-piece ids but the file holds words; set training.data.vocab "
                "to the vocab.txt of the BERT the text encoder uses"
            )
        pieces = WordPieces(vocab)
    budget = budget if budget is not None else Budget([path])
    counts: dict[str, int] = {}
    splits = {s: _split(blueprint, data[s], s, plan, pieces, budget, counts, path) for s in SPLITS}
    total = sum(counts.values())
    detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
    notes = [
        f"{path} (MAG layout, {plan.length} steps{', word pieces of ' + pieces.path if pieces else ''}): " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()),
        f"cleaned {total} non-finite feature value{'s' if total != 1 else ''} (NaN/inf -> 0)" + (f" ({detail})" if detail else ""),
    ]
    return DataSplits(splits, notes=notes, source=path)


def load_mag_pickle(blueprint, path: str | Path, *, vocab: str | None = None) -> DataSplits:
    """Read a MAG/MIB pickle for the blueprint's modalities and task (restricted unpickler)."""
    budget = Budget([path]) if Path(path).is_file() else None
    return mag_splits(blueprint, read_pickle(path, budget), path, vocab=vocab, budget=budget)
