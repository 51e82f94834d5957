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
"""

from __future__ import annotations

import copy
import csv
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from composer.blueprint._yaml import SourceMap, read_yaml
from composer.blueprint.load import apply_override, read_blueprint_text, dump_blueprint, set_path, split_path, validate_data
from composer.errors import BlueprintError, ComposerError
from composer.search.space import grid, is_plain, suggest

__all__ = ["SearchResult", "search", "make_storage", "blueprint_for_params", "decode_params"]

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclass
class SearchResult:
    """What :func:`search` returns."""

    study: optuna.Study
    space: dict
    out_dir: Path
    best_blueprint: Path | None
    best_value: float | None


def _read_raw(blueprint: str | Path, overrides: list[str]) -> tuple[dict, SourceMap]:
    path = Path(blueprint)
    data, smap = read_yaml(read_blueprint_text(path), str(path))
    for item in overrides:
        apply_override(data, item)
    return data, smap


def make_storage(storage: str | None, out_dir: Path):
    """An Optuna storage from a URL, ``journal:PATH``, or None (SQLite in ``out_dir``)."""
    if storage is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(out_dir / 'study.db').resolve()}"
    if storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    return storage


def _sampler(name: str, space: dict, seed: int):
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(name: str):
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if name == "median" else optuna.pruners.NopPruner()


def decode_params(space: dict, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored parameters -> blueprint values (non-scalar choices are stored as indices)."""
    out = {}
    for path, value in params.items():
        entry = space.get(path)
        if entry is not None and entry.choice is not None and not all(is_plain(v) for v in entry.choice):
            value = entry.choice[value]
        out[path] = value
    return out


def blueprint_for_params(raw: dict, smap: SourceMap, space: dict, params: dict[str, Any]):
    """The validated blueprint for one set of sampled values (raises BlueprintError)."""
    data = copy.deepcopy(raw)
    for path, value in decode_params(space, params).items():
        set_path(data, split_path(path), value)
    return validate_data(data, smap)


class _Objective:
    def __init__(self, raw, smap, base_bp, data, out_dir: Path, epochs, device):
        self.raw, self.smap, self.base = raw, smap, base_bp
        self.data, self.out_dir, self.epochs, self.device = data, out_dir, epochs, device
        self.space = base_bp.search.space
        self.objective = base_bp.search.objective

    def __call__(self, trial: optuna.Trial) -> float:
        from composer.train.trainer import Trainer

        sample = suggest(trial, self.space)
        data = copy.deepcopy(self.raw)
        for path, value in sample.items():
            set_path(data, split_path(path), value)
        obj = self.objective
        if obj.split == "valid":
            set_path(data, ["training", "monitor"], {"metric": obj.metric, "direction": obj.direction})
        epochs = self.epochs or (self.base.search.epochs if self.base.search.epochs else None)
        if epochs:
            set_path(data, ["training", "epochs"], int(epochs))
        try:
            bp = validate_data(data, self.smap)
        except BlueprintError as exc:
            reason = "; ".join(str(p) for p in exc.problems if p.severity == "error")
            trial.set_user_attr("invalid", reason)
            raise optuna.TrialPruned(f"invalid configuration: {reason}") from None

        def report(epoch: int, rows: dict[str, dict]) -> None:
            trial.report(float(rows[obj.split][obj.metric]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        run_dir = self.out_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        result = Trainer(bp, self.data, run_dir, device=self.device, progress=False, on_epoch_end=report, overwrite=True).fit()
        value = result.summary["best"].get(obj.split, {}).get(obj.metric)
        if value is None:
            raise ComposerError(f"metric '{obj.metric}' on split '{obj.split}' was not measured")
        return float(value)


def _requeue_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed single-worker search as failed and queue them again."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_system_attr(t._trial_id, "fail_reason", "interrupted; queued again")
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        n += 1
    return n


def _optimize(args: dict) -> None:
    """Run trials until the study holds ``trials`` finished ones (one worker process)."""
    study = optuna.load_study(study_name=args["study_name"], storage=make_storage(args["storage"], Path(args["out_dir"])), sampler=_sampler(args["sampler"], args["space"], args["seed"]), pruner=_pruner(args["pruner"]))
    raw, smap = _read_raw(args["blueprint"], args["overrides"])
    base = validate_data(raw, smap)
    from composer.data.load import load_data

    data = load_data(base, args["data"])
    objective = _Objective(raw, smap, base, data, Path(args["out_dir"]), args["epochs"], args["device"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        objective,
        n_trials=args["trials"],
        timeout=args["timeout"],
        catch=(Exception,),
        callbacks=[optuna.study.MaxTrialsCallback(args["trials"], states=FINISHED)],
    )


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
) -> SearchResult:
    """Run (or resume) the search a blueprint declares; returns the study and the best blueprint."""
    overrides = list(overrides)
    raw, smap = _read_raw(blueprint, overrides)
    base = validate_data(raw, smap)
    if base.search is None or not base.search.space:
        raise ComposerError(f"{blueprint}: the blueprint has no `search.space` to explore")
    cfg = base.search
    out_dir = Path(out) if out is not None else Path("runs") / base.name / "search"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = study_name or base.name
    total = trials or cfg.trials
    study = optuna.create_study(
        study_name=name,
        storage=make_storage(storage, out_dir),
        direction=cfg.objective.direction,
        sampler=_sampler(sampler or cfg.sampler, cfg.space, seed),
        pruner=_pruner(pruner or cfg.pruner),
        load_if_exists=True,
    )
    if workers == 1:
        _requeue_interrupted(study)
    args = {
        "blueprint": str(blueprint), "overrides": overrides, "study_name": name, "storage": storage,
        "out_dir": str(out_dir), "sampler": sampler or cfg.sampler, "pruner": pruner or cfg.pruner,
        "space": cfg.space, "seed": seed, "data": data, "epochs": epochs, "device": device,
        "trials": total, "timeout": timeout,
    }
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_optimize, args=({**args, "seed": seed + i},)) for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise ComposerError(f"{len(failed)} search worker(s) exited with errors (exit codes {failed}); see their output above")
    else:
        _optimize(args)
    study = optuna.load_study(study_name=name, storage=make_storage(storage, out_dir))
    return _write_outputs(study, raw, smap, cfg, out_dir)


def _write_outputs(study: optuna.Study, raw, smap, cfg, out_dir: Path) -> SearchResult:
    rows = []
    for t in study.trials:
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            **{f"param:{k}": v if is_plain(v) else json.dumps(v) for k, v in decode_params(cfg.space, t.params).items()},
            "reason": t.user_attrs.get("invalid") or t.system_attrs.get("fail_reason", ""),
            "run_dir": t.user_attrs.get("run_dir", ""),
        })
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with (out_dir / "trials.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_path, best_value = None, None
    if complete:
        best = study.best_trial
        bp = blueprint_for_params(raw, smap, cfg.space, best.params)
        best_path = out_dir / "best.yaml"
        best_path.write_text(dump_blueprint(bp), encoding="utf-8")
        best_value = best.value
        (out_dir / "best.json").write_text(json.dumps({"trial": best.number, "value": best.value, "params": best.params, "objective": cfg.objective.model_dump()}, indent=2))
    _plots(study, out_dir)
    return SearchResult(study, cfg.space, out_dir, best_path, best_value)


def _plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """History and parameter-importance plots (PNG) when matplotlib is installed."""
    import warnings

    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization import matplotlib as ovm
    except ImportError:
        return []
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    written = []
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        ax = ovm.plot_optimization_history(study)
        ax.figure.savefig(out_dir / "history.png", dpi=120, bbox_inches="tight")
        written.append(out_dir / "history.png")
    varied = {k for t in complete for k in t.params}
    if len(complete) >= 2 and varied:
        try:
            ax = ovm.plot_param_importances(study)
            ax.figure.savefig(out_dir / "importance.png", dpi=120, bbox_inches="tight")
            written.append(out_dir / "importance.png")
        except (RuntimeError, ValueError):
            pass  # importance is undefined when every complete trial has the same parameters
    return written
