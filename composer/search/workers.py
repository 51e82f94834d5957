"""Worker processes and counting: how many trials a study holds towards its total, which are
surplus or retried, and the loop each worker runs (one ``study.optimize(n_trials=1)`` at a time).

``--workers N`` and ``--devices`` start worker processes (spawned) that share one study; each
ends itself when its parent dies. Counting rules are in :func:`tally`.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import optuna

from composer.blueprint.load import validate_data
from composer.errors import ComposerError
from composer.search.objective import Objective, make_pruner, read_raw
from composer.search.sampler import make_sampler
from composer.search.storage import make_storage, open_study

__all__ = ["tally", "trial_note", "worker_placement", "run_workers", "optimize", "requeue_interrupted", "FINISHED", "RETRY_OF"]

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


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

def requeue_interrupted(study: optuna.Study) -> int:
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

def optimize(args: dict) -> None:
    """Run trials until the study counts ``trials`` of them (one worker process).

    Each trial is one ``study.optimize(n_trials=1)`` call; between them the worker looks at the
    study: done when the total is counted, waiting (one heartbeat) while the only missing
    trials are running elsewhere (a dead worker's trial is failed and queued again once its
    heartbeat lapses)."""
    import time

    if args.get("parent") is not None:
        _exit_with_parent(args["parent"])
    storage = make_storage(args["storage"], Path(args["out_dir"]), args["heartbeat"])
    where = args["storage"] or str(Path(args["out_dir"]) / "study.db")
    probe = open_study(args["study_name"], storage, where)
    # seeded by the study's history too, so a resumed search (or a raised --trials) draws new configurations
    seed = (args["seed"] + 7919 * len(probe.trials)) % (2**32)
    study = open_study(args["study_name"], storage, where, sampler=make_sampler(args["sampler"], args["space"], seed), pruner=make_pruner(args["pruner"]))
    raw, smap = read_raw(args["blueprint"], args["overrides"])
    base = validate_data(raw, smap)
    from composer.data.load import load_data

    data = load_data(base, args["data"])
    total = args["trials"]
    objective = Objective(raw, smap, base, data, Path(args["out_dir"]), args["epochs"], args["device"], total)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's reason is in its note and the trials table
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

    from composer.registry import allow_plugins

    os.environ.update(env)
    allow_plugins(args.get("allow_plugins", False))  # a spawned process starts with the default policy
    optimize(args)

def run_workers(args: dict, placement: list[dict[str, Any]]) -> None:
    """Start one process per placement entry on one study; stop them all if this process is interrupted.

    A worker that dies is reported; its running trial is retried by the others (heartbeat),
    so the search still ends at its total."""
    import os
    import sys

    from composer.registry import plugins_allowed

    ctx = multiprocessing.get_context("spawn")
    args = {**args, "allow_plugins": plugins_allowed()}  # --allow-plugins reaches every worker
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
