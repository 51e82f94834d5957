"""Architecture search with Optuna over a blueprint's ``search.space``.

One study per blueprint. Each trial samples a value for every path of the space, applies them
to the raw blueprint and validates the result again: an invalid configuration becomes a
*pruned* trial with its reason recorded (user attribute ``invalid``), never a crash. A valid
one is trained with :class:`~composer.train.trainer.Trainer` into ``<out>/trial_<n>``; its
per-epoch validation value is reported to Optuna so the pruner can stop weak trials early.
A trial that raises is recorded as failed with its reason and the search goes on.

Storage defaults to an SQLite file in the search folder, so an interrupted search resumes
where it stopped (``--trials`` is the total the study should reach). A PostgreSQL URL, any
SQLAlchemy URL, or ``journal:PATH`` (Optuna's journal file) lets several worker processes —
on one machine or many — share one study.

The parts live by concern: :mod:`~composer.search.storage` (where the study lives),
:mod:`~composer.search.objective` (what a trial does), :mod:`~composer.search.workers`
(processes and counting), :mod:`~composer.search.outputs` (the files a search writes). This
module holds the two entry points, :func:`search` and :func:`rerun_best`, and re-exports the
names other code imports from it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from composer.blueprint.load import validate_data
from composer.errors import ComposerError
from composer.search.objective import (apply_sample, blueprint_for_params, broken_constraints, decode_params, make_pruner, model_figures,
                                       read_raw, train_with_seeds, with_training)
from composer.search.outputs import SEARCH_INFO, _params, no_trial_completed, write_outputs, write_rerun, write_text
from composer.search.sampler import make_sampler, record_sampler, sampler_record
from composer.search.storage import check_storage_url, describe_storage, make_storage, open_study, postgres_driver
from composer.search.workers import optimize, requeue_interrupted, run_workers, tally, trial_note, worker_placement

__all__ = ["SearchResult", "search", "rerun_best", "worker_placement", "model_figures", "make_storage", "blueprint_for_params", "decode_params",
           "tally", "trial_note", "apply_sample", "broken_constraints", "postgres_driver", "no_trial_completed", "SEARCH_INFO"]

# heartbeats, stale-trial retries and fail_stale_trials are marked experimental by Optuna
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="composer.search")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")


@dataclass
class SearchResult:
    """What :func:`search` returns."""

    study: optuna.Study
    space: dict
    out_dir: Path
    best_blueprint: Path | None
    best_value: float | None
    pareto: list[Path] = field(default_factory=list)  # one blueprint per Pareto-optimal trial (several objectives)

    @property
    def failure(self) -> str | None:
        """None when some trial completed, else why none did (the CLI exits non-zero with it)."""
        return no_trial_completed(self.study)



def search(
    blueprint: str | Path,
    *,
    overrides: list[str] | tuple = (),
    trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    workers: int = 1,
    out: str | Path | None = None,
    data: Any = None,
    epochs: int | None = None,
    device: str | None = None,
    seed: int = 0,
    timeout: float | None = None,
    devices: list[str] | None = None,
    trials_per_device: int = 1,
) -> SearchResult:
    """Run (or resume) the search a blueprint declares; returns the study and the best blueprint
    (or, with several objectives, the Pareto front).

    ``devices`` (``["cuda:0", "cuda:1"]``) with ``trials_per_device`` K starts K worker processes
    per device, each pinned to its device (``CUDA_VISIBLE_DEVICES``); see :func:`worker_placement`."""
    overrides = list(overrides)
    raw, smap = read_raw(blueprint, overrides)
    base = validate_data(raw, smap)
    if base.search is None or not base.search.space:
        raise ComposerError(f"{blueprint}: the blueprint has no `search.space` to explore")
    cfg = base.search
    out_dir = Path(out) if out is not None else Path("runs") / base.name / "search"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = study_name or base.name
    total = trials or cfg.trials
    if storage is not None:
        check_storage_url(storage)
    sampler = sampler or cfg.sampler
    record = sampler_record(sampler, seed)  # stated in full and kept in the study: see composer.search.sampler
    heartbeat = None if storage is not None and storage.startswith("journal:") else cfg.heartbeat
    study = optuna.create_study(
        study_name=name,
        storage=make_storage(storage, out_dir, heartbeat),
        directions=[o.direction for o in cfg.objectives],
        sampler=make_sampler(sampler, cfg.space, seed),
        pruner=make_pruner(pruner or cfg.pruner),
        load_if_exists=True,
    )
    record_sampler(study, record, describe_storage(storage, out_dir))
    write_text(out_dir / SEARCH_INFO, json.dumps({  # how to find the study again (search-report, --rerun-best)
        "blueprint": str(Path(blueprint).resolve()), "overrides": overrides, "study": name, "storage": storage,
        "sampler": record, "optuna": optuna.__version__,
    }, indent=2), kept="nothing yet: no trial has run")
    if workers == 1 and storage is None:
        requeue_interrupted(study)
    args = {
        "blueprint": str(blueprint), "overrides": overrides, "study_name": name, "storage": storage,
        "out_dir": str(out_dir), "sampler": sampler, "pruner": pruner or cfg.pruner,
        "space": cfg.space, "seed": seed, "data": data, "epochs": epochs, "device": device,
        "trials": total, "timeout": timeout, "heartbeat": heartbeat, "parent": None,
    }
    placement = worker_placement(devices, trials_per_device) if devices else [{"device": device, "env": {}}] * workers
    if len(placement) > 1:
        run_workers(args, placement)
    else:
        optimize({**args, "device": placement[0]["device"]})
    study = open_study(name, make_storage(storage, out_dir), describe_storage(storage, out_dir))
    best_path, best_value, front = write_outputs(study, raw, smap, cfg, out_dir)
    return SearchResult(study, cfg.space, out_dir, best_path, best_value, front)


def rerun_best(
    blueprint: str | Path,
    k: int,
    *,
    seeds: int = 3,
    overrides: list[str] | tuple = (),
    study_name: str | None = None,
    storage: str | None = None,
    out: str | Path | None = None,
    data: Any = None,
    epochs: int | None = None,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Train the K best configurations of a finished study again with ``seeds`` new seeds and rank
    them by the mean of the (first) objective; writes ``rerun.csv`` and ``rerun.md``.

    With several objectives the K candidates are the Pareto-optimal trials best on the first."""
    from composer.data.load import load_data

    raw, smap = read_raw(blueprint, list(overrides))
    base = validate_data(raw, smap)
    cfg = base.search
    out_dir = Path(out) if out is not None else Path("runs") / base.name / "search"
    study = open_study(study_name or base.name, make_storage(storage, out_dir), describe_storage(storage, out_dir))
    first = cfg.objectives[0]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pool = study.best_trials if len(cfg.objectives) > 1 else complete
    sign = 1 if first.direction == "minimize" else -1
    unique: dict[str, Any] = {}
    for t in sorted(pool, key=lambda t: sign * t.values[0]):  # a configuration sampled twice is trained again once
        unique.setdefault(json.dumps(t.params, sort_keys=True), t)
    ranked = list(unique.values())[:k]
    if not ranked:
        raise ComposerError("no complete trial to train again; run the search first")
    trained = [o for o in cfg.objectives if not o.is_model_metric] or [first]
    loaded = load_data(base, data)
    rows = []
    for t in ranked:
        bp = blueprint_for_params(raw, smap, cfg.space, t.params)
        if epochs or cfg.epochs:
            bp = with_training(bp, epochs=int(epochs or cfg.epochs))
        fresh = [bp.training.seed + 1000 + i for i in range(seeds)]  # seeds the search did not use
        means, stds, _ = train_with_seeds(bp, loaded, out_dir / "rerun" / f"trial_{t.number:04d}", device, fresh, trained)
        label = trained[0].label
        rows.append({"trial": t.number, "search_value": t.values[0], f"mean_{label}": means[label], f"std_{label}": stds[label],
                     "seeds": " ".join(map(str, fresh)), **_params(cfg.space, t)})
    key = f"mean_{trained[0].label}"
    rows.sort(key=lambda r: sign * r[key])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    write_rerun(out_dir, base.name, rows, trained[0].label, seeds)
    return rows
