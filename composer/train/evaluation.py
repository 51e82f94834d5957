"""``composer evaluate``: metrics of a trained model per split, and a missing-rate sweep.

A sweep masks the inputs of the chosen split with the training views' temporal mask at each
rate ``p`` (every valid step of every sequence/token modality dropped with probability
``p``: float features zeroed, tokens replaced by ``[UNK]``, special tokens kept), evaluates,
and reports for each metric the area under its curve over the rates (AUILC, EMT-DLFR
eq. 17, trapezoid rule: ``Σ_i ½ (v_i + v_{i+1}) (p_{i+1} - p_i)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from composer.data import load_data
from composer.errors import ComposerError, DataError
from composer.graph.model import ComposedModel
from composer.metrics import auilc
from composer.train.checkpoint import load_checkpoint
from composer.train.optim import Precision, select_device
from composer.train.runlog import make_console, write_json
from composer.train.trainer import evaluate_split
from composer.train.views import temporal_mask

__all__ = ["evaluate", "EvalResult", "load_trained", "parse_rates"]


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
        model = ComposedModel.load(path, map_location=device)
    else:
        state = load_checkpoint(path)
        weights = state.get("model")
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise DataError(f"{path}: the checkpoint holds no model weights")
        model = ComposedModel.for_weights(state.get("blueprint"), {k: tuple(v.shape) for k, v in weights.items()}, str(path))
        model.load_state_dict(weights, strict=True)
    return model.to(device), path


def parse_rates(text: str) -> list[float]:
    """``"0:1:0.1"`` (start:stop:step, stop included) or ``"0.1,0.3,0.5"`` -> sorted rates in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            count = int(round((stop - start) / step))
            rates = [round(start + i * step, 10) for i in range(count + 1)]
        else:
            rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ComposerError(f"--missing-rates '{text}': expected start:stop:step (e.g. 0:1:0.1) or a comma list") from None
    if not rates or any(r < 0 or r > 1 for r in rates):
        raise ComposerError(f"--missing-rates '{text}': rates must lie in [0, 1]")
    return sorted(set(rates))


@dataclass
class EvalResult:
    """Metrics per split; with a sweep, metrics per rate on ``sweep_split`` and AUILC per metric."""

    checkpoint: Path
    splits: dict[str, dict[str, float]]
    sweep_split: str | None = None
    sweep: dict[float, dict[str, float]] = field(default_factory=dict)
    auilc: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "splits": self.splits,
            "sweep_split": self.sweep_split,
            "sweep": [{"rate": r, **m} for r, m in self.sweep.items()],
            "auilc": self.auilc,
        }


def evaluate(
    target: str | Path,
    data: Any = None,
    *,
    splits: tuple[str, ...] = ("valid", "test"),
    missing_rates: str | list[float] | None = None,
    sweep_split: str = "test",
    batch_size: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool = True,
    write: bool = True,
) -> EvalResult:
    """Evaluate a run folder or checkpoint; see the module docstring for the sweep.

    ``data`` defaults to the data the blueprint names (its synthetic set, same seed, so the
    same test split as in training). Writes ``evaluation.json`` next to the checkpoint.
    """
    dev = select_device(device)
    model, path = load_trained(target, dev)
    bp = model.blueprint
    data_splits = load_data(bp, data)
    bs = batch_size or bp.training.batch_size
    precision = Precision(bp.training.precision, dev)
    result = EvalResult(path, {s: evaluate_split(model, data_splits[s], bs, dev, precision, seed=seed) for s in splits})
    if missing_rates is not None:
        rates = parse_rates(missing_rates) if isinstance(missing_rates, str) else sorted(float(r) for r in missing_rates)
        result.sweep_split = sweep_split
        view = next(iter(bp.training.views.values()), None)
        extra = {"unk_token": view.unk_token, "special_tokens": view.special_tokens} if view is not None else {}
        for rate in rates:
            mask = lambda batch, gen, rate=rate: temporal_mask(batch, bp, rate, gen, **extra)  # noqa: E731
            result.sweep[rate] = evaluate_split(model, data_splits[sweep_split], bs, dev, precision, seed=seed, transform=mask)
        names = [k for k in next(iter(result.sweep.values())) if not k.startswith("loss")]
        result.auilc = {k: auilc(rates, [result.sweep[r][k] for r in rates]) for k in names}
    if write:
        write_json(path.parent / "evaluation.json", result.to_dict())
    if progress:
        print_evaluation(result)
    return result


_KEY_METRICS = ("mae", "corr", "acc2_haszero", "f1_haszero", "acc2_nonzero", "f1_nonzero", "acc5", "acc7", "acc", "f1_weighted")


def print_evaluation(result: EvalResult, console=None) -> None:
    from rich.table import Table

    console = console or make_console()
    table = Table(title=f"{result.checkpoint}")
    table.add_column("metric")
    for s in result.splits:
        table.add_column(s, justify="right")
    for name in next(iter(result.splits.values())):
        table.add_row(name, *[f"{m[name]:.4f}" for m in result.splits.values()])
    console.print(table)
    if not result.sweep:
        return
    first = next(iter(result.sweep.values()))
    cols = [k for k in _KEY_METRICS if k in first] or [k for k in first if k != "loss"]
    sweep = Table(title=f"missing-rate sweep on {result.sweep_split}")
    sweep.add_column("rate", justify="right")
    for c in cols:
        sweep.add_column(c, justify="right")
    for rate, m in result.sweep.items():
        sweep.add_row(f"{rate:.2f}", *[f"{m[c]:.4f}" for c in cols])
    sweep.add_section()
    sweep.add_row("AUILC", *[f"{result.auilc[c]:.4f}" for c in cols])
    console.print(sweep)
    console.print(f"all metrics per rate and every AUILC: {result.checkpoint.parent / 'evaluation.json'}")
