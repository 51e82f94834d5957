"""What one trial does: sample the space, apply it to the raw blueprint, validate again, check
constraints and size limits, then train (once per seed) and return the objective values.

An invalid configuration is a *pruned* trial whose reason is the user attribute ``invalid``;
size figures (``params``, ``macs``, ``train_step_ms``) are measured before any training.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna

from composer.blueprint._yaml import SourceMap, read_yaml
from composer.blueprint.expr import REFERENCE, ExprError, evaluate, names_in
from composer.blueprint.load import apply_override, make_lookup, read_blueprint_text, resolve_path, set_path, split_path, validate_data, variable_values
from composer.errors import BlueprintError, ComposerError
from composer.search.sampler import make_sampler
from composer.search.space import SpaceError, is_plain, suggest

__all__ = ["read_raw", "make_sampler", "make_pruner", "decode_params", "apply_sample", "broken_constraints", "blueprint_for_params",
           "Objective", "model_figures", "with_training", "train_with_seeds"]


def read_raw(blueprint: str | Path, overrides: list[str]) -> tuple[dict, SourceMap]:
    path = Path(blueprint)
    data, smap = read_yaml(read_blueprint_text(path), str(path))
    for item in overrides:
        apply_override(data, item)
    return data, smap

def make_pruner(name: str):
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

def apply_sample(raw: dict, sample: dict[str, Any]) -> dict:
    """A copy of the raw blueprint with sampled values set at their paths (``losses.<name>`` too)."""
    data = copy.deepcopy(raw)
    for path, value in sample.items():
        set_path(data, resolve_path(data, split_path(path)), value)
    return data

def _expression_bound(raw: dict):
    """Resolve a search-range bound such as ``"${vars.experts}"`` against the values sampled so far."""

    def bound(text: str, sample: dict[str, Any]) -> float:
        data = apply_sample(raw, sample)
        values, problems = variable_values(data)
        if problems:
            raise SpaceError("; ".join(p.message for p in problems))
        try:
            value = evaluate(REFERENCE.fullmatch(text.strip()).group(1), make_lookup(values, data))
        except ExprError as exc:
            raise SpaceError(f"bound {text!r}: {exc}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"bound {text!r} is {value!r}, not a number")
        return value

    return bound

def broken_constraints(data: dict, constraints: list[str]) -> list[str]:
    """The ``search.constraints`` a sampled blueprint breaks, each with the values it read."""
    values, _ = variable_values(data)
    lookup = make_lookup(values, data)
    broken = []
    for text in constraints:
        try:
            ok = evaluate(text, lookup)
            read = ", ".join(f"{n}={lookup(n)!r}" for n in dict.fromkeys(names_in(text)))
        except ExprError as exc:
            broken.append(f"constraint '{text}' cannot be evaluated: {exc}")
            continue
        if not ok:
            broken.append(f"constraint '{text}' is false ({read})")
    return broken

def blueprint_for_params(raw: dict, smap: SourceMap, space: dict, params: dict[str, Any]):
    """The validated blueprint for one set of sampled values (raises BlueprintError)."""
    return validate_data(apply_sample(raw, decode_params(space, params)), smap)

class Objective:
    """The function Optuna calls for each trial (see the module docstring)."""

    def __init__(self, raw, smap, base_bp, data, out_dir: Path, epochs, device, total: int):
        self.raw, self.smap, self.base, self.total = raw, smap, base_bp, total
        self.data, self.out_dir, self.epochs, self.device = data, out_dir, epochs, device
        self.space = base_bp.search.space

    def __call__(self, trial: optuna.Trial):
        import os

        from composer.search.workers import _is_surplus
        from composer.train.tracking import search_trial

        if _is_surplus(trial.study, trial.number, self.total):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("surplus: another worker's trials already fill the total")
        trial.set_user_attr("worker_pid", os.getpid())
        try:
            sample = suggest(trial, self.space, _expression_bound(self.raw))
        except SpaceError as exc:
            trial.set_user_attr("invalid", str(exc))
            raise optuna.TrialPruned(f"invalid configuration: {exc}") from None
        data = apply_sample(self.raw, sample)
        broken = broken_constraints(data, self.base.search.constraints)
        if broken:
            trial.set_user_attr("invalid", "; ".join(broken))
            raise optuna.TrialPruned(f"invalid configuration: {'; '.join(broken)}")
        objectives = self.base.search.objectives
        trained = [o for o in objectives if not o.is_model_metric]
        if trained and trained[0].split == "valid":  # the best epoch is the one the (first) objective prefers
            set_path(data, ["training", "monitor"], {"metric": trained[0].metric, "direction": trained[0].direction})
        epochs = self.epochs or (self.base.search.epochs if self.base.search.epochs else None)
        if epochs:
            set_path(data, ["training", "epochs"], int(epochs))
        try:
            bp = validate_data(data, self.smap)
            sizes = model_figures(bp, [o.metric for o in objectives if o.is_model_metric] + list(self.base.search.limits))
        except BlueprintError as exc:
            reason = "; ".join(str(p) for p in exc.problems if p.severity == "error")
            trial.set_user_attr("invalid", reason)
            raise optuna.TrialPruned(f"invalid configuration: {reason}") from None
        for name, value in sizes.items():
            trial.set_user_attr(name, value)
        over = [f"{name} {sizes[name]:,.6g} > limit {limit:,.6g}" for name, limit in self.base.search.limits.items() if sizes[name] > limit]
        if over:
            trial.set_user_attr("invalid", "too large: " + "; ".join(over))
            raise optuna.TrialPruned("too large: " + "; ".join(over))

        single = len(objectives) == 1 and bool(trained)

        def report(epoch: int, rows: dict[str, dict]) -> None:
            if not single:  # Optuna prunes single-objective studies only
                return
            trial.report(float(rows[trained[0].split][trained[0].metric]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        run_dir = self.out_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        measured: dict[str, float] = {}
        if trained:
            seeds = [bp.training.seed + i for i in range(self.base.search.seeds)]
            try:
                with search_trial(trial.study.study_name, trial.number):  # every run records (and tags) its study and trial
                    means, stds, per_seed = train_with_seeds(bp, self.data, run_dir, self.device, seeds, trained, report)
            except ComposerError as exc:  # a user-facing failure (a full disk, a NaN loss): recorded, no traceback
                trial.set_user_attr("note", f"failed: {exc}")
                return _failed(len(objectives))
            measured.update(means)
            trial.set_user_attr("std", stds)
            trial.set_user_attr("per_seed", per_seed)
            trial.set_user_attr("seeds", seeds)
        measured.update(sizes)
        values = tuple(measured[o.label if not o.is_model_metric else o.metric] for o in objectives)
        return values[0] if len(values) == 1 else values

def _failed(n: int):
    """What a trial returns to be recorded as failed without a traceback: NaN per objective
    (Optuna marks a trial FAIL when a value is NaN); the reason is its user attribute ``note``."""
    return float("nan") if n == 1 else tuple(float("nan") for _ in range(n))


def model_figures(bp, names: list[str]) -> dict[str, float]:
    """Model-size figures of a validated blueprint, measured before any training: ``params``
    (from the size estimate, nothing allocated), ``macs`` per sample and ``train_step_ms``
    (one training step at the blueprint's batch size on CPU, from :mod:`composer.bench`)."""
    names = list(dict.fromkeys(names))
    out: dict[str, float] = {}
    if not names:
        return out
    estimate = bp.size  # made by the check
    if "params" in names:
        out["params"] = float(estimate.model_params)
    if "macs" in names or "train_step_ms" in names:
        from composer.bench import bench_model
        from composer.graph.model import ComposedModel

        result = bench_model(ComposedModel(bp), batch_size=bp.training.batch_size, warmup=1, repeats=3)
        if "macs" in names:
            out["macs"] = float(result.macs)
        if "train_step_ms" in names:
            out["train_step_ms"] = float(result.train_step_ms)
    return out

def with_training(bp, **fields):
    """The validated blueprint with some ``training`` fields replaced (seed, epochs, ...)."""
    data = bp.source_data()
    data.setdefault("training", {}).update(fields)
    return validate_data(data)

def train_with_seeds(bp, data, run_dir: Path, device, seeds: list[int], objectives, report=None):
    """Train one configuration once per seed (into ``run_dir`` or ``run_dir/seed_<s>``); returns the
    mean and std of each objective over the seeds and the per-seed values. ``report`` sees the
    first seed's epochs (a pruner judges on it)."""
    import statistics

    from composer.train.trainer import Trainer

    per_seed: list[dict[str, float]] = []
    for i, seed in enumerate(seeds):
        seeded = bp if seed == bp.training.seed else with_training(bp, seed=seed)
        where = run_dir if len(seeds) == 1 else run_dir / f"seed_{seed}"
        result = Trainer(seeded, data, where, device=device, progress=False, on_epoch_end=report if i == 0 else None, overwrite=True).fit()
        row = {}
        for o in objectives:
            value = result.summary["best"].get(o.split, {}).get(o.metric)
            if value is None:
                raise ComposerError(f"metric '{o.metric}' on split '{o.split}' was not measured")
            row[o.label] = float(value)
        per_seed.append(row)
    means = {k: statistics.fmean(r[k] for r in per_seed) for k in per_seed[0]}
    stds = {k: statistics.pstdev([r[k] for r in per_seed]) if len(per_seed) > 1 else 0.0 for k in per_seed[0]}
    return means, stds, per_seed
