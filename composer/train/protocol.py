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
  says, tested at the rates 0.0-0.9 (default seeds: the reported entry's, else 1111, 1112, 1113); per rate mean ± std,
  and the mean over the rates (LNLN's summary numbers) with its std over seeds.

Masking is Composer's temporal mask (:func:`composer.train.views.temporal_mask`): each valid
step of each sequence or token modality is dropped with probability ``r`` (features zeroed,
tokens replaced by ``[UNK]``, special tokens kept). Every model's run folder is kept under the
output folder (``seed_<s>`` or ``seed_<s>/rate_<r>``), a *cell*. A cell is done only for its
exact configuration: ``cell.json`` records its key, a SHA-256 over the resolved blueprint (every
``--set``, the rate's view settings, epochs and seed applied), the data's SHA-256, the epochs and
the seed. A finished cell with the same key is reused and an interrupted one resumed, so an
interrupted protocol continues where it stopped; a cell with another key (more ``--epochs``, an
edited blueprint, other data) or with no key is refused, naming what differs, unless
``overwrite`` (``--overwrite``), which deletes that cell's run and trains it again: a model is
never reported under settings it was not trained with. Without ``data``, a protocol rerun into
the same folder uses the data the folder recorded (``<out>/data.json``). The whole output folder
is locked while the protocol runs (:class:`~composer.train.lock.RunLock`). The results go to
``<out>/<protocol>-<data>-<sha8>.json``, ``.csv`` and ``.md`` (``-2``, ``-3`` ... added rather
than overwriting earlier results) with the data's record, the versions and the seeds.
"""

from __future__ import annotations

import csv
import io
import math
import platform
import statistics
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from composer.errors import ComposerError
from composer.metric_names import in_percent
from composer.metrics import auilc

__all__ = ["ProtocolResult", "run_protocol", "cell_key", "PROTOCOL_RATES", "PAPER_COLUMNS", "LNLN_SEEDS", "CELL_RECORD"]

#: A protocol cell's record of its configuration.
CELL_RECORD = "cell.json"

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
    written: list[Path] = field(default_factory=list)  # the result files: .json, .csv, .md

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


_percent = in_percent  # one convention for every printed table (composer.metric_names)


def _digits(metric: str) -> int:
    return 1 if _percent(metric) else 3


def _versions() -> dict[str, str]:
    import numpy
    import torch

    import composer

    return {"composer": composer.__version__, "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def cell_key(resolved_text: str, data_sha256: str, epochs: int, seed: int) -> dict[str, Any]:
    """A cell's configuration and its key: ``{"key", "blueprint_sha256", "data_sha256", "epochs", "seed"}``.

    ``resolved_text``: the cell's blueprint as trained (:func:`~composer.blueprint.load.dump_blueprint`
    after every override); ``key`` is the SHA-256 over the other four."""
    parts = {"blueprint_sha256": hashlib.sha256(resolved_text.encode("utf-8")).hexdigest(), "data_sha256": data_sha256,
             "epochs": int(epochs), "seed": int(seed)}
    return {"key": hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest(), **parts}


def _read_cell(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((run_dir / CELL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("key"), str) else None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two cell keys, in words."""
    said = []
    if old.get("epochs") != new["epochs"]:
        said.append(f"{old.get('epochs')} epochs (now {new['epochs']})")
    if old.get("seed") != new["seed"]:
        said.append(f"seed {old.get('seed')} (now {new['seed']})")
    if old.get("data_sha256") != new["data_sha256"]:
        said.append(f"other data (SHA-256 {str(old.get('data_sha256'))[:12]}, now {new['data_sha256'][:12]})")
    if old.get("blueprint_sha256") != new["blueprint_sha256"]:
        said.append("another blueprint (its resolved text differs: a --set, an edit, another rate)")
    return ", ".join(said) or "another configuration"


def _cell_state(run_dir: Path, key: dict[str, Any]) -> tuple[str, str]:
    """``("new" | "reuse" | "resume" | "conflict", why)`` for a cell folder and the key it should have."""
    from composer.train.trainer import run_files

    present = run_files(run_dir) if run_dir.is_dir() else []
    if not present:
        return "new", ""
    recorded = _read_cell(run_dir)
    if recorded is None:
        return "conflict", f"{run_dir} holds a run ({', '.join(present)}) with no record of its configuration ({CELL_RECORD})"
    if recorded["key"] != key["key"]:
        return "conflict", f"{run_dir} was trained with {_differences(recorded, key)}"
    if recorded.get("status") == "done" and {"summary.json", "best.safetensors"} <= set(present):
        return "reuse", ""
    return ("resume", "") if "last.ckpt" in present else ("new", "")


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
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> ProtocolResult:
    """Run ``protocol`` (``standard``, ``per_rate`` or ``lnln``) for a blueprint; see the module docstring.

    ``blueprint``: a path, text, dict or loaded blueprint; ``data``: as for :func:`composer.train`
    (default: the data ``out`` recorded, else ``training.data``);
    ``seeds`` default to the ``seeds:`` of the blueprint's first ``reported:`` entry for the
    protocol (the one the table prints), else ``training.seed`` (standard, per_rate) or LNLN's three;
    ``rates`` to those of the blueprint's ``reported:`` entry for the protocol, else the protocol's;
    ``overwrite`` retrains cells trained with another configuration instead of refusing. Returns
    the result and writes ``<out>/<protocol>-<data>-<sha8>.{json,csv,md}``."""
    from composer.train.lock import RunLock
    from composer.train.trainer import as_blueprint

    if protocol not in PROTOCOL_RATES:
        raise ComposerError(f"unknown protocol '{protocol}' (standard, per_rate, lnln)")
    bp = as_blueprint(blueprint)
    entry = next((r for r in bp.reported if r.protocol == protocol), None)  # the entry the table prints
    seeds = list(seeds) if seeds else (entry.seeds if entry and entry.seeds else LNLN_SEEDS if protocol == "lnln" else [bp.training.seed])
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
    command = f"composer {'reproduce' if protocol == 'standard' else 'robustness'} --protocol {protocol} ({bp.name})"
    with RunLock(out, command, log=log):
        return _run_locked(bp, protocol, data, out, seeds, rates, epochs, device, progress, overwrite, log)


def _run_locked(bp, protocol, data, out: Path, seeds, rates, epochs, device, progress, overwrite, log) -> ProtocolResult:
    """:func:`run_protocol` once its arguments are checked and ``out`` is locked."""
    from composer.blueprint.load import dump_blueprint
    from composer.blueprint.weights import load_model
    from composer.graph.model import ComposedModel
    from composer.train.evaluation import run_data, unused_name, data_label
    from composer.train.lock import RunLock
    from composer.train.optim import Precision, select_device
    from composer.train.runlog import DATA_RECORD, describe_data, write_json
    from composer.train.trainer import as_blueprint, evaluate_split, remove_run_files, train
    from composer.train.views import masked_modalities, split_uniforms, temporal_mask

    splits, record = run_data(bp, out, data, say=log)
    log(f"data: {describe_data(record)}")
    dev = select_device(device)
    precision = Precision(bp.training.precision, dev)
    view = next(iter(bp.training.views.values()), None)
    tokens = {"unk_token": view.unk_token, "special_tokens": view.special_tokens} if view is not None else {}
    result = ProtocolResult(protocol, bp.name, rates, seeds, reported=[r.model_dump() for r in bp.reported])
    result.provenance = {"data_source": record["source"], "data_sha256": record["sha256"], "data_sizes": record["sizes"], "data": record,
                         "versions": _versions(), "epochs": epochs or bp.training.epochs, "device": str(dev)}

    def masked(batch: dict, gen, rate: float) -> dict:
        """The test batch masked at ``rate``: with the view's fixed draws under ``resample: split``
        (EMT-DLFR masks the test split with the training seeds), else from the seeded generator."""
        if view is not None and view.resample == "split":
            chosen = masked_modalities(bp, view)
            return temporal_mask(batch, bp, rate, gen, modalities=chosen, uniforms=split_uniforms(batch, bp, view, chosen), **tokens)
        return temporal_mask(batch, bp, rate, gen, **tokens)

    def plan_cell(seed: int, rate: float | None) -> dict[str, Any]:
        """The cell's folder, resolved blueprint, key and state (checked before anything trains)."""
        run_dir = out / f"seed_{seed}" / (f"rate_{rate:.2f}" if rate is not None else "")
        overrides = [f"training.seed={int(seed)}"] + ([f"training.epochs={int(epochs)}"] if epochs is not None else [])
        if rate is not None:
            for name in bp.training.views:
                overrides += [f"training.views.{name}.rate={rate}", f"training.views.{name}.rate_range=null"]
        cell_bp = as_blueprint(bp, overrides)
        key = cell_key(dump_blueprint(cell_bp), record["sha256"], cell_bp.training.epochs, seed)
        state, why = _cell_state(run_dir, key)
        return {"run_dir": run_dir, "bp": cell_bp, "key": key, "state": state, "why": why}

    def trained(cell: dict[str, Any]) -> ComposedModel:
        run_dir, state = cell["run_dir"], cell["state"]
        if state == "reuse":
            log(f"reusing the finished run {run_dir}")
            return load_model(run_dir / "best.safetensors", map_location=dev)
        with RunLock(run_dir, f"composer train ({cell['bp'].name}, protocol {protocol})", log=log):
            if state in ("new", "conflict"):
                gone = remove_run_files(run_dir)
                if state == "conflict":
                    log(f"{cell['why']}; --overwrite: deleted its run ({', '.join(gone)}) to train it again")
            write_json(run_dir / CELL_RECORD, {**cell["key"], "status": "training"})
            done = train(cell["bp"], splits, run_dir, resume=state == "resume", device=device, progress=progress)
            write_json(run_dir / CELL_RECORD, {**cell["key"], "status": "done"})
        return done.model

    cells = {(seed, rate): plan_cell(seed, rate) for seed in seeds for rate in (rates if protocol == "per_rate" else [None])}
    conflicts = [c["why"] for c in cells.values() if c["state"] == "conflict"]
    if conflicts and not overwrite:
        raise ComposerError(
            "; ".join(conflicts) + ". A cell's models are reported only under the settings they were trained with: "
            "write to a new --out folder, or give --overwrite to train these cells again (their runs are deleted)"
        )
    write_json(out / DATA_RECORD, record)
    for seed in seeds:
        shared = None if protocol == "per_rate" else (trained(cells[(seed, None)]), cells[(seed, None)])
        for rate in rates:
            cell = shared[1] if shared is not None else cells[(seed, rate)]
            model = shared[0] if shared is not None else trained(cell)
            mask = None if rate == 0.0 else (lambda batch, gen, rate=rate: masked(batch, gen, rate))
            # the transform is the masking at this rate: score the model's predictions on it (main), never a view of it
            metrics = evaluate_split(model, splits["test"], bp.training.batch_size, dev, precision, seed=seed, transform=mask, view="main")
            result.runs.append({"seed": seed, "rate": rate, "run_dir": str(cell["run_dir"]), "cell": cell["key"]["key"], "metrics": metrics})
            log(f"seed {seed}, rate {rate:.2f}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in dict(PAPER_COLUMNS + CLASSIFICATION_COLUMNS)))
    result.summarise()
    name = unused_name(out, f"{protocol}-{data_label(record)}", (".json", ".csv", ".md"))
    result.written = [out / f"{name}{suffix}" for suffix in (".json", ".csv", ".md")]
    write_json(result.written[0], result.to_dict())
    result.written[1].write_text(result.csv(), encoding="utf-8")
    result.written[2].write_text(result.markdown(), encoding="utf-8")
    return result
