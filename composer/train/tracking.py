"""Experiment tracking: what every run records (``run.json``) and the trackers it reports to.

A run's record (:func:`run_record`) holds the resolved blueprint's text and its SHA-256 (the
SHA-256 of the run folder's ``blueprint.yaml``), the data record (as in ``data.json``), the
seed, the versions of Python, torch, Optuna and Composer, the git commit of the working
directory (when it is a git checkout) and, in a search, the study name and trial number.

A :class:`Tracker` receives that record when the run starts, the metric rows of every epoch
(``<split>/<metric>`` at step ``epoch``) and the run's end status. Two are built in, both
optional extras (``pip install 'fusion-composer[tracking]'``):

* :class:`TensorBoardTracker`: event files in ``<run>/tensorboard/``;
* :class:`MLflowTracker`: a run in an MLflow experiment at any tracking URI (``sqlite:///x.db``,
  ``file:./mlruns``, ``http://host:5000``), with the record as parameters and tags.

They are chosen by the blueprint's ``training.tracking`` and by :func:`options` (the command
line's ``--tensorboard`` and ``--mlflow URI``); :func:`trackers_for` merges the two. Only the
process of rank 0 records and tracks (:func:`is_rank_zero`).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import platform
import subprocess
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from composer.errors import ComposerError

__all__ = ["Tracker", "TensorBoardTracker", "MLflowTracker", "TrackingFlags", "options", "search_trial", "trackers_for", "run_record",
           "is_rank_zero", "versions", "git_commit", "metric_values", "RUN_RECORD", "TENSORBOARD_DIR", "EXTRA"]

#: The run folder's record of what the run was (:func:`run_record`).
RUN_RECORD = "run.json"
#: The folder of TensorBoard's event files inside a run folder.
TENSORBOARD_DIR = "tensorboard"
#: The optional extra that installs both trackers.
EXTRA = "pip install 'fusion-composer[tracking]'"
#: MLflow parameters are strings of at most this length (MLflow's own limit is 6000).
PARAM_LIMIT = 500


@dataclass(frozen=True)
class TrackingFlags:
    """Trackers asked for outside the blueprint (``composer train --tensorboard --mlflow URI``)."""

    tensorboard: bool = False
    mlflow: str | None = None


_FLAGS: contextvars.ContextVar[TrackingFlags] = contextvars.ContextVar("composer_tracking_flags", default=TrackingFlags())
_SEARCH: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("composer_search_trial", default=None)


@contextmanager
def options(tensorboard: bool = False, mlflow: str | None = None) -> Iterator[TrackingFlags]:
    """Runs trained inside track to TensorBoard and/or the MLflow URI ``mlflow`` as well as to
    what their blueprints' ``training.tracking`` asks for."""
    token = _FLAGS.set(TrackingFlags(bool(tensorboard), mlflow or None))
    try:
        yield _FLAGS.get()
    finally:
        _FLAGS.reset(token)


@contextmanager
def search_trial(study: str, trial: int) -> Iterator[None]:
    """Runs trained inside record (and tag) the search study ``study`` and its trial number ``trial``."""
    token = _SEARCH.set({"study": str(study), "trial": int(trial)})
    try:
        yield
    finally:
        _SEARCH.reset(token)


def is_rank_zero() -> bool:
    """True unless this process is a ``torch.distributed`` rank other than 0 (only rank 0 records)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


# -- what every run records ---------------------------------------------------------
def versions() -> dict[str, str]:
    """``{"composer", "python", "torch", "optuna"}`` versions of this process."""
    import optuna
    import torch

    from composer import __version__

    return {"composer": __version__, "python": platform.python_version(), "torch": torch.__version__, "optuna": optuna.__version__}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(cwd: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``cwd`` (default: the working
    directory); ``dirty``: tracked files differ from the commit. None outside a checkout or without git."""
    where = Path(cwd) if cwd is not None else Path.cwd()
    commit = _git(["rev-parse", "HEAD"], where)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def run_record(blueprint, data: dict[str, Any], run_dir: Path, search: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``run.json`` holds about a run of the checked ``blueprint`` on ``data`` (a data
    record, :func:`~composer.train.runlog.data_record`): ``blueprint`` (name), ``blueprint_sha256``,
    ``blueprint_text``, ``data``, ``seed``, ``versions``, ``git``, ``search`` (``{"study", "trial"}``
    or None), ``run_dir`` (absolute) and ``started`` (UTC, ISO 8601)."""
    text = blueprint.text()
    return {
        "blueprint": blueprint.name,
        "blueprint_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "seed": blueprint.training.seed,
        "data": data,
        "versions": versions(),
        "git": git_commit(),
        "search": search if search is not None else _SEARCH.get(),
        "run_dir": str(Path(run_dir).resolve()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "blueprint_text": text,
    }


def metric_values(rows: list[dict]) -> dict[str, float]:
    """``{"<split>/<metric>": value}`` of metric rows (``{"epoch", "split", ...}``); values that
    are not finite numbers (None, NaN, text) are left out."""
    out: dict[str, float] = {}
    for row in rows:
        split = row.get("split", "run")
        for key, value in row.items():
            if key in ("epoch", "split") or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            out[f"{split}/{key}"] = float(value)
    return out


def _flat(data: Any, prefix: str) -> dict[str, str]:
    """Dotted keys -> text of the scalar (and short list) values of nested data."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = json.dumps(data) if isinstance(data, (list, tuple)) else str(data)
    return {prefix: text} if len(text) <= PARAM_LIMIT else {}


def run_params(record: dict[str, Any], training: dict[str, Any]) -> dict[str, str]:
    """The parameters a tracker logs: ``seed``, ``blueprint``, ``data.source``, ``data.sha256``
    and every ``training.*`` field (nested ones dotted; values longer than 500 characters left out)."""
    data = record.get("data") or {}
    params = {"blueprint": record["blueprint"], "seed": str(record["seed"]), "data.source": str(data.get("source")),
              "data.sha256": str(data.get("sha256"))}
    params.update(_flat({k: v for k, v in training.items() if k != "tracking"}, "training"))
    return params


def run_tags(record: dict[str, Any]) -> dict[str, str]:
    """The tags a tracker sets: ``composer.blueprint_sha256``, ``composer.run_dir``, the versions
    (``composer.version.<name>``), ``composer.git_commit`` (and ``composer.git_dirty``) and in a
    search ``composer.study`` and ``composer.trial``."""
    tags = {"composer.blueprint": record["blueprint"], "composer.blueprint_sha256": record["blueprint_sha256"],
            "composer.run_dir": record["run_dir"], "composer.data_sha256": str((record.get("data") or {}).get("sha256"))}
    tags.update((f"composer.version.{k}", v) for k, v in record["versions"].items())
    if record.get("git"):
        tags["composer.git_commit"] = record["git"]["commit"]
        tags["composer.git_dirty"] = str(record["git"]["dirty"]).lower()
    if record.get("search"):
        tags["composer.study"] = record["search"]["study"]
        tags["composer.trial"] = str(record["search"]["trial"])
    return tags


# -- trackers -------------------------------------------------------------------------
class Tracker(ABC):
    """Where a run reports: ``start(record)`` once (:func:`run_record`), ``log_metrics(rows, step)``
    after each epoch (rows as in ``metrics.jsonl``, ``step``: the epoch), ``end(status)`` once
    (``FINISHED``, ``FAILED`` or ``KILLED``)."""

    name = "tracker"

    @abstractmethod
    def start(self, record: dict[str, Any]) -> None: ...

    @abstractmethod
    def log_metrics(self, rows: list[dict], step: int) -> None: ...

    @abstractmethod
    def end(self, status: str) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records about this tracker (where its data went)."""
        return {}


def _missing(what: str, package: str, exc: ImportError) -> ComposerError:
    return ComposerError(f"{what} tracking needs the '{package}' package, which is not installed ({exc}); "
                         f"install the tracking extra: {EXTRA}")


class TensorBoardTracker(Tracker):
    """Scalars ``<split>/<metric>`` per epoch, the blueprint and the run record as text, in
    ``<run_dir>/tensorboard/`` (event files; ``tensorboard --logdir runs``). A resumed run drops
    the events after ``resume_epoch`` first (``purge_step``)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, resume_epoch: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise _missing("TensorBoard", "tensorboard", exc) from None
        self.dir = Path(run_dir) / TENSORBOARD_DIR
        if resume_epoch is None:  # a new run: events of an earlier run in this folder go
            for old in self.dir.glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=resume_epoch + 1 if resume_epoch is not None else None)

    def start(self, record: dict[str, Any]) -> None:
        shown = {k: v for k, v in record.items() if k != "blueprint_text"}
        self.writer.add_text("blueprint", "```\n" + record["blueprint_text"] + "\n```", 0)
        self.writer.add_text("run", "```\n" + json.dumps(shown, indent=2) + "\n```", 0)

    def log_metrics(self, rows: list[dict], step: int) -> None:
        for tag, value in metric_values(rows).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def end(self, status: str) -> None:
        self.writer.add_text("status", status, 0)
        self.writer.close()

    def describe(self) -> dict[str, Any]:
        return {"dir": TENSORBOARD_DIR}


def _artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside the database of a local ``sqlite:///``
    store (``<folder>/mlartifacts``) rather than in the working directory; else the store's default."""
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


class MLflowTracker(Tracker):
    """A run in the MLflow experiment ``experiment`` at ``uri`` (made when missing), through
    ``MlflowClient`` (no process-wide active run, so trials and seeds in one process stay apart):
    the parameters of :func:`run_params`, the tags of :func:`run_tags`, ``<split>/<metric>`` per
    epoch, ``blueprint.yaml`` and ``run.json`` as artifacts. ``run_id`` continues that run (a resume)."""

    name = "mlflow"

    def __init__(self, uri: str, experiment: str, run_name: str, training: dict[str, Any], run_id: str | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise _missing("MLflow", "mlflow", exc) from None
        self.uri, self.experiment, self.run_name, self.training = uri, experiment, run_name, training
        self.resumed = run_id
        self.run_id: str | None = None
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment, artifact_location=_artifact_root(uri))
        except Exception as exc:  # MLflow raises its own and its stores' errors
            raise ComposerError(f"MLflow tracking URI '{uri}': cannot open experiment '{experiment}' ({type(exc).__name__}: {exc})") from None

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise ComposerError(f"MLflow tracking URI '{self.uri}': {what} failed ({type(exc).__name__}: {exc})") from None

    def _existing(self) -> str | None:
        if self.resumed is None:
            return None
        try:
            run = self.client.get_run(self.resumed)
        except Exception:  # gone from this store: a new run
            return None
        return self.resumed if run.info.experiment_id == self.experiment_id else None

    def start(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        existing = self._existing()
        if existing is not None:
            self.run_id = existing
            self._call("resuming the run", self.client.update_run, existing, status="RUNNING")
            return
        tags = run_tags(record)
        run = self._call("creating a run", self.client.create_run, self.experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in run_params(record, self.training).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self._call("logging parameters", self.client.log_batch, self.run_id, params=params[i:i + 100])
        self._call("logging the blueprint", self.client.log_text, self.run_id, record["blueprint_text"], "blueprint.yaml")
        self._call("logging the run record", self.client.log_dict, self.run_id, record, "run.json")
        self._call("tagging", self.client.log_batch, self.run_id, tags=[RunTag("composer.started", record["started"])])

    def log_metrics(self, rows: list[dict], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in metric_values(rows).items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self._call("logging metrics", self.client.log_batch, self.run_id, metrics=metrics[i:i + 1000])

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self._call("ending the run", self.client.set_terminated, self.run_id, status)

    def describe(self) -> dict[str, Any]:
        return {"uri": self.uri, "experiment": self.experiment, "experiment_id": self.experiment_id, "run_id": self.run_id}


def trackers_for(blueprint, run_dir: Path, flags: TrackingFlags | None = None, *, resume_epoch: int | None = None,
                 previous: dict[str, Any] | None = None) -> list[Tracker]:
    """The trackers a run of the checked ``blueprint`` in ``run_dir`` reports to: those its
    ``training.tracking`` asks for and those of ``flags`` (default: the current :func:`options`).
    ``--mlflow URI`` replaces the blueprint's URI and keeps its experiment (default: the
    blueprint's name); the MLflow run is named after the run folder. ``previous``: the
    ``trackers`` entry of the folder's earlier ``run.json``, whose MLflow run a resume
    (``resume_epoch`` not None) continues when URI and experiment are the same. None on ranks
    other than 0."""
    if not is_rank_zero():
        return []
    cfg = blueprint.training.tracking
    flags = flags if flags is not None else _FLAGS.get()
    trackers: list[Tracker] = []
    uri = flags.mlflow or (cfg.mlflow.uri if cfg.mlflow is not None else None)
    if uri:
        experiment = (cfg.mlflow.experiment if cfg.mlflow is not None else None) or blueprint.name
        before = (previous or {}).get("mlflow") or {}
        same = resume_epoch is not None and before.get("uri") == uri and before.get("experiment") == experiment
        training = blueprint.training.model_dump(mode="json")
        trackers.append(MLflowTracker(uri, experiment, Path(run_dir).resolve().name, training, run_id=before.get("run_id") if same else None))
    if cfg.tensorboard or flags.tensorboard:  # made last: no event file is left open when MLflow cannot start
        trackers.insert(0, TensorBoardTracker(run_dir, resume_epoch))
    return trackers
