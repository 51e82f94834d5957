"""Where a study lives: an Optuna storage from ``--storage`` (or the search folder), opened with
every failure turned into an error that names the storage and what it should be.

``None``: an SQLite file ``study.db`` in the search folder. ``postgresql://...`` (psycopg2 or
psycopg 3, whichever is installed), any SQLAlchemy URL, or ``journal:PATH`` (Optuna's journal
file) let several worker processes share one study.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from composer.errors import ComposerError

__all__ = ["HeartbeatStorage", "make_storage", "postgres_driver", "check_storage_url", "open_study", "describe_storage", "STORAGE_FORMS"]

STORAGE_FORMS = "postgresql://USER@HOST/DB, sqlite:///PATH, another SQLAlchemy URL, or journal:PATH"


def check_storage_url(storage: str) -> None:
    """Refuse a ``--storage`` value that is neither ``journal:PATH`` nor a URL with a scheme."""
    if not isinstance(storage, str) or not storage.strip():
        raise ComposerError(f"--storage {storage!r}: expected {STORAGE_FORMS}")
    if storage.startswith("journal:"):
        if not storage.removeprefix("journal:").strip():
            raise ComposerError(f"--storage {storage!r}: journal: needs a file path (journal:runs/study.log)")
        return
    scheme, sep, rest = storage.partition("://")
    if not sep or not scheme or not rest:
        raise ComposerError(f"--storage {storage!r} is not a storage URL; expected {STORAGE_FORMS}")


def describe_storage(storage: str | None, out_dir: Path) -> str:
    """How a storage is named in messages: the URL (password hidden) or the search folder's file."""
    if storage is None:
        return str(out_dir / "study.db")
    scheme, sep, rest = storage.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        credentials, host = rest.split("@", 1)
        rest = f"{credentials.split(':', 1)[0]}:***@{host}" if ":" in credentials else rest
    return f"{scheme}{sep}{rest}" if sep else storage


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def make_storage(storage: str | None, out_dir: Path, heartbeat: int | None = None):
    """An Optuna storage from a URL, ``journal:PATH``, or None (SQLite in ``out_dir``).

    SQL storages (the default SQLite file, PostgreSQL, any SQLAlchemy URL) get Optuna's
    heartbeat when ``heartbeat`` seconds are given: a worker that dies (even by SIGKILL) stops
    beating, after ``3 × heartbeat`` seconds its trial is marked failed and
    :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` queues it once more for any worker.
    """
    if storage is not None:
        check_storage_url(storage)
    try:
        return _open_storage(storage, out_dir, heartbeat)
    except ComposerError:
        raise
    except Exception as exc:  # SQLAlchemy, the database driver and Optuna raise their own types
        raise ComposerError(f"cannot open the study storage {describe_storage(storage, out_dir)} ({_reason(exc)}); "
                            f"check the URL, that the database is reachable and that it holds an Optuna study ({STORAGE_FORMS})") from None


def _open_storage(storage: str | None, out_dir: Path, heartbeat: int | None):
    if storage is not None and storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(storage.removeprefix("journal:")))
    if storage is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out_dir / 'study.db').resolve()}"
    storage = postgres_driver(storage)
    return _with_retries(lambda: HeartbeatStorage(
        storage,
        heartbeat_interval=heartbeat,
        grace_period=None if heartbeat is None else 3 * heartbeat,
        heartbeat_stale_trial_callback=None if heartbeat is None else optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
    ))


class HeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's SQL storage whose stale-trial check also sees a trial that never beat.

    Optuna counts a RUNNING trial as stale only once its last heartbeat is older than the grace
    period; a trial with no heartbeat at all is skipped forever. A worker killed between creating
    its trial (``study.ask``) and its heartbeat thread's first beat (SIGKILL, or the exit when the
    search that started it dies) leaves exactly such a trial: RUNNING for ever, so a resumed
    search waits on it and never reaches its total. Here a RUNNING trial started longer than the
    grace period ago with no heartbeat row is stale too, and is failed and queued again like any
    other (``RetryHeartbeatStaleTrialCallback``). Reads Optuna's own ``trial_heartbeats`` table.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        now = datetime.datetime.now()  # Optuna writes datetime_start from the worker's local clock
        old = [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if t._trial_id not in stale and t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace]
        if not old:
            return stale
        with _create_scoped_session(self.scoped_session) as session:
            beating = {row[0] for row in session.query(models.TrialHeartbeatModel.trial_id).filter(models.TrialHeartbeatModel.trial_id.in_(old))}
        return stale + [trial_id for trial_id in old if trial_id not in beating]


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


def open_study(name: str, storage, where: str, **options) -> optuna.Study:
    """``optuna.load_study`` with a missing study named: ``where`` describes the storage."""
    try:
        return optuna.load_study(study_name=name, storage=storage, **options)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        found = f"it holds {', '.join(repr(n) for n in names)}" if names else "it holds no study"
        raise ComposerError(f"{where}: no study named '{name}' ({found}); give --study NAME or the search's own --storage") from None
