"""The dataset interface: splits of stacked tensors, batched by index.

A *split* is a :class:`TensorSplit`: a dict of tensors that share their first dimension
(one row per sample) in the batch layout of :class:`~composer.graph.model.ComposedModel`
(modality tensors, ``<m>_lengths``, ``<m>_mask``, ``<m>_segment``, ``label`` and a
``label_<name>`` per ``training.data.extra_labels`` entry) plus optional
sample ids. Data for a run is a :class:`DataSplits` mapping ``train`` / ``valid`` / ``test`` to
splits, with a ``notes`` list of log lines (e.g. how many non-finite values were cleaned).

Other layouts plug in through :class:`Dataset`: any object with ``load(blueprint) ->
DataSplits``; :func:`splits_from_arrays` builds the splits from plain arrays.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np
import torch

from composer.errors import DataError

__all__ = [
    "TensorSplit", "DataSplits", "Dataset", "splits_from_arrays", "check_split", "check_labels", "check_padding", "check_label_range",
    "shown", "SPLITS",
]

SPLITS = ("train", "valid", "test")


@dataclass
class TensorSplit:
    """One split: ``tensors[key]`` has shape ``(N, ...)``; ``ids`` names the N samples."""

    tensors: dict[str, torch.Tensor]
    ids: list[str] | None = None

    def __post_init__(self) -> None:
        sizes = {k: int(v.shape[0]) for k, v in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(f"split tensors differ in their number of samples: {sizes}")
        if self.ids is not None and sizes and len(self.ids) != next(iter(sizes.values())):
            raise DataError(f"{len(self.ids)} ids for {next(iter(sizes.values()))} samples")

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0]) if self.tensors else 0

    def batch(self, index: torch.Tensor, device: str | torch.device = "cpu") -> dict[str, Any]:
        """The samples at ``index`` as one batch dict on ``device``; ``host_lengths`` keeps each
        modality's lengths as Python ints, so packing a sequence needs no device-to-host copy;
        ``index`` (on the CPU) and ``split_size`` say which samples of the split these are."""
        out: dict[str, Any] = {k: v[index].to(device, non_blocking=True) for k, v in self.tensors.items()}
        out["host_lengths"] = {k[: -len("_lengths")]: v[index].tolist() for k, v in self.tensors.items() if k.endswith("_lengths")}
        for k, v in self.tensors.items():  # a token modality's lengths: its attention mask's, counted here on the host
            if k.endswith("_mask") and v.dim() == 2 and k[: -len("_mask")] not in out["host_lengths"]:
                out["host_lengths"][k[: -len("_mask")]] = v[index].sum(1).tolist()
        if self.ids is not None:
            out["id"] = [self.ids[i] for i in index.tolist()]
        out["index"], out["split_size"] = index.cpu(), len(self)  # where the samples sit in their split (fixed view masks)
        return out

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
    ) -> Iterator[dict[str, Any]]:
        """Consecutive batches (the last one may be smaller); shuffled by ``generator`` if asked."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.batch(order[start : start + batch_size], device)


@dataclass
class DataSplits:
    """``train``, ``valid`` and ``test`` splits, and log lines about how they were prepared."""

    splits: dict[str, TensorSplit]
    notes: list[str] = field(default_factory=list)
    source: str = ""
    normalized: frozenset[str] = frozenset()  # modalities already z-normalised (see composer.data.normalize)
    _fingerprint: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __getitem__(self, name: str) -> TensorSplit:
        if name not in self.splits:
            raise DataError(f"no '{name}' split in {self.source or 'the data'} (splits: {', '.join(self.splits)})")
        return self.splits[name]

    def __contains__(self, name: str) -> bool:
        return name in self.splits

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def fingerprint(self) -> dict[str, Any]:
        """Source, split sizes and a SHA-256 over every tensor (key, dtype, shape, bytes) and id.

        Stored in checkpoints so that a resumed run can refuse other data."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for split in sorted(self.splits):
                part = self.splits[split]
                for key in sorted(part.tensors):
                    t = part.tensors[key].detach().cpu().contiguous()
                    digest.update(f"{split}/{key}/{t.dtype}/{tuple(t.shape)}".encode())
                    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
                digest.update("\n".join(part.ids or []).encode())
            self._fingerprint = {"source": self.source, "sizes": self.sizes(), "sha256": digest.hexdigest()}
        return self._fingerprint


@runtime_checkable
class Dataset(Protocol):
    """Anything that can produce the splits for a blueprint (pass it as ``data=`` to :func:`composer.train`)."""

    def load(self, blueprint) -> DataSplits: ...


def shown(value: Any, limit: int = 200) -> str:
    """Text from a file made safe to print: the names of a dict's keys (or a list's items) joined,
    control characters escaped (an ANSI sequence in a key never reaches the terminal), cut to
    ``limit`` characters."""
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        value = ", ".join(str(v)[: limit + 1] if isinstance(v, (str, int, float)) else type(v).__name__ for v in value)
    text = value if isinstance(value, str) else value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text[: limit + 1]
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return safe if len(safe) <= limit else safe[:limit] + "..."


def _tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    arr = np.asarray(value)
    if arr.dtype == object:
        raise DataError(f"'{key}': cannot turn an array of Python objects into a tensor")
    return torch.from_numpy(np.ascontiguousarray(arr))


def named_splits(data: dict, path: str, splits=SPLITS) -> dict:
    """``data`` with ``dev`` read as ``valid``; a :class:`DataError` naming what is missing."""
    if "valid" not in data and "dev" in data:
        data = {**data, "valid": data["dev"]}
    missing = [s for s in splits if s not in data]
    if missing:
        raise DataError(f"{path}: missing split{'s' if len(missing) > 1 else ''} {', '.join(missing)} (found: {', '.join(map(str, data))})")
    return data


def check_split(blueprint, split: TensorSplit, name: str = "split") -> None:
    """Raise :class:`DataError` when a split does not carry what the blueprint's modalities need."""
    for m, cfg in blueprint.modalities.items():
        if m not in split.tensors:
            raise DataError(f"{name}: missing modality '{m}' (expected {_expected(cfg)})")
        x = split.tensors[m]
        if cfg.kind == "tokens":
            ok = x.dim() == 2 and not x.is_floating_point()
        elif cfg.kind == "sequence":
            ok = x.dim() == 3 and x.shape[2] == cfg.features
        elif cfg.kind == "vector":
            ok = x.dim() == 2 and x.shape[1] == cfg.features
        else:
            ok = tuple(x.shape[1:]) == (cfg.features, *cfg.spatial)
        if not ok:
            fix = ""
            if cfg.kind in ("sequence", "vector") and x.dim() == (3 if cfg.kind == "sequence" else 2):
                fix = f"; if the file is right, set the blueprint's width: --set modalities.{m}.features={int(x.shape[-1])}"
            raise DataError(f"{name}: '{m}' has shape {tuple(x.shape)}, expected {_expected(cfg)}{fix}")
        if cfg.kind == "tokens" and x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.vocab):
            raise DataError(
                f"{name}: '{m}' holds token ids from {int(x.min())} to {int(x.max())}, outside [0, {cfg.vocab}) "
                f"(modalities.{m}.vocab); the text encoder checks the vocabulary against that once, here, not at every step"
            )
        if cfg.kind in ("sequence", "tokens"):
            check_padding(split.tensors, m, int(x.shape[1]), name)
    if "label" not in split.tensors:
        raise DataError(f"{name}: no 'label' tensor")
    if len(split) == 0:
        raise DataError(f"{name}: the split is empty; every split needs at least one sample")
    check_labels(blueprint.task, split.tensors["label"], name)
    for extra in blueprint.training.data.extra_labels:
        key = f"label_{extra}"
        if key not in split.tensors:
            raise DataError(
                f"{name}: no '{key}' tensor for training.data.extra_labels.{extra}; the standard pickle reader and the "
                "synthetic set give it (other sources: add it to the batch layout)"
            )
        if split.tensors[key].shape != split.tensors["label"].shape:
            raise DataError(f"{name}: '{key}' has shape {tuple(split.tensors[key].shape)}; an extra label has the label's shape {tuple(split.tensors['label'].shape)}")
        check_labels(blueprint.task, split.tensors[key], f"{name}: '{key}'")


def check_padding(tensors: dict[str, torch.Tensor], modality: str, time: int, name: str = "split") -> None:
    """Padding must be a valid prefix (right padding): ``<m>_lengths`` within ``0..T`` and
    ``<m>_mask`` of the form ``[True]*L + [False]*(T-L)``. Composer's mask model (docs/masks.md)
    relies on it: lengths, packing, segments and pooling windows all read the valid steps as a prefix."""
    lengths = tensors.get(f"{modality}_lengths")
    if lengths is not None:
        if lengths.is_floating_point() or lengths.dim() != 1:
            raise DataError(f"{name}: '{modality}_lengths' must be integers, one per sample")
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > time):
            raise DataError(f"{name}: '{modality}_lengths' run {int(lengths.min())}..{int(lengths.max())}, expected 0..{time} (the padded length)")
    mask = tensors.get(f"{modality}_mask")
    if mask is not None:
        if mask.dim() != 2 or mask.shape[1] != time:
            raise DataError(f"{name}: '{modality}_mask' has shape {tuple(mask.shape)}, expected (N, {time})")
        mask = mask.bool()
        prefix = torch.arange(time)[None, :] < mask.sum(1, keepdim=True)
        if not torch.equal(mask, prefix):
            bad = int((mask != prefix).any(1).nonzero()[0])
            raise DataError(
                f"{name}: '{modality}_mask' of sample {bad} is not right padding (valid steps first, then padding); "
                "Composer reads every padding mask as a prefix of valid steps"
            )


def check_label_range(task) -> None:
    """``task.label_range`` must be two finite numbers, low below high (the synthetic labels and
    every regression check read it)."""
    if task.kind != "regression":
        return
    low, high = task.label_range
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise DataError(f"task.label_range is [{low}, {high}]; expected two finite numbers, the lower first (e.g. [-3, 3])")


def check_labels(task, label: torch.Tensor, name: str = "split") -> None:
    """Labels must be finite and inside the task's range: classes ``0..outputs-1``, multilabel 0/1,
    regression within ``task.label_range``. Raises :class:`DataError` naming what is wrong."""
    check_label_range(task)
    y = label.detach().cpu()
    if y.is_floating_point() and not torch.isfinite(y).all():
        raise DataError(f"{name}: {int((~torch.isfinite(y)).sum())} labels are NaN or infinite; every label must be a finite number")
    if task.kind == "classification":
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise DataError(f"{name}: class labels must be integers 0..{task.outputs - 1}")
        if y.numel() and (y.min() < 0 or y.max() >= task.outputs):
            raise DataError(f"{name}: class labels run {int(y.min())}..{int(y.max())}, expected 0..{task.outputs - 1}")
    elif task.kind == "multilabel":
        if y.numel() and not ((y == 0) | (y == 1)).all():
            raise DataError(f"{name}: multilabel targets must be 0 or 1")
    else:
        low, high = task.label_range
        if y.numel() and (float(y.min()) < low or float(y.max()) > high):
            raise DataError(
                f"{name}: regression labels run {float(y.min()):.4g}..{float(y.max()):.4g}, outside task.label_range "
                f"[{low}, {high}]; widen task.label_range if the data is right"
            )


def _expected(cfg) -> str:
    if cfg.kind == "tokens":
        return "token ids (N, T) of an integer type"
    if cfg.kind == "sequence":
        return f"(N, T, {cfg.features})"
    if cfg.kind == "vector":
        return f"(N, {cfg.features})"
    return "(N, " + ", ".join(str(s) for s in (cfg.features, *cfg.spatial)) + ")"


def splits_from_arrays(blueprint, arrays: Mapping[str, Mapping[str, Any]], *, source: str = "arrays") -> DataSplits:
    """Build :class:`DataSplits` from ``{split: {key: array}}`` already in the batch layout.

    Keys are the batch keys (``text``, ``audio_lengths``, ``text_mask``, ``label``...); an
    ``id`` entry (list of str) names the samples. Shapes are checked against the blueprint.
    """
    splits = {}
    for name, data in arrays.items():
        ids = [str(i) for i in data["id"]] if "id" in data else None
        tensors = {k: _tensor(k, v) for k, v in data.items() if k != "id"}
        split = TensorSplit(tensors, ids)
        check_split(blueprint, split, f"{source}[{name}]")
        splits[name] = split
    return DataSplits(splits, notes=unpadded_notes(blueprint, splits), source=source)


def unpadded_notes(blueprint, splits: Mapping[str, TensorSplit]) -> list[str]:
    """One note per sequence modality that no split gives lengths or a mask for (read as fully valid)."""
    notes = []
    for m, cfg in blueprint.modalities.items():
        if cfg.kind != "sequence":
            continue
        if not any(f"{m}_lengths" in s.tensors or f"{m}_mask" in s.tensors for s in splits.values()):
            notes.append(f"padding: '{m}': no '{m}_lengths' or '{m}_mask' given; all steps read as valid")
    return notes
