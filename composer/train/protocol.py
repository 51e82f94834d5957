"""Evaluation protocols over seeds: the standard one, EMT-DLFR's per-rate robustness, LNLN's.

* ``standard``: one model per seed, trained as the blueprint says and tested on clean inputs
  (the layout of the papers' main tables; ``composer reproduce``).
* ``per_rate`` (EMT-DLFR, §4.1 "robustness"): for every missing rate ``r`` and seed, a model is
  trained with the blueprint's temporal-mask views at rate ``r`` (``rate_range`` off) and
  tested with the test inputs masked at ``r``; the masks of a (seed, rate) pair are drawn from a
  generator seeded by the seed, so every model meets the same masks (with a ``resample: split``
  view, the view's fixed draws: EMT-DLFR's masks). The metrics score the predictions on the
  masked inputs, never a view of them. Per rate the metrics'
  mean ± std over seeds; per seed the area under each metric's curve (AUILC, EMT-DLFR eq. 17),
  then its mean ± std.
* ``lnln`` (LNLN, Zhang et al., NeurIPS 2024): one model per seed, trained as the blueprint
  says, tested at the rates 0.0-0.9 (default seeds 1111, 1112, 1113); per rate mean ± std,
  and the mean over the rates (LNLN's summary numbers) with its std over seeds.

Masking is Composer's temporal mask (:func:`composer.train.views.temporal_mask`): each valid
step of each sequence or token modality is dropped with probability ``r`` (features zeroed,
tokens replaced by ``[UNK]``, special tokens kept). Every model's run folder is kept under the
output folder (``seed_<s>`` or ``seed_<s>/rate_<r>``); a finished run is reused, an interrupted
one resumed, so an interrupted protocol continues where it stopped. The results go to
``<out>/<name>.json``, ``.csv`` and ``.md`` with the data's SHA-256, the versions and the seeds.
"""

from __future__ import annotations

import csv
import io
import math
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from composer.errors import ComposerError
from composer.metrics import auilc

__all__ = ["ProtocolResult", "run_protocol", "PROTOCOL_RATES", "PAPER_COLUMNS", "LNLN_SEEDS"]

#: Default rates of each protocol.
PROTOCOL_RATES = {"standard": [0.0], "per_rate": [round(0.1 * i, 1) for i in range(11)], "lnln": [round(0.1 * i, 1) for i in range(10)]}
LNLN_SEEDS = [1111, 1112, 1113]
#: The papers' table columns, as Composer names the metrics (regression on MOSI/MOSEI).
PAPER_COLUMNS = [
    ("mae", "MAE"),
    ("corr", "Corr"),
    ("acc2_nonzero", "Acc-2 (negative / positive, zeros dropped)"),
    ("f1_nonzero", "F1 (negative / positive)"),
    ("acc2_haszero", "Acc-2 (negative / non-negative)"),
    ("f1_haszero", "F1 (negative / non-negative)"),
    ("acc7", "Acc-7"),
]
CLASSIFICATION_COLUMNS = [("acc", "Accuracy"), ("f1_weighted", "F1 (weighted)")]


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


@dataclass
class ProtocolResult:
    """Per-model test metrics and their summaries (see the module docstring)."""

    protocol: str
    blueprint: str
    rates: list[float]
    seeds: list[int]
    runs: list[dict[str, Any]] = field(default_factory=list)  # {seed, rate, trained_at, run_dir, metrics}
    per_rate: dict[float, dict[str, tuple[float, float]]] = field(default_factory=dict)
    auilc: dict[str, tuple[float, float]] = field(default_factory=dict)
    average: dict[str, tuple[float, float]] = field(default_factory=dict)
    reported: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def summarise(self) -> None:
        names = [k for k in self.runs[0]["metrics"] if not k.startswith("loss")] if self.runs else []
        for rate in self.rates:
            rows = [r["metrics"] for r in self.runs if r["rate"] == rate]
            self.per_rate[rate] = {k: _mean_std([m[k] for m in rows]) for k in names}
        if len(self.rates) > 1:
            per_seed_auilc = {k: [auilc(self.rates, self._curve(s, k)) for s in self.seeds] for k in names}
            self.auilc = {k: _mean_std(v) for k, v in per_seed_auilc.items()}
            per_seed_mean = {k: [statistics.fmean(self._curve(s, k)) for s in self.seeds] for k in names}
            self.average = {k: _mean_std(v) for k, v in per_seed_mean.items()}

    def _curve(self, seed: int, metric: str) -> list[float]:
        by_rate = {r["rate"]: r["metrics"][metric] for r in self.runs if r["seed"] == seed}
        return [by_rate[rate] for rate in self.rates]

    def columns(self) -> list[tuple[str, str]]:
        first = next(iter(self.per_rate.values()), {})
        table = PAPER_COLUMNS if "mae" in first else CLASSIFICATION_COLUMNS
        return [(k, label) for k, label in table if k in first] or [(k, k) for k in first]

    def to_dict(self) -> dict[str, Any]:
        pair = lambda ms: {k: {"mean": m, "std": s} for k, (m, s) in ms.items()}  # noqa: E731
        return {
            "protocol": self.protocol, "blueprint": self.blueprint, "rates": self.rates, "seeds": self.seeds,
            "per_rate": [{"rate": r, **pair(ms)} for r, ms in self.per_rate.items()],
            "auilc": pair(self.auilc), "mean_over_rates": pair(self.average),
            "reported": self.reported, "runs": self.runs, "provenance": self.provenance,
        }

    # -- tables ------------------------------------------------------------------------
    def comparison_rows(self) -> list[dict[str, str]]:
        """Rows ``metric | paper | composer mean ± std`` (the paper's layout); accuracies and F1 in percent."""
        rows = []
        summary = self.per_rate[self.rates[0]] if len(self.rates) == 1 else {
            **{f"auilc_{k}": v for k, v in self.auilc.items()}, **{f"mean_{k}": v for k, v in self.average.items()}}
        reported = next((r for r in self.reported if r["protocol"] == self.protocol), None)
        keys = self.columns()
        if len(self.rates) > 1:
            keys = [(f"auilc_{k}", f"AUILC {label}") for k, label in keys] + [(f"mean_{k}", f"mean over rates {label}") for k, label in keys]
        shown = {k for k, _ in keys}
        keys += [(k, k) for k in (reported or {}).get("metrics", {}) if k not in shown and k in summary]  # e.g. per-class accuracies
        for key, label in keys:
            mean, std = summary[key]
            scale = 100.0 if _percent(key) else 1.0
            paper = reported["metrics"].get(key) if reported else None
            rows.append({
                "metric": label,
                "paper": "" if paper is None else f"{paper:g}",
                "composer": f"{mean * scale:.{_digits(key)}f} ± {std * scale:.{_digits(key)}f}",
            })
        return rows

    def markdown(self) -> str:
        reported = next((r for r in self.reported if r["protocol"] == self.protocol), None)
        lines = [f"# {self.blueprint}: {self.protocol} protocol", ""]
        if reported:
            lines += [f"Paper: {reported['source']} ({reported['dataset']})" + (f". {reported['note']}" if reported.get("note") else ""), ""]
        lines += ["| metric | paper | Composer (mean ± std) |", "|---|---|---|"]
        lines += [f"| {r['metric']} | {r['paper']} | {r['composer']} |" for r in self.comparison_rows()]
        if len(self.rates) > 1:
            cols = self.columns()
            lines += ["", "| rate | " + " | ".join(label for _, label in cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for rate, ms in self.per_rate.items():
                cells = [f"{ms[k][0] * (100 if _percent(k) else 1):.{_digits(k)}f} ± {ms[k][1] * (100 if _percent(k) else 1):.{_digits(k)}f}" for k, _ in cols]
                lines.append(f"| {rate:.1f} | " + " | ".join(cells) + " |")
        p = self.provenance
        lines += ["", f"Seeds: {', '.join(map(str, self.seeds))}. Data: {p.get('data_source')} (SHA-256 {p.get('data_sha256')}).",
                  f"Versions: " + ", ".join(f"{k} {v}" for k, v in p.get("versions", {}).items()) + "."]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seed", "rate", "metric", "value"])
        for run in self.runs:
            for k, v in run["metrics"].items():
                writer.writerow([run["seed"], run["rate"], k, v])
        return out.getvalue()


def _percent(metric: str) -> bool:
    base = metric.removeprefix("auilc_").removeprefix("mean_")
    return base.startswith(("acc", "f1"))


def _digits(metric: str) -> int:
    return 1 if _percent(metric) else 3


def _versions() -> dict[str, str]:
    import numpy
    import torch

    import composer

    return {"composer": composer.__version__, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def run_protocol(
    blueprint,
    protocol: str = "standard",
    *,
    data: Any = None,
    out: str | Path,
    seeds: list[int] | None = None,
    rates: list[float] | None = None,
    epochs: int | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ProtocolResult:
    """Run ``protocol`` (``standard``, ``per_rate`` or ``lnln``) for a blueprint; see the module docstring.

    ``blueprint``: a path, text, dict or loaded blueprint; ``data``: as for :func:`composer.train`;
    ``seeds`` default to the blueprint's ``training.seed`` (standard, per_rate) or LNLN's three;
    ``rates`` to those of the blueprint's ``reported:`` entry for the protocol, else the protocol's. Returns the result and writes ``<out>/<protocol>.{json,csv,md}``."""
    from composer.data import load_data
    from composer.graph.model import ComposedModel
    from composer.train.optim import Precision, select_device
    from composer.train.runlog import write_json
    from composer.train.trainer import as_blueprint, evaluate_split, train
    from composer.train.views import masked_modalities, split_uniforms, temporal_mask

    if protocol not in PROTOCOL_RATES:
        raise ComposerError(f"unknown protocol '{protocol}' (standard, per_rate, lnln)")
    bp = as_blueprint(blueprint)
    seeds = list(seeds) if seeds else (LNLN_SEEDS if protocol == "lnln" else [bp.training.seed])
    if len(set(seeds)) != len(seeds):
        raise ComposerError(f"seeds {seeds} repeat a seed")
    paper = next((r for r in bp.reported if r.protocol == protocol and r.rates), None)
    rates = sorted(set(rates)) if rates is not None else (sorted(set(paper.rates)) if paper else PROTOCOL_RATES[protocol])
    if protocol == "standard" and rates != [0.0]:
        raise ComposerError("the standard protocol tests on clean inputs; use per_rate or lnln for missing rates")
    if any(not 0.0 <= r <= 1.0 for r in rates):
        raise ComposerError(f"missing rates must lie in [0, 1], got {rates}")
    if protocol == "per_rate" and not bp.training.views:
        log("note: the blueprint has no training views, so every per-rate model trains on complete inputs")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_data(bp, data)
    fingerprint = splits.fingerprint()
    dev = select_device(device)
    precision = Precision(bp.training.precision, dev)
    view = next(iter(bp.training.views.values()), None)
    tokens = {"unk_token": view.unk_token, "special_tokens": view.special_tokens} if view is not None else {}
    result = ProtocolResult(protocol, bp.name, rates, seeds, reported=[r.model_dump() for r in bp.reported])
    result.provenance = {"data_source": fingerprint["source"], "data_sha256": fingerprint["sha256"], "data_sizes": fingerprint["sizes"],
                         "versions": _versions(), "epochs": epochs or bp.training.epochs, "device": str(dev)}

    def masked(batch: dict, gen, rate: float) -> dict:
        """The test batch masked at ``rate``: with the view's fixed draws under ``resample: split``
        (EMT-DLFR masks the test split with the training seeds), else from the seeded generator."""
        if view is not None and view.resample == "split":
            chosen = masked_modalities(bp, view)
            return temporal_mask(batch, bp, rate, gen, modalities=chosen, uniforms=split_uniforms(batch, bp, view, chosen), **tokens)
        return temporal_mask(batch, bp, rate, gen, **tokens)

    def trained(seed: int, rate: float | None) -> tuple[ComposedModel, Path]:
        run_dir = out / f"seed_{seed}" / (f"rate_{rate:.2f}" if rate is not None else "")
        overrides = []
        if rate is not None:
            for name in bp.training.views:
                overrides += [f"training.views.{name}.rate={rate}", f"training.views.{name}.rate_range=null"]
        if (run_dir / "summary.json").exists() and (run_dir / "best.safetensors").exists():
            _check_same_data(run_dir, fingerprint)
            log(f"reusing the finished run {run_dir}")
            return ComposedModel.load(run_dir / "best.safetensors", map_location=dev), run_dir
        resume = (run_dir / "last.ckpt").exists()
        done = train(bp, splits, run_dir, overrides=overrides, epochs=epochs, seed=seed, resume=resume,
                     device=device, progress=progress, overwrite=not resume)
        return done.model, run_dir

    for seed in seeds:
        shared = None if protocol == "per_rate" else trained(seed, None)
        for rate in rates:
            model, run_dir = trained(seed, rate) if shared is None else shared
            mask = None if rate == 0.0 else (lambda batch, gen, rate=rate: masked(batch, gen, rate))
            # the transform is the masking at this rate: score the model's predictions on it (main), never a view of it
            metrics = evaluate_split(model, splits["test"], bp.training.batch_size, dev, precision, seed=seed, transform=mask, view="main")
            result.runs.append({"seed": seed, "rate": rate, "run_dir": str(run_dir), "metrics": metrics})
            log(f"seed {seed}, rate {rate:.2f}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in dict(PAPER_COLUMNS + CLASSIFICATION_COLUMNS)))
    result.summarise()
    write_json(out / f"{protocol}.json", result.to_dict())
    (out / f"{protocol}.csv").write_text(result.csv(), encoding="utf-8")
    (out / f"{protocol}.md").write_text(result.markdown(), encoding="utf-8")
    return result


def _check_same_data(run_dir: Path, fingerprint: dict) -> None:
    from composer.train.checkpoint import load_checkpoint

    saved = load_checkpoint(run_dir / "last.ckpt").get("data") if (run_dir / "last.ckpt").exists() else None
    if isinstance(saved, dict) and saved.get("sha256") != fingerprint["sha256"]:
        raise ComposerError(f"{run_dir} holds a run on other data (SHA-256 {saved.get('sha256')}); use another output folder")
