"""``composer evaluate``: metrics of a trained model per split, and a missing-rate sweep.

A sweep masks the inputs of the chosen split with the training views' temporal mask at each
rate ``p`` (every valid step of every sequence/token modality dropped with probability
``p``: float features zeroed, tokens replaced by ``[UNK]``, special tokens kept), evaluates,
and reports for each metric the area under its curve over the rates (AUILC, EMT-DLFR
eq. 17, trapezoid rule: ``Σ_i ½ (v_i + v_{i+1}) (p_{i+1} - p_i)``).

Evaluation names its data. A run folder records the data it was trained on (``data.json``);
without ``data`` that data is scored (:func:`run_data`): a file that is gone or whose SHA-256
changed is refused, as is data built in Python that cannot be read again. Other data, the
built-in synthetic set included, is scored only when asked for and is said so. Results go to
``evaluation-<data>-<sha8>-<protocol>.json`` next to the checkpoint (``protocol``: ``clean``,
or ``sweep-<split>`` with missing rates), with ``-2``, ``-3`` ... added rather than overwriting
an earlier file; the printed table's title names the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from composer.blueprint.weights import load_model, model_for_weights
from composer.configs._limits import RATES
from composer.data import DataSplits, load_data
from composer.errors import ComposerError, DataError
from composer.graph.finite import require_finite
from composer.graph.model import ComposedModel
from composer.metric_names import shown
from composer.metrics import auilc
from composer.train.checkpoint import load_checkpoint
from composer.train.lock import RunLock
from composer.train.optim import Precision, select_device
from composer.train.runlog import data_record, describe_data, file_sha256, make_console, read_data_record, write_json
from composer.train.trainer import evaluate_split
from composer.train.views import temporal_mask

__all__ = ["evaluate", "EvalResult", "load_trained", "parse_rates", "run_data", "data_label", "unused_name"]


def load_trained(target: str | Path, device: torch.device | str = "cpu") -> tuple[ComposedModel, Path]:
    """A model from a run folder (its ``best.safetensors``, else ``last.ckpt``), a ``.safetensors`` or a ``.ckpt`` file."""
    path = Path(target)
    if path.is_dir():
        for name in ("best.safetensors", "last.ckpt"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise ComposerError(f"{target}: no best.safetensors or last.ckpt in this folder")
    if not path.exists():
        raise ComposerError(f"no run folder or checkpoint at {target}")
    if path.suffix == ".safetensors":
        model = load_model(path, map_location=device)
    else:
        state = load_checkpoint(path)
        weights = state.get("model")
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise DataError(f"{path}: the checkpoint holds no model weights")
        model = model_for_weights(state.get("blueprint"), {k: tuple(v.shape) for k, v in weights.items()}, str(path))
        model.load_state_dict(require_finite(weights, str(path)), strict=True)
    return model.to(device), path


def parse_rates(text: str) -> list[float]:
    """``"0:1:0.1"`` (start:stop:step, stop included) or ``"0.1,0.3,0.5"`` -> sorted rates in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not all(map(math.isfinite, (start, stop, step))) or step <= 0 or stop < start:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            if count > RATES.value():  # counted before the list is built
                raise ComposerError(f"--missing-rates '{text}': {RATES.exceeded(count)}")
            rates = [round(start + i * step, 10) for i in range(count)]
        else:
            rates = [float(x) for x in text.split(",") if x.strip()]
            if len(rates) > RATES.value():
                raise ComposerError(f"--missing-rates: {RATES.exceeded(len(rates))}")
    except (ValueError, OverflowError):
        raise ComposerError(f"--missing-rates '{text}': expected start:stop:step (e.g. 0:1:0.1) or a comma list") from None
    if not rates or any(r < 0 or r > 1 for r in rates):
        raise ComposerError(f"--missing-rates '{text}': rates must lie in [0, 1]")
    return sorted(set(rates))


def _legacy_record(run_dir: Path) -> dict[str, Any] | None:
    """The ``data`` entry of an older run's ``summary.json`` (source and sizes, no checksum)."""
    import json

    try:
        data = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return data if isinstance(data, dict) and data.get("source") else None


def _check_files(record: dict[str, Any], run_dir: Path) -> None:
    """Refuse when a file the run was trained on is gone or changed since."""
    for path, sha in (record.get("files") or {}).items():
        if not Path(path).is_file():
            raise DataError(
                f"{run_dir} was trained on {path}, which is gone; give the data to score with --data FILE "
                "(or --data synthetic for the built-in synthetic set)"
            )
        now = file_sha256(path)
        if now != sha:
            raise DataError(
                f"{path} changed since {run_dir} was trained on it (SHA-256 {sha[:12]} then, {now[:12]} now); "
                "give --data FILE to score it anyway"
            )


def _recorded(blueprint, record: dict[str, Any], run_dir: Path) -> DataSplits:
    """The data a run recorded, read again and checked against the record's checksums."""
    reader = record.get("reader")
    if reader == "python":
        raise DataError(
            f"{run_dir} was trained on data built in Python ({record.get('source') or 'splits'}), which cannot be read again "
            "from the run folder; pass the same data (data=... in Python, --data FILE on the command line)"
        )
    _check_files(record, run_dir)
    source = record["path"] if reader in ("pickle", "mag_pickle") else ("synthetic" if reader == "synthetic" else None)
    splits = load_data(blueprint, source)
    if splits.fingerprint()["sha256"] != record["sha256"]:
        why = " (the blueprint's training.data settings differ)" if reader == "synthetic" else ""
        raise DataError(
            f"{run_dir} was trained on {describe_data(record)}; reading it again gives other data "
            f"(SHA-256 {splits.fingerprint()['sha256'][:12]}){why}; give the data to use with --data"
        )
    return splits


def run_data(blueprint, run_dir: str | Path, data: Any = None, say=print) -> tuple[DataSplits, dict[str, Any]]:
    """The data to score a run with, and its record (:func:`~composer.train.runlog.data_record`).

    ``data`` None: the data ``run_dir`` recorded (``data.json``), checked (see the module
    docstring); a run folder from before records that names a file refuses (give ``data``);
    without any record (weights outside a run folder) the blueprint's ``training.data``.
    ``data`` given: that data; ``say(text)`` hears when it is not what the run was trained on."""
    run_dir = Path(run_dir)
    record = read_data_record(run_dir)
    if data is not None:
        splits = load_data(blueprint, data)
        scored = data_record(splits, blueprint)
        if record is not None and scored["sha256"] != record["sha256"]:
            say(f"note: scoring {describe_data(scored)}, not the data {run_dir} was trained on ({describe_data(record)})")
        return splits, scored
    if record is not None:
        return (splits := _recorded(blueprint, record, run_dir)), data_record(splits, blueprint)
    legacy = _legacy_record(run_dir)
    if legacy is not None and legacy["source"] != "synthetic":
        raise DataError(
            f"{run_dir} was trained on {legacy['source']} but records no checksum of it (a run from an older Composer); "
            "give the data to score with --data"
        )
    splits = load_data(blueprint, None)
    return splits, data_record(splits, blueprint)


def _stem(record: dict[str, Any]) -> str:
    """A file-name part naming the data: the pickle's stem, ``synthetic``, ``csd`` or ``data``."""
    import re

    reader = record.get("reader")
    name = Path(record["path"]).stem if record.get("path") else (reader if reader in ("synthetic", "csd") else "data")
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("._") or "data"


def data_label(record: dict[str, Any]) -> str:
    """``<data stem>-<sha8>``: names result files by the data they scored."""
    return f"{_stem(record)}-{str(record['sha256'])[:8]}"


def unused_name(folder: str | Path, base: str, suffixes: tuple[str, ...] = (".json",)) -> str:
    """``base``, or ``base-2``, ``base-3`` ... : the first name no ``<folder>/<name><suffix>`` holds,
    so a result never overwrites an earlier one."""
    folder, name, n = Path(folder), base, 1
    while any((folder / f"{name}{suffix}").exists() for suffix in suffixes):
        n += 1
        name = f"{base}-{n}"
    return name


@dataclass
class EvalResult:
    """Metrics per split; with a sweep, metrics per rate on ``sweep_split`` and AUILC per metric."""

    checkpoint: Path
    splits: dict[str, dict[str, float]]
    sweep_split: str | None = None
    sweep: dict[float, dict[str, float]] = field(default_factory=dict)
    auilc: dict[str, float] = field(default_factory=dict)
    sweep_modalities: list[str] | None = None  # the modalities the sweep masks (None: every sequence modality)
    #: missing-modality conditions on ``sweep_split``: the modalities present -> metrics
    conditions: dict[tuple[str, ...], dict[str, float]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # the record of the data scored
    written: Path | None = None  # the results file, when one was written

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "data": self.data,
            "splits": self.splits,
            "sweep_split": self.sweep_split,
            "sweep": [{"rate": r, **m} for r, m in self.sweep.items()],
            "sweep_modalities": self.sweep_modalities,
            "auilc": self.auilc,
            "conditions": [{"present": list(p), **m} for p, m in self.conditions.items()],
        }


def evaluate(
    target: str | Path,
    data: Any = None,
    *,
    splits: tuple[str, ...] = ("valid", "test"),
    missing_rates: str | list[float] | None = None,
    sweep_split: str = "test",
    sweep_modalities: list[str] | None = None,
    drop: list[str] | None = None,
    conditions: str | list[tuple[str, ...]] | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
    write: bool = True,
) -> EvalResult:
    """Evaluate a run folder or checkpoint; see the module docstring for the data and the sweep.

    ``drop``: modalities absent in every split scored (:func:`~composer.train.views.drop_modalities`);
    ``sweep_modalities``: the modalities the missing-rate sweep masks (default: every sequence
    and token modality); ``conditions``: ``"all"`` for the literature's missing-modality table
    on ``sweep_split`` (every non-empty set of present modalities, complete first) or a list of
    present-modality tuples.

    ``data`` defaults to the data the run was trained on (:func:`run_data`). With ``write``,
    the results go to a new ``evaluation-<data>-<sha8>-<protocol>.json`` next to the
    checkpoint, written while holding the folder's lock (:class:`~composer.train.lock.RunLock`).
    """
    dev = select_device(device)
    model, path = load_trained(target, dev)
    options = _MissingOptions.check(model.blueprint, sweep_modalities, drop, conditions)
    if not write:
        return _evaluate(model, path, data, splits, missing_rates, sweep_split, batch_size, dev, seed, progress, options)
    with RunLock(path.parent, f"composer evaluate ({path.name})"):
        result = _evaluate(model, path, data, splits, missing_rates, sweep_split, batch_size, dev, seed, progress, options)
        result.written = path.parent / (unused_name(path.parent, f"evaluation-{data_label(result.data)}-{_protocol(result)}") + ".json")
        write_json(result.written, result.to_dict())
    if progress:
        make_console().print(f"all metrics{' per rate and every AUILC' if result.sweep else ''}: {result.written}")
    return result


def _protocol(result: EvalResult) -> str:
    parts = [f"sweep-{result.sweep_split}"] if result.sweep else []
    parts += [f"conditions-{result.sweep_split}"] if result.conditions else []
    return "-".join(parts) or "clean"


@dataclass(frozen=True)
class _MissingOptions:
    """What is missing at evaluation: the sweep's modalities, modalities dropped everywhere, the conditions."""

    sweep_modalities: list[str] | None
    drop: list[str]
    conditions: list[tuple[str, ...]]

    @staticmethod
    def check(bp, sweep_modalities, drop, conditions) -> "_MissingOptions":
        from composer.errors import did_you_mean
        from composer.train.views import maskable_modalities, modality_conditions

        names = list(bp.modalities)

        def known(given, flag, allowed):
            for m in given or []:
                if m not in allowed:
                    hint = did_you_mean(m, allowed)
                    raise ComposerError(f"{flag}: '{m}' is not a modality of {bp.name} ({', '.join(allowed)})" + (f"; did you mean '{hint}'?" if hint else ""))
            return list(given) if given is not None else None

        sweep = known(sweep_modalities, "--modalities", maskable_modalities(bp))
        dropped = known(drop, "--drop", names) or []
        if len(dropped) == len(names):
            raise ComposerError("--drop: every modality dropped; nothing would be left to predict from")
        if conditions == "all":
            chosen = modality_conditions([n for n in names if n not in dropped])
        else:
            chosen = [tuple(known(list(c), "--conditions", names)) for c in (conditions or [])]
        return _MissingOptions(sweep, dropped, chosen)


def _evaluate(model, path, data, splits, missing_rates, sweep_split, batch_size, dev, seed, progress, options: _MissingOptions) -> EvalResult:
    from composer.train.views import drop_modalities

    bp = model.blueprint
    say = make_console().print if progress else (lambda text: None)
    data_splits, scored = run_data(bp, path.parent, data, say=say)
    bs = batch_size or bp.training.batch_size
    precision = Precision(bp.training.precision, dev)
    view = next(iter(bp.training.views.values()), None)
    extra = {"unk_token": view.unk_token, "special_tokens": view.special_tokens} if view is not None else {}

    def without(names, then=None):  # a transform that drops `names` (then applies `then`)
        if not names:
            return then
        return lambda batch, gen: (then or (lambda b, g: b))(drop_modalities(batch, bp, list(names), **extra), gen)

    base = without(options.drop)
    if options.drop:
        say(f"modalities dropped in every split scored: {', '.join(options.drop)}")
    result = EvalResult(path, {s: evaluate_split(model, data_splits[s], bs, dev, precision, seed=seed, transform=base) for s in splits}, data=scored)
    if missing_rates is not None:
        rates = parse_rates(missing_rates) if isinstance(missing_rates, str) else sorted(float(r) for r in missing_rates)
        result.sweep_split, result.sweep_modalities = sweep_split, options.sweep_modalities
        for rate in rates:
            mask = lambda batch, gen, rate=rate: temporal_mask(batch, bp, rate, gen, modalities=options.sweep_modalities, **extra)  # noqa: E731
            result.sweep[rate] = evaluate_split(model, data_splits[sweep_split], bs, dev, precision, seed=seed, transform=without(options.drop, mask))
        names = [k for k in next(iter(result.sweep.values())) if not k.startswith("loss")]
        result.auilc = {k: auilc(rates, [result.sweep[r][k] for r in rates]) for k in names}
    if options.conditions:
        result.sweep_split = sweep_split
        for present in options.conditions:
            absent = [m for m in bp.modalities if m not in present]
            result.conditions[present] = evaluate_split(model, data_splits[sweep_split], bs, dev, precision, seed=seed, transform=without(absent))
    if progress:
        print_evaluation(result)
    return result


_KEY_METRICS = ("mae", "corr", "acc2_haszero", "f1_haszero", "acc2_nonzero", "f1_nonzero", "acc5", "acc7", "acc", "f1_weighted")


def print_evaluation(result: EvalResult, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    table = Table(title=f"{result.checkpoint} on {describe_data(result.data)}" if result.data else f"{result.checkpoint}")
    table.add_column("metric")
    for s in result.splits:
        table.add_column(s, justify="right")
    for name in next(iter(result.splits.values())):
        table.add_row(name, *[f"{m[name]:.4f}" for m in result.splits.values()])
    console.print(table)
    if result.conditions:
        _print_conditions(result, console)
    if not result.sweep:
        return
    first = next(iter(result.sweep.values()))
    cols = [k for k in _KEY_METRICS if k in first] or [k for k in first if k != "loss"]
    sweep = Table(title=f"missing-rate sweep on {result.sweep_split} of {describe_data(result.data) if result.data else 'the data'} "
                        "(accuracies, F1 and their AUILC in %, as in composer robustness and the papers)")
    sweep.add_column("rate", justify="right")
    for c in cols:
        sweep.add_column(c, justify="right")
    for rate, m in result.sweep.items():
        sweep.add_row(f"{rate:.2f}", *[shown(c, m[c]) for c in cols])
    sweep.add_section()
    sweep.add_row("AUILC", *[shown(c, result.auilc[c]) for c in cols])
    console.print(sweep)


def _print_conditions(result: EvalResult, console) -> None:
    from rich.table import Table

    first = next(iter(result.conditions.values()))
    cols = [k for k in _KEY_METRICS if k in first] or [k for k in first if not k.startswith("loss")]
    table = Table(title=f"missing-modality conditions on {result.sweep_split} of {describe_data(result.data) if result.data else 'the data'}")
    table.add_column("present")
    for c in cols:
        table.add_column(c, justify="right")
    for present, m in result.conditions.items():
        table.add_row(" + ".join(present), *[f"{m[c]:.4f}" for c in cols])
    console.print(table)
