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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from composer.blueprint._yaml import SourceMap, read_yaml
from composer.blueprint.load import apply_override, dump_blueprint, make_lookup, read_blueprint_text, resolve_path, set_path, split_path, validate_data, variable_values
from composer.errors import BlueprintError, ComposerError
from composer.blueprint.expr import REFERENCE, ExprError, evaluate, names_in
from composer.search.space import SpaceError, grid, is_plain, suggest

__all__ = ["SearchResult", "search", "rerun_best", "worker_placement", "model_figures", "make_storage", "blueprint_for_params", "decode_params", "tally", "trial_note"]

# heartbeats, stale-trial retries and fail_stale_trials are marked experimental by Optuna
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=__name__)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclass
class SearchResult:
    """What :func:`search` returns."""

    study: optuna.Study
    space: dict
    out_dir: Path
    best_blueprint: Path | None
    best_value: float | None
    pareto: list[Path] = field(default_factory=list)  # one blueprint per Pareto-optimal trial (several objectives)


def _read_raw(blueprint: str | Path, overrides: list[str]) -> tuple[dict, SourceMap]:
    path = Path(blueprint)
    data, smap = read_yaml(read_blueprint_text(path), str(path))
    for item in overrides:
        apply_override(data, item)
    return data, smap


def make_storage(storage: str | None, out_dir: Path, heartbeat: int | None = None):
    """An Optuna storage from a URL, ``journal:PATH``, or None (SQLite in ``out_dir``).

    SQL storages (the default SQLite file, PostgreSQL, any SQLAlchemy URL) get Optuna's
    heartbeat when ``heartbeat`` seconds are given: a worker that dies (even by SIGKILL) stops
    beating, after ``3 × heartbeat`` seconds its trial is marked failed and
    :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues it once more for any worker.
    """
    if storage is not None and storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    if storage is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out_dir / 'study.db').resolve()}"
    storage = postgres_driver(storage)
    return _with_retries(lambda: optuna.storages.RDBStorage(
        storage,
        heartbeat_interval=heartbeat,
        grace_period=None if heartbeat is None else 3 * heartbeat,
        heartbeat_stale_trial_callback=None if heartbeat is None else optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
    ))


def _with_retries(make, attempts: int = 5):
    """Open an SQL storage, retrying when another worker is creating the same tables at the same
    moment (PostgreSQL reports the race as a duplicate type or table)."""
    import random
    import time

    for attempt in range(attempts):
        try:
            return make()
        except Exception as exc:  # sqlalchemy's IntegrityError / ProgrammingError on concurrent CREATE
            if attempt == attempts - 1 or "already exists" not in str(exc) and "duplicate" not in str(exc).lower():
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: psycopg2 (SQLAlchemy's default) or psycopg 3."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sampler(name: str, space: dict, seed: int):
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
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


class _Objective:
    def __init__(self, raw, smap, base_bp, data, out_dir: Path, epochs, device, total: int):
        self.raw, self.smap, self.base, self.total = raw, smap, base_bp, total
        self.data, self.out_dir, self.epochs, self.device = data, out_dir, epochs, device
        self.space = base_bp.search.space

    def __call__(self, trial: optuna.Trial):
        import os

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
            means, stds, per_seed = train_with_seeds(bp, self.data, run_dir, self.device, seeds, trained, report)
            measured.update(means)
            trial.set_user_attr("std", stds)
            trial.set_user_attr("per_seed", per_seed)
            trial.set_user_attr("seeds", seeds)
        measured.update(sizes)
        values = tuple(measured[o.label if not o.is_model_metric else o.metric] for o in objectives)
        return values[0] if len(values) == 1 else values


def model_figures(bp, names: list[str]) -> dict[str, float]:
    """Model-size figures of a validated blueprint, measured before any training: ``params``
    (from the size estimate, nothing allocated), ``macs`` per sample and ``train_step_ms``
    (one training step at the blueprint's batch size on CPU, from :mod:`composer.bench`)."""
    from composer.graph.size import check_size

    names = list(dict.fromkeys(names))
    out: dict[str, float] = {}
    if not names:
        return out
    estimate = check_size(bp._plan)
    if "params" in names:
        out["params"] = float(estimate.model_params)
    if "macs" in names or "train_step_ms" in names:
        from composer.bench import bench_model
        from composer.graph.model import ComposedModel

        result = bench_model(ComposedModel(bp, bp._plan, estimate), batch_size=bp.training.batch_size, warmup=1, repeats=3)
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


RETRY_OF = "retry_of"  # user attribute of a trial queued again for an interrupted one


def _retried(trials) -> set[int]:
    """Numbers of failed trials that were queued again (by us or by Optuna's retry callback)."""
    out = set()
    for t in trials:
        if RETRY_OF in t.user_attrs:
            out.add(int(t.user_attrs[RETRY_OF]))
        if "failed_trial" in t.system_attrs:
            out.add(int(t.system_attrs["failed_trial"]))
    return out


def _counts(t, retried: set[int]) -> bool:
    """A finished trial counts towards the total unless it failed and was queued again, or was surplus."""
    if t.user_attrs.get("surplus") or t.state not in FINISHED:
        return False
    return not (t.state == optuna.trial.TrialState.FAIL and t.number in retried)


def tally(study: optuna.Study) -> dict[str, int]:
    """Trials that count towards the total and those still open.

    ``counted``: complete, pruned (invalid configurations included) and failed trials, except
    failed trials that were queued again (their retry counts instead) and surplus trials (see
    :func:`_is_surplus`); ``running`` and ``waiting``: trials under way or queued.
    """
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return {
        "counted": sum(_counts(t, retried) for t in trials),
        "running": sum(t.state == optuna.trial.TrialState.RUNNING for t in trials),
        "waiting": sum(t.state == optuna.trial.TrialState.WAITING for t in trials),
    }


def _is_surplus(study: optuna.Study, number: int, total: int) -> bool:
    """True when the trials numbered below ``number`` already fill the total (counted or running).

    Two workers may each start a trial when one is missing; the later number yields, so the
    study ends with exactly ``total`` counted trials and no surplus trial is ever trained."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    retried = _retried(trials)
    running = sum(t.state == optuna.trial.TrialState.RUNNING and not t.user_attrs.get("surplus") for t in trials)
    return sum(_counts(t, retried) for t in trials) + running >= total


def trial_note(t, trials) -> str:
    """Why a trial ended as it did: invalid configuration, failure, interruption and retry, surplus."""
    if t.user_attrs.get("surplus"):
        return "surplus: the total was already filled"
    retries = [u.number for u in trials if u.user_attrs.get(RETRY_OF) == t.number or u.system_attrs.get("failed_trial") == t.number]
    if retries:
        return f"interrupted (worker stopped); queued again as trial {retries[0]}"
    return t.user_attrs.get("invalid") or t.user_attrs.get("note") or t.system_attrs.get("fail_reason", "")


def _requeue_interrupted(study: optuna.Study) -> int:
    """Fail the trials a killed single-worker search left RUNNING and queue each once more.

    Only for the search's own default storage with one worker, where nothing else can be
    running; shared storages rely on heartbeats instead. Public Optuna API only."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number, "note": f"queued again: trial {t.number} was interrupted"}, skip_if_exists=False)
        n += 1
    return n


def _exit_with_parent(parent: int) -> None:
    """A worker process ends itself when the search that started it dies (no orphans)."""
    import os
    import threading
    import time

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, name="composer-parent-watch", daemon=True).start()


def _optimize(args: dict) -> None:
    """Run trials until the study counts ``trials`` of them (one worker process).

    Each trial is one ``study.optimize(n_trials=1)`` call; between them the worker looks at the
    study: done when the total is counted, waiting (one heartbeat) while the only missing
    trials are running elsewhere (a dead worker's trial is failed and queued again once its
    heartbeat lapses)."""
    import time

    if args.get("parent") is not None:
        _exit_with_parent(args["parent"])
    storage = make_storage(args["storage"], Path(args["out_dir"]), args["heartbeat"])
    probe = optuna.load_study(study_name=args["study_name"], storage=storage)
    # seeded by the study's history too, so a resumed search (or a raised --trials) draws new configurations
    seed = (args["seed"] + 7919 * len(probe.trials)) % (2**32)
    study = optuna.load_study(study_name=args["study_name"], storage=storage, sampler=_sampler(args["sampler"], args["space"], seed), pruner=_pruner(args["pruner"]))
    raw, smap = _read_raw(args["blueprint"], args["overrides"])
    base = validate_data(raw, smap)
    from composer.data.load import load_data

    data = load_data(base, args["data"])
    total = args["trials"]
    objective = _Objective(raw, smap, base, data, Path(args["out_dir"]), args["epochs"], args["device"], total)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    deadline = None if args["timeout"] is None else time.monotonic() + args["timeout"]
    while deadline is None or time.monotonic() < deadline:
        if args["heartbeat"] is not None:
            optuna.storages.fail_stale_trials(study)
        now = tally(study)
        if now["counted"] >= total:
            break
        if now["counted"] + now["running"] >= total and not now["waiting"]:
            time.sleep(args["heartbeat"] or 1)  # the rest is running in other workers
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,))


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
    raw, smap = _read_raw(blueprint, overrides)
    base = validate_data(raw, smap)
    if base.search is None or not base.search.space:
        raise ComposerError(f"{blueprint}: the blueprint has no `search.space` to explore")
    cfg = base.search
    out_dir = Path(out) if out is not None else Path("runs") / base.name / "search"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = study_name or base.name
    total = trials or cfg.trials
    (out_dir / "search.json").write_text(json.dumps({  # how to find the study again (search-report, --rerun-best)
        "blueprint": str(Path(blueprint).resolve()), "overrides": overrides, "study": name, "storage": storage,
    }, indent=2), encoding="utf-8")
    heartbeat = None if storage is not None and storage.startswith("journal:") else cfg.heartbeat
    study = optuna.create_study(
        study_name=name,
        storage=make_storage(storage, out_dir, heartbeat),
        directions=[o.direction for o in cfg.objectives],
        sampler=_sampler(sampler or cfg.sampler, cfg.space, seed),
        pruner=_pruner(pruner or cfg.pruner),
        load_if_exists=True,
    )
    if workers == 1 and storage is None:
        _requeue_interrupted(study)
    args = {
        "blueprint": str(blueprint), "overrides": overrides, "study_name": name, "storage": storage,
        "out_dir": str(out_dir), "sampler": sampler or cfg.sampler, "pruner": pruner or cfg.pruner,
        "space": cfg.space, "seed": seed, "data": data, "epochs": epochs, "device": device,
        "trials": total, "timeout": timeout, "heartbeat": heartbeat, "parent": None,
    }
    placement = worker_placement(devices, trials_per_device) if devices else [{"device": device, "env": {}}] * workers
    if len(placement) > 1:
        _run_workers(args, placement)
    else:
        _optimize({**args, "device": placement[0]["device"]})
    study = optuna.load_study(study_name=name, storage=make_storage(storage, out_dir))
    return _write_outputs(study, raw, smap, cfg, out_dir)


def worker_placement(devices: list[str], per_device: int = 1) -> list[dict[str, Any]]:
    """One entry per worker process: the device it trains on and the environment it gets.

    ``cuda:N`` becomes ``CUDA_VISIBLE_DEVICES=N`` and device ``cuda`` inside the worker (so each
    process sees one GPU and several trials share it when ``per_device > 1``); ``cpu`` stays as is.
    """
    if per_device < 1:
        raise ComposerError(f"--trials-per-device must be at least 1, got {per_device}")
    out = []
    for name in devices:
        name = name.strip()
        if name == "cpu":
            entry = {"device": "cpu", "env": {}}
        elif name.startswith("cuda:") and name[5:].isdigit():
            entry = {"device": "cuda", "env": {"CUDA_VISIBLE_DEVICES": name[5:]}}
        else:
            raise ComposerError(f"--devices: '{name}' is not cpu or cuda:N")
        out += [entry] * per_device
    if not out:
        raise ComposerError("--devices names no device")
    return out


def _worker(args: dict, env: dict[str, str]) -> None:
    """A worker process: pin it to its device (before CUDA starts), then run trials."""
    import os

    os.environ.update(env)
    _optimize(args)


def _run_workers(args: dict, placement: list[dict[str, Any]]) -> None:
    """Start one process per placement entry on one study; stop them all if this process is interrupted.

    A worker that dies is reported; its running trial is retried by the others (heartbeat),
    so the search still ends at its total."""
    import os
    import sys

    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=({**args, "seed": args["seed"] + i, "parent": os.getpid(), "device": p["device"]}, p["env"]))
        for i, p in enumerate(placement)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    died = [p.exitcode for p in procs if p.exitcode]
    if died:
        print(f"warning: {len(died)} search worker(s) ended abnormally (exit codes {died}); their trials were retried", file=sys.stderr)


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

    raw, smap = _read_raw(blueprint, list(overrides))
    base = validate_data(raw, smap)
    cfg = base.search
    out_dir = Path(out) if out is not None else Path("runs") / base.name / "search"
    study = optuna.load_study(study_name=study_name or base.name, storage=make_storage(storage, out_dir))
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
                     "seeds": " ".join(map(str, fresh)), **{f"param:{p}": json.dumps(v) if not is_plain(v) else v for p, v in decode_params(cfg.space, t.params).items()}})
    key = f"mean_{trained[0].label}"
    rows.sort(key=lambda r: sign * r[key])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    fields = ["rank", *[f for f in dict.fromkeys(k2 for r in rows for k2 in r) if f != "rank"]]
    with (out_dir / "rerun.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    label = trained[0].label
    lines = [f"# {base.name}: the {len(rows)} best configurations, trained again with {seeds} new seeds", "",
             f"| rank | trial | search value | {label} mean ± std |", "|---|---|---|---|"]
    lines += [f"| {r['rank']} | {r['trial']} | {r['search_value']:.4f} | {r[key]:.4f} ± {r[f'std_{label}']:.4f} |" for r in rows]
    (out_dir / "rerun.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def _write_outputs(study: optuna.Study, raw, smap, cfg, out_dir: Path) -> SearchResult:
    objectives = cfg.objectives
    labels = [o.label for o in objectives]
    rows = []
    for t in study.trials:
        values = t.values or [None] * len(labels)
        rows.append({
            "number": t.number,
            "state": t.state.name,
            **({"value": values[0]} if len(labels) == 1 else {f"value:{l}": v for l, v in zip(labels, values)}),
            **{f"std:{k}": v for k, v in (t.user_attrs.get("std") or {}).items() if cfg.seeds > 1},
            **{f"param:{k}": v if is_plain(v) else json.dumps(v) for k, v in decode_params(cfg.space, t.params).items()},
            "reason": trial_note(t, study.trials),
            "run_dir": t.user_attrs.get("run_dir", ""),
        })
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with (out_dir / "trials.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_path, best_value, front = None, None, []
    if complete and len(objectives) == 1:
        best = study.best_trial
        bp = blueprint_for_params(raw, smap, cfg.space, best.params)
        best_path = out_dir / "best.yaml"
        best_path.write_text(dump_blueprint(bp), encoding="utf-8")
        best_value = best.value
        (out_dir / "best.json").write_text(json.dumps({"trial": best.number, "value": best.value, "params": best.params, "objective": objectives[0].model_dump()}, indent=2))
    elif complete:
        front = _write_pareto(study, raw, smap, cfg, out_dir)
    _plots(study, out_dir, labels)
    return SearchResult(study, cfg.space, out_dir, best_path, best_value, front)


def _write_pareto(study: optuna.Study, raw, smap, cfg, out_dir: Path) -> list[Path]:
    """``pareto/``: one blueprint per Pareto-optimal trial (validates and trains as is) and a table."""
    folder = out_dir / "pareto"
    if folder.exists():
        for old in folder.glob("trial_*.yaml"):
            old.unlink()
    folder.mkdir(exist_ok=True)
    labels = [o.label for o in cfg.objectives]
    written, rows = [], []
    for t in sorted(study.best_trials, key=lambda t: t.values[0]):
        path = folder / f"trial_{t.number:04d}.yaml"
        path.write_text(dump_blueprint(blueprint_for_params(raw, smap, cfg.space, t.params)), encoding="utf-8")
        written.append(path)
        rows.append({"trial": t.number, **dict(zip(labels, t.values)), **{f"param:{k}": json.dumps(v) if not is_plain(v) else v for k, v in decode_params(cfg.space, t.params).items()}, "blueprint": path.name})
    with (folder / "pareto.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "pareto.json").write_text(json.dumps({"objectives": [o.model_dump() for o in cfg.objectives], "front": rows}, indent=2, default=str))
    return written


def _plots(study: optuna.Study, out_dir: Path, labels: list[str]) -> list[Path]:
    """History and parameter-importance plots (for the first objective) and, with several
    objectives, the Pareto front (PNG), when matplotlib is installed."""
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
    multi = len(labels) > 1
    first = dict(target=lambda t: t.values[0], target_name=labels[0]) if multi else {}
    if complete:
        ax = ovm.plot_optimization_history(study, **first)
        ax.figure.savefig(out_dir / "history.png", dpi=120, bbox_inches="tight")
        written.append(out_dir / "history.png")
    varied = {k for t in complete for k in t.params}
    if len(complete) >= 2 and varied:
        try:
            ax = ovm.plot_param_importances(study, **first)
            ax.figure.savefig(out_dir / "importance.png", dpi=120, bbox_inches="tight")
            written.append(out_dir / "importance.png")
        except (RuntimeError, ValueError):
            pass  # importance is undefined when every complete trial has the same parameters
    if multi and complete and len(labels) in (2, 3):
        ax = ovm.plot_pareto_front(study, target_names=labels)
        ax.figure.savefig(out_dir / "pareto.png", dpi=120, bbox_inches="tight")
        written.append(out_dir / "pareto.png")
    import matplotlib.pyplot as plt

    plt.close("all")
    return written
