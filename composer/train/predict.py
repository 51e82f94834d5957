"""``composer predict`` and ``composer compare``: per-sample outputs of trained runs.

``predict`` runs a trained model (eval mode, no gradients, the batch as given: no views, no
training-only blocks) over one split and keeps, per sample, its id (the data's ``id`` entry,
else its index in the split), its label and every named output of the blueprint
(``prediction`` first). A vector output gets one column per entry, ``<name>[i]``
(``<name>[i,j]`` for more dimensions); labels too.

``compare`` runs two trained models over the same split of the same data and compares every
task metric (:func:`composer.metrics.compute_metrics`) of their predictions with the paired
statistics of :mod:`composer.train.compare`. Both runs must predict the same task; both are
scored on the data they were trained on (which must then be the same files) or on ``data``;
the split's sample ids and labels must agree, else the comparison is refused.

Data follows :func:`~composer.train.evaluation.run_data`. Results are named by the data and
never overwrite an earlier file (:func:`~composer.train.evaluation.unused_name`):
``predictions-<data>-<sha8>-<split>.csv`` next to the checkpoint, and
``comparison-<run B>-<data>-<sha8>-<split>.json`` in run A's folder (or ``out``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from composer.data.base import TensorSplit
from composer.errors import ComposerError, DataError, disk_write
from composer.graph.model import ComposedModel
from composer.metrics import compute_metrics
from composer.train.compare import Comparison, compare_predictions, print_comparison
from composer.train.evaluation import data_label, load_trained, run_data, unused_name
from composer.train.lock import RunLock
from composer.train.optim import Precision, select_device
from composer.train.runlog import describe_data, make_console, write_json

__all__ = ["SampleOutputs", "PredictResult", "sample_outputs", "predict", "compare_runs", "output_columns"]


@dataclass
class SampleOutputs:
    """One split's samples: ``ids`` (N strings), ``label`` ``(N, ...)`` and every named output
    ``outputs[name]`` ``(N, ...)`` (float64), ``prediction`` first."""

    ids: list[str]
    label: np.ndarray
    outputs: dict[str, np.ndarray]


@dataclass
class PredictResult:
    """What :func:`predict` returns; ``written`` is the CSV file, once written."""

    checkpoint: Path
    split: str
    samples: SampleOutputs
    data: dict[str, Any] = field(default_factory=dict)
    written: Path | None = None


def sample_outputs(model: ComposedModel, split: TensorSplit, batch_size: int, device: torch.device,
                   precision: Precision | None = None) -> SampleOutputs:
    """Every named output of ``model`` for every sample of ``split`` (eval mode, no gradients,
    the batch as given), with the samples' ids (index strings when the data has none) and labels."""
    model.eval()
    names = ["prediction", *(o for o in model.plan.outputs if o != "prediction")]
    parts: dict[str, list[torch.Tensor]] = {o: [] for o in names}
    with torch.no_grad():
        for batch in split.batches(batch_size, device=device):
            with precision.autocast() if precision is not None else _nothing():
                out = model(batch, training_branches=False)
            for o in names:
                parts[o].append(out[o].float().cpu())
    ids = list(split.ids) if split.ids is not None else [str(i) for i in range(len(split))]
    label = split.tensors["label"].cpu().numpy()
    return SampleOutputs(ids, label, {o: torch.cat(parts[o]).double().numpy() for o in names})


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


def _entry_names(name: str, shape: tuple[int, ...]) -> list[str]:
    """``name`` for one value per sample, else ``name[i]`` / ``name[i,j]`` per entry."""
    if not shape or int(np.prod(shape)) == 1 and len(shape) == 1:
        return [name]
    return [f"{name}[{','.join(map(str, i))}]" for i in np.ndindex(*shape)]


def output_columns(samples: SampleOutputs) -> tuple[list[str], list[list[Any]]]:
    """The CSV header (``id``, label columns, output columns) and one row per sample."""
    blocks = [("label", samples.label), *samples.outputs.items()]
    header = ["id"]
    for name, values in blocks:
        header += _entry_names(name, tuple(values.shape[1:]))
    flat = [np.asarray(v).reshape(len(samples.ids), -1) for _, v in blocks]
    rows = []
    for i, sid in enumerate(samples.ids):
        row: list[Any] = [sid]
        for values in flat:
            row += [v.item() for v in values[i]]
        rows.append(row)
    return header, rows


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with disk_write(path, "earlier prediction files"):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
        tmp.replace(path)


def predict(target: str | Path, data: Any = None, *, split: str = "test", batch_size: int | None = None, device: str | None = None,
            progress: bool = True, write: bool = True) -> PredictResult:
    """Per-sample outputs of a run folder or checkpoint on one split (module docstring).

    ``data`` defaults to the data the run was trained on (:func:`run_data`). With ``write``, a
    new ``predictions-<data>-<sha8>-<split>.csv`` goes next to the checkpoint (columns ``id``,
    ``label``, ``prediction``, the other named outputs), written under the folder's lock."""
    dev = select_device(device)
    model, path = load_trained(target, dev)
    say = make_console().print if progress else (lambda text: None)

    def run() -> PredictResult:
        bp = model.blueprint
        splits, record = run_data(bp, path.parent, data, say=say)
        samples = sample_outputs(model, splits[split], batch_size or bp.training.batch_size, dev, Precision(bp.training.precision, dev))
        return PredictResult(path, split, samples, record)

    if not write:
        return run()
    with RunLock(path.parent, f"composer predict ({path.name})"):
        result = run()
        name = unused_name(path.parent, f"predictions-{data_label(result.data)}-{_safe(split)}", (".csv",))
        result.written = path.parent / f"{name}.csv"
        _write_csv(result.written, *output_columns(result.samples))
    say(f"{len(result.samples.ids)} samples of {split} of {describe_data(result.data)}: {result.written}")
    return result


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("._") or "run"


def _run_name(path: Path) -> str:
    """A run's name for file names: its folder's name (a checkpoint's folder)."""
    return _safe(path.parent.resolve().name)


def _same_task(a, b, path_a: Path, path_b: Path) -> None:
    """Refuse two runs whose blueprints predict different tasks, naming the fields that differ."""
    ta, tb = a.task.model_dump(), b.task.model_dump()
    differ = [f"{k}: {ta[k]!r} vs {tb[k]!r}" for k in ta if ta.get(k) != tb.get(k)]
    if differ:
        raise ComposerError(f"{path_a} and {path_b} predict different tasks ({'; '.join(differ)}); only runs of the same task compare")


def _same_data(rec_a: dict[str, Any], rec_b: dict[str, Any]) -> bool:
    """Two data records of the same data: the same files (path and SHA-256), else the same tensors."""
    if rec_a.get("files") or rec_b.get("files"):
        return rec_a.get("files") == rec_b.get("files")
    return rec_a.get("sha256") == rec_b.get("sha256")


def _same_samples(sa: SampleOutputs, sb: SampleOutputs, split: str, path_a: Path, path_b: Path) -> None:
    """Refuse when the two runs' split holds other samples (ids) or other labels."""
    if sa.ids != sb.ids:
        first = next((i for i, (x, y) in enumerate(zip(sa.ids, sb.ids)) if x != y), min(len(sa.ids), len(sb.ids)))
        shown = lambda ids: repr(ids[first]) if first < len(ids) else "nothing"  # noqa: E731
        raise DataError(f"the {split} split differs between {path_a} ({len(sa.ids)} samples) and {path_b} ({len(sb.ids)} samples): "
                        f"sample {first} is {shown(sa.ids)} for A and {shown(sb.ids)} for B; a paired comparison needs the same samples")
    if sa.label.shape != sb.label.shape or not np.array_equal(sa.label, sb.label):
        raise DataError(f"the {split} labels differ between {path_a} and {path_b} for the same sample ids; "
                        "a paired comparison needs the same labels (give both the same data with --data)")


def compare_runs(run_a: str | Path, run_b: str | Path, data: Any = None, *, split: str = "test", resamples: int = 1000, seed: int = 0,
                 level: float = 0.95, batch_size: int | None = None, device: str | None = None, out: str | Path | None = None,
                 progress: bool = True, write: bool = True) -> Comparison:
    """Every task metric of two runs on the same split, with the paired bootstrap interval and
    permutation p-value of ``B - A`` (:func:`composer.train.compare.compare_predictions`).

    ``data`` None: each run's recorded data, which must be the same; else ``data`` for both.
    With ``write``, a new ``comparison-<run B>-<data>-<sha8>-<split>.json`` goes to ``out``
    (default: run A's folder), written under the locks of both run folders."""
    dev = select_device(device)
    model_a, path_a = load_trained(run_a, dev)
    model_b, path_b = load_trained(run_b, dev)
    _same_task(model_a.blueprint, model_b.blueprint, path_a, path_b)
    say = make_console().print if progress else (lambda text: None)
    folder = Path(out) if out is not None else path_a.parent
    if not write:
        return _compare(model_a, path_a, model_b, path_b, data, split, resamples, seed, level, batch_size, dev, say)
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(path_a.parent, "composer compare"), RunLock(path_b.parent, "composer compare"), RunLock(folder, "composer compare"):
        result = _compare(model_a, path_a, model_b, path_b, data, split, resamples, seed, level, batch_size, dev, say)
        name = unused_name(folder, f"comparison-{_run_name(path_b)}-{data_label(result.data)}-{_safe(split)}")
        result.written = folder / f"{name}.json"
        write_json(result.written, result.to_dict())
    if progress:
        print_comparison(result, make_console(), title=f"B - A on {split} of {describe_data(result.data)} "
                         f"({result.samples} samples; {resamples} resamples, seed {seed})")
        say(f"all numbers: {result.written}")
    return result


def _compare(model_a, path_a, model_b, path_b, data, split, resamples, seed, level, batch_size, dev, say) -> Comparison:
    bp_a, bp_b = model_a.blueprint, model_b.blueprint
    splits_a, rec_a = run_data(bp_a, path_a.parent, data, say=say)
    splits_b, rec_b = run_data(bp_b, path_b.parent, data, say=say)
    if data is None and not _same_data(rec_a, rec_b):
        raise DataError(f"{path_a} was trained on {describe_data(rec_a)} and {path_b} on {describe_data(rec_b)}; "
                        "give --data FILE to score both on the same data")
    outs = []
    for model, splits in ((model_a, splits_a), (model_b, splits_b)):
        bp = model.blueprint
        outs.append(sample_outputs(model, splits[split], batch_size or bp.training.batch_size, dev, Precision(bp.training.precision, dev)))
    sa, sb = outs
    _same_samples(sa, sb, split, path_a, path_b)
    score = lambda pred, label: compute_metrics(bp_a.task, pred, label)  # noqa: E731
    metrics = compare_predictions(score, sa.outputs["prediction"], sb.outputs["prediction"], sa.label,
                                  resamples=resamples, seed=seed, level=level)
    return Comparison(str(path_a), str(path_b), split, len(sa.ids), resamples, seed, level, metrics, data=rec_a)
