"""CMU-MultimodalSDK computational sequences (``.csd``, HDF5): the files MSAF's CMU-MOSEI code reads.

One ``.csd`` file holds one feature set. Its layout (the SDK's ``file_ops.writeCSD``): a single
root group named after the sequence, with

=======================================  ===============================================
``<root>/data/<video_id>/features``      ``(rows, D)`` numbers, or words (``CMU_MOSEI_TimestampedWords``)
``<root>/data/<video_id>/intervals``     ``(rows, 2)`` start and end time of each row, in seconds
``<root>/metadata/<key>``                one string each (shown by ``composer data inspect``, never evaluated)
=======================================  ===============================================

A run reads one file per modality plus a labels file (``training.data.paths``) and turns them into
samples the way MSAF's ``dataset_prep.py`` does with the SDK (``align`` to the labels, then
``get_tensors`` over the standard folds):

1. **samples**: every row ``i`` of ``<video_id>`` in the labels file is one segment, named
   ``<video_id>[i]``; rows with a zero-length interval are skipped, as in the SDK;
2. **split**: a segment goes to the fold of its video (:mod:`composer.data.folds`); videos in no
   fold are left out;
3. **alignment**: a modality contributes, in time order, every row of the same video whose interval
   overlaps the segment's interval (all entries ``<video_id>`` and ``<video_id>[k]`` are pooled);
   a segment that gets no row from some modality is left out (the SDK's ``unify``);
4. **batch**: a ``sequence`` modality keeps the *last* ``length`` rows (the SDK's ``get_tensors``)
   and is right-padded with ``<m>_lengths``; a ``tokens`` modality reads the words as
   ``[CLS] pieces [SEP]`` padded to ``length`` (``training.data.vocab``); a ``vector`` modality is
   the mean of the rows; the label is the segment's label row (``training.data.label_columns``
   picks columns: CMU-MOSEI's are sentiment, happy, sad, anger, surprise, disgust, fear).

Reading never follows links out of the file, refuses virtual and external datasets and filters
beyond HDF5's built-in ones (so no plugin library is loaded), checks every shape in the header
before reading, and stops at the allocation limit of :mod:`composer.data.budget`. Non-finite
feature values become 0 and are counted.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from composer.data.base import SPLITS, DataSplits, TensorSplit, shown
from composer.data.budget import Budget
from composer.data.folds import read_split
from composer.data.standard import _labels
from composer.data.wordpiece import WordPieces
from composer.errors import DataError

__all__ = ["Sequence", "load_csd", "is_hdf5", "EPSILON"]

EPSILON = 1e-5  # the SDK's interval tolerance (10e-6)
MAX_ENTRIES = 1_000_000
MAX_ROWS = 10_000_000
MAX_WIDTH = 1_000_000
MAX_METADATA_BYTES = 1 << 16
# deflate, shuffle, fletcher32, szip, nbit, scale-offset (HDF5 built-ins) and h5py's lzf
_FILTERS = {1, 2, 3, 4, 5, 6, 32000}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise DataError("reading .csd files needs h5py: pip install 'fusion-composer[sdk]' (or pip install h5py)") from None
    return h5py


def _h5_errors(method: Callable) -> Callable:
    """A method of :class:`Sequence` whose HDF5 errors (a damaged file makes h5py raise OSError,
    KeyError, ValueError, RuntimeError...) become a :class:`DataError` naming the file."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{self.path}: a damaged HDF5 computational sequence ({type(exc).__name__}: {shown(str(exc))})") from None

    return wrapped


def is_hdf5(path: str | Path) -> bool:
    """True when the file starts with the HDF5 signature."""
    with open(path, "rb") as f:
        return f.read(8) == _HDF5_MAGIC


class Sequence:
    """One computational-sequence file, open read-only; ``entries`` are its video ids."""

    def __init__(self, path: str | Path):
        h5py = self._h5 = _h5py()
        self.path = str(path)
        if not Path(path).is_file():
            raise DataError(f"data file not found: {path}")
        try:
            self._file = h5py.File(path, "r")
        except Exception as exc:  # OSError, and others on a damaged superblock
            raise DataError(f"{path}: not a readable HDF5 computational sequence ({type(exc).__name__}: {shown(str(exc))})") from None
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise

    @_h5_errors
    def _open(self) -> None:
        path = self.path
        roots = list(self._file.keys())
        if len(roots) != 1:
            raise DataError(f"{path}: {len(roots)} top-level groups ({shown(roots[:5])}); a computational sequence has one, named after the sequence")
        self.name = roots[0]
        root = self._group(self._file, self.name, "")
        self._data = self._group(root, "data", self.name)
        self._meta = self._group(root, "metadata", self.name) if "metadata" in root else None
        if len(self._data) > MAX_ENTRIES:
            raise DataError(f"{path}: {len(self._data)} entries in {self.name}/data, more than {MAX_ENTRIES}")
        self.entries: list[str] = list(self._data.keys())

    def __enter__(self) -> "Sequence":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    # -- checked access ------------------------------------------------------------------
    def _link(self, group, key: str, where: str):
        link = group.get(key, getlink=True)
        if link is None:
            raise DataError(f"{self.path}: no '{where}/{key}' (expected {self._expected(key)})")
        if not isinstance(link, self._h5.HardLink):
            raise DataError(f"{self.path}: '{where}/{key}' is a {type(link).__name__}; a .csd file links nothing outside its own groups")
        return group[key]

    @staticmethod
    def _expected(key: str) -> str:
        return {"data": "a group of videos", "features": "a (rows, D) dataset", "intervals": "a (rows, 2) dataset of times"}.get(key, "a group")

    def _group(self, group, key: str, where: str):
        node = self._link(group, key, where)
        if not isinstance(node, self._h5.Group):
            raise DataError(f"{self.path}: '{where}/{key}' is not a group (expected {self._expected(key)})")
        return node

    def _dataset(self, group, key: str, where: str):
        node = self._link(group, key, where)
        here = f"{self.path}: '{where}/{key}'"
        if not isinstance(node, self._h5.Dataset):
            raise DataError(f"{here} is not a dataset (expected {self._expected(key)})")
        if node.is_virtual or node.external:
            raise DataError(f"{here} keeps its values in other files (virtual or external storage); refusing to follow it")
        plist = node.id.get_create_plist()
        codes = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
        if codes - _FILTERS:
            raise DataError(f"{here} needs HDF5 filter {sorted(codes - _FILTERS)}, not one of HDF5's built-in filters; refusing to load a plugin")
        return node

    def _is_text(self, dset) -> bool:
        return dset.dtype.kind == "S" or self._h5.check_string_dtype(dset.dtype) is not None

    @_h5_errors
    def shape(self, entry: str) -> tuple[tuple[int, ...], bool]:
        """``(rows, D)`` of an entry's features (checked against its intervals) and whether they are words."""
        where = f"{self.name}/data/{entry}"
        group = self._group(self._data, entry, f"{self.name}/data")
        feats, ivals = self._dataset(group, "features", where), self._dataset(group, "intervals", where)
        text = self._is_text(feats)
        if not text and feats.dtype.kind not in "biuf":
            raise DataError(f"{self.path}: '{where}/features' holds {feats.dtype} values; expected numbers or words")
        if feats.ndim != 2 or feats.shape[0] > MAX_ROWS or feats.shape[1] > MAX_WIDTH:
            raise DataError(f"{self.path}: '{where}/features' has shape {feats.shape}; expected (rows, D) with at most {MAX_ROWS} rows of {MAX_WIDTH}")
        if ivals.dtype.kind not in "biuf" or ivals.shape != (feats.shape[0], 2):
            raise DataError(f"{self.path}: '{where}/intervals' has shape {ivals.shape} ({ivals.dtype}); expected ({feats.shape[0]}, 2) times, one per row of features")
        return feats.shape, text

    @_h5_errors
    def read(self, entry: str, budget: Budget) -> tuple[np.ndarray, np.ndarray | list[str]]:
        """``intervals (rows, 2)`` float64 and the features: float32 ``(rows, D)`` or the words of column 0."""
        (rows, width), text = self.shape(entry)
        where = f"{self.name}/data/{entry}"
        group = self._data[entry]
        budget.take(rows * 16 + rows * width * (16 if text else 4), f"'{where}' ({rows} x {width})")
        intervals = np.asarray(group["intervals"][()], dtype=np.float64)
        if not np.isfinite(intervals).all():
            raise DataError(f"{self.path}: '{where}/intervals' holds NaN or infinite times")
        feats = group["features"]
        if text:
            raw = feats.asstr()[()] if feats.dtype.kind == "O" else feats[()]
            words = [w.decode("utf-8", "replace") if isinstance(w, bytes) else str(w) for w in np.asarray(raw)[:, 0].tolist()] if width else []
            return intervals, words
        return intervals, np.asarray(feats[()], dtype=np.float32)

    @_h5_errors
    def metadata(self, limit: int = 500) -> dict[str, str]:
        """Each metadata entry as text (cut to ``limit`` characters); nothing in it is evaluated."""
        out: dict[str, str] = {}
        if self._meta is None:
            return out
        for key in list(self._meta.keys())[:100]:
            try:
                node = self._dataset(self._meta, key, f"{self.name}/metadata")
                if node.size * max(node.dtype.itemsize, 1) > MAX_METADATA_BYTES or node.size == 0:
                    out[key] = f"<{node.size} values, not shown>"
                    continue
                value = node.asstr()[()] if self._is_text(node) else node[()]
                first = np.asarray(value).reshape(-1)[0]
                text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
            except Exception as exc:  # one damaged entry does not hide the others
                text = f"<{exc if isinstance(exc, DataError) else type(exc).__name__ + ': ' + str(exc)}>"
            out[key] = text if len(text) <= limit else text[:limit] + "..."
        return out


def _video(entry: str) -> str:
    return entry.split("[")[0]


class _Modality:
    """Per-sample pieces of one modality before they are stacked."""

    def __init__(self, name: str, cfg, seq: Sequence, pieces: WordPieces | None):
        self.name, self.cfg, self.seq, self.pieces = name, cfg, seq, pieces
        self.videos: dict[str, list[str]] = {}
        for entry in seq.entries:
            self.videos.setdefault(_video(entry), []).append(entry)
        shape, text = seq.shape(seq.entries[0]) if seq.entries else ((0, 0), False)
        if cfg.kind == "tokens" and not text:
            raise DataError(f"{seq.path}: modality '{name}' is tokens but the file holds numbers; a tokens modality reads words (e.g. CMU_MOSEI_TimestampedWords)")
        if cfg.kind != "tokens" and text:
            raise DataError(f"{seq.path}: the file holds words; declare modality '{name}' as kind: tokens and set training.data.vocab")
        if cfg.kind in ("sequence", "vector") and shape[1] != cfg.features:
            raise DataError(f"{seq.path}: features are {shape[1]} wide, but modality '{name}' of the blueprint expects {cfg.features}")
        if cfg.kind == "map":
            raise DataError(f"{seq.path}: modality '{name}' is a map; a computational sequence holds (rows, D) features")

    def rows_of(self, vid: str, budget: Budget) -> tuple[np.ndarray, Any]:
        """All rows of one video, sorted by start time (the SDK pools ``vid`` and ``vid[k]`` entries)."""
        parts = [self.seq.read(e, budget) for e in self.videos[vid]]
        for entry, (_, feats) in zip(self.videos[vid], parts):
            if isinstance(feats, list) != (self.cfg.kind == "tokens"):
                raise DataError(f"{self.seq.path}: '{entry}' holds {'words' if isinstance(feats, list) else 'numbers'}, unlike the file's first entry")
            if self.cfg.kind != "tokens" and feats.shape[1] != self.cfg.features:
                raise DataError(f"{self.seq.path}: '{entry}' has {feats.shape[1]} features, but modality '{self.name}' of the blueprint expects {self.cfg.features}")
        intervals = np.concatenate([p[0] for p in parts])
        order = np.argsort(intervals[:, 0], kind="stable")
        if self.cfg.kind == "tokens":
            words = [w for p in parts for w in p[1]]
            return intervals[order], [words[i] for i in order]
        return intervals[order], np.concatenate([p[1] for p in parts])[order]

    def select(self, rows: tuple[np.ndarray, Any], start: float, end: float) -> Any:
        """The rows overlapping ``[start, end]`` by more than :data:`EPSILON` (the last ``length`` of a
        sequence), or None when there is none."""
        times, feats = rows
        hit = np.nonzero(np.minimum(times[:, 1], end) - np.maximum(times[:, 0], start) > EPSILON)[0]
        if not len(hit):
            return None
        if self.cfg.kind == "tokens":
            return [feats[j] for j in hit]
        return feats[hit[-self.cfg.length :] if self.cfg.kind == "sequence" else hit]

    def take(self, rows: Any) -> Any:
        """What one segment keeps of its selected rows: the framed words, the mean row, or the rows."""
        if self.cfg.kind == "tokens":
            return self.pieces.frame(rows, self.cfg.length)
        if self.cfg.kind == "vector":
            return rows.mean(axis=0)
        return rows

    def stack(self, items: list, counts: dict[str, int], split: str) -> dict[str, torch.Tensor]:
        n, t = len(items), self.cfg.length
        if self.cfg.kind == "tokens":
            ids = np.array([row for row, _, _ in items], dtype=np.int64).reshape(n, t)
            valid = np.array([v for _, _, v in items], dtype=np.int64)
            if ids.size and int(ids.max()) >= self.cfg.vocab:
                raise DataError(f"{self.pieces.path}: word-piece ids reach {int(ids.max())}, outside the vocabulary of modality '{self.name}' (vocab {self.cfg.vocab})")
            mask = np.arange(t)[None, :] < valid[:, None]
            return {self.name: torch.from_numpy(ids), f"{self.name}_mask": torch.from_numpy(mask), f"{self.name}_segment": torch.zeros((n, t), dtype=torch.long)}
        if self.cfg.kind == "vector":
            x = np.stack(items).astype(np.float32) if items else np.zeros((0, self.cfg.features), np.float32)
            out = {}
        else:
            x = np.zeros((n, t, self.cfg.features), np.float32)
            lengths = np.array([len(r) for r in items], dtype=np.int64)
            for i, r in enumerate(items):
                x[i, : len(r)] = r
            out = {f"{self.name}_lengths": torch.from_numpy(lengths)}
        bad = ~np.isfinite(x)
        if bad.any() and n:
            valid = bad if self.cfg.kind == "vector" else bad[np.arange(t)[None, :] < lengths[:, None]]
            if valid.all():
                raise DataError(f"{self.seq.path}: every value of modality '{self.name}' in the {split} split ({valid.size:,}) is NaN or infinite; there is nothing to train on")
        if bad.any():
            counts[f"{split}.{self.name}"] = counts.get(f"{split}.{self.name}", 0) + int(bad.sum())
            x[bad] = 0.0
        return {self.name: torch.from_numpy(x), **out}


def _check_paths(blueprint, paths: dict[str, str]) -> None:
    need = [*blueprint.modalities, "label"]
    missing = [k for k in need if k not in paths]
    if missing:
        raise DataError(f"training.data.paths: no .csd file for {', '.join(missing)} (expected one per modality: {', '.join(need)})")
    extra = [k for k in paths if k not in need]
    if extra:
        raise DataError(f"training.data.paths: {', '.join(extra)} is no modality of the blueprint (expected {', '.join(need)})")
    seq_times = {m.time_symbol(n) for n, m in blueprint.modalities.items() if m.kind == "sequence"}
    for n, m in blueprint.modalities.items():
        if m.kind == "tokens" and m.time_symbol(n) in seq_times:
            raise DataError(f"modality '{n}': word pieces from a .csd file are not aligned with the other sequences; give it its own `time:`")


def _aligned(blueprint, kept: dict[str, Any], sample: str) -> None:
    """Sequence modalities that share a time symbol must have the same number of rows."""
    seen: dict[str, tuple[str, int]] = {}
    for n, m in blueprint.modalities.items():
        if m.kind != "sequence":
            continue
        symbol, rows = m.time_symbol(n), len(kept[n])
        if symbol in seen and seen[symbol][1] != rows:
            other, r = seen[symbol]
            raise DataError(
                f"segment {sample}: modalities '{other}' and '{n}' share the time axis '{symbol}' but have {r} and {rows} rows; "
                "align the sequences first (the SDK's align with a collapse function) or give them different `time:`"
            )
        seen[symbol] = (n, rows)


def _label_rows(label: Sequence, entry: str, columns: list[int] | None, budget: Budget) -> tuple[np.ndarray, np.ndarray]:
    """One labels entry: its segment intervals and label rows (``columns`` of them, if given)."""
    intervals, y = label.read(entry, budget)
    if isinstance(y, list):
        raise DataError(f"{label.path}: the labels file holds words; expected numbers")
    if columns is not None:
        if columns and max(columns) >= y.shape[1]:
            raise DataError(f"{label.path}: training.data.label_columns {columns}, but the labels have {y.shape[1]} columns")
        y = y[:, columns]
    return intervals, y


def load_csd(
    blueprint, paths: dict[str, str], split: str | None, *, vocab: str | None = None, label_columns: Iterable[int] | None = None
) -> DataSplits:
    """Read one ``.csd`` per modality plus ``paths['label']`` into train / valid / test (see the module docstring)."""
    _check_paths(blueprint, paths)
    folds = read_split(split)
    mods = blueprint.modalities
    pieces = None
    if any(m.kind == "tokens" for m in mods.values()):
        if vocab is None:
            raise DataError("a tokens modality reads words from its .csd file: set training.data.vocab to the vocab.txt of the BERT the text encoder uses")
        pieces = WordPieces(vocab)
    budget = Budget(paths.values())
    seqs: dict[str, Sequence] = {}
    try:
        for key, path in paths.items():
            seqs[key] = Sequence(path)
        modalities = {n: _Modality(n, mods[n], seqs[n], pieces) for n in mods}
        label = seqs["label"]
        columns = None if label_columns is None else list(label_columns)
        kept: dict[str, dict[str, list]] = {s: {"id": [], "label": [], **{n: [] for n in mods}} for s in SPLITS}
        skipped = {"outside the split": 0, "zero-length": 0, "missing in a modality": 0}
        by_video: dict[str, list[str]] = {}
        for entry in label.entries:
            by_video.setdefault(_video(entry), []).append(entry)
        for vid, entries in by_video.items():
            fold = folds.get(vid)
            if fold is None:
                skipped["outside the split"] += sum(label.shape(e)[0][0] for e in entries)
                continue
            pooled = {n: mod.rows_of(vid, budget) for n, mod in modalities.items() if vid in mod.videos}
            for entry in entries:
                intervals, y = _label_rows(label, entry, columns, budget)
                for i, (start, end) in enumerate(intervals):
                    if end - start < EPSILON:
                        skipped["zero-length"] += 1
                        continue
                    rows = {n: modalities[n].select(pooled[n], start, end) for n in pooled}
                    if len(rows) < len(mods) or any(r is None for r in rows.values()):
                        skipped["missing in a modality"] += 1
                        continue
                    sample = f"{entry}[{i}]"
                    _aligned(blueprint, rows, sample)
                    budget.take(sum(_bytes_per_sample(mods[m]) for m in mods), f"segment {sample}")
                    part = kept[fold]
                    part["id"].append(sample)
                    part["label"].append(y[i])
                    for n, mod in modalities.items():
                        part[n].append(mod.take(rows[n]))
    finally:
        for seq in seqs.values():
            seq.close()
    source = "csd(" + ", ".join(f"{k}={v}" for k, v in paths.items()) + ")"
    counts: dict[str, int] = {}
    splits = {}
    for s in SPLITS:
        part = kept[s]
        n = len(part["id"])
        if n == 0:
            raise DataError(f"{source}: no segment of the {s} fold found (split: {split}); check that the split's video ids match the files' entries")
        budget.take(n * sum(_bytes_per_sample(mods[m]) for m in mods), f"{s}: {n} segments")
        tensors: dict[str, torch.Tensor] = {}
        for name, mod in modalities.items():
            tensors.update(mod.stack(part[name], counts, s))
        tensors["label"] = _labels(f"{source}[{s}]", {"label": np.stack(part["label"])}, "label", blueprint.task, n)
        splits[s] = TensorSplit(tensors, part["id"])
    total = sum(counts.values())
    detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
    notes = [
        f"{source}, split {split}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()),
        "left out: " + ", ".join(f"{v} segments {k}" for k, v in skipped.items()),
        f"cleaned {total} non-finite feature value{'s' if total != 1 else ''} (NaN/inf -> 0)" + (f" ({detail})" if detail else ""),
    ]
    return DataSplits(splits, notes=notes, source=source)


def _bytes_per_sample(cfg) -> int:
    if cfg.kind == "tokens":
        return cfg.length * 17
    if cfg.kind == "vector":
        return cfg.features * 4
    return cfg.length * cfg.features * 4 + 8
