"""The run folder's text outputs: per-epoch metrics (JSONL + CSV), block logs, summary.

``metrics.jsonl`` has one JSON object per epoch per split (``{"epoch", "split", "loss",
...metrics}``); ``metrics.csv`` holds the same rows with the union of the columns and is
rewritten after each epoch. ``block_logs.jsonl`` holds the rows returned by blocks'
``composer_epoch_end`` hooks. On resume, rows after the checkpoint's epoch (from an
interrupted epoch) are dropped so the files match an uninterrupted run.

``data.json`` records the data a run was trained on (:func:`data_record`): its source, the
reader, every file it came from with the file's SHA-256, the split sizes and the SHA-256 over
its tensors (:meth:`composer.data.DataSplits.fingerprint`). ``composer evaluate`` and the
protocols read it back (:func:`read_data_record`) to score the same data.

Given the blueprint, a run log also writes ``run.json`` (:func:`composer.train.tracking.run_record`:
blueprint text and SHA-256, data record, seed, versions, git commit, search trial) and reports
to the experiment trackers the blueprint and the command line ask for
(:mod:`composer.train.tracking`), ended by :meth:`RunLog.tracked`; rank 0 only.
"""

from __future__ import annotations

import contextvars
import csv
import hashlib
import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from composer.errors import ComposerError, disk_write
from composer.train import tracking

__all__ = ["RunLog", "write_json", "make_console", "data_record", "read_data_record", "describe_data", "file_sha256", "DATA_RECORD",
           "read_run_record"]

#: The run folder's record of its data.
DATA_RECORD = "data.json"


def make_console():
    """A rich console; 150 columns wide when output is not a terminal, so metric tables fit. It
    prints text as it is (no Rich markup): run folders, file names and block ids are user text
    and may hold brackets; styles are given as ``rich.text.Text`` styles."""
    from rich.console import Console

    console = Console(highlight=False, markup=False)
    return console if console.is_terminal else Console(highlight=False, width=150, markup=False)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + replace)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with disk_write(path, f"the previous {path.name}, if any, and last.ckpt"):
        tmp.write_text(json.dumps(data, indent=2, default=_clean) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _read_jsonl(path: Path, max_epoch: int) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by an interrupt; its epoch is redone
            continue
        if row.get("epoch", 0) <= max_epoch:
            rows.append(row)
    return rows


#: The run logs made inside the innermost :meth:`RunLog.tracked` (None outside one).
_OPEN: contextvars.ContextVar[list | None] = contextvars.ContextVar("composer_open_run_logs", default=None)


def _end_status(exc: BaseException | None) -> str:
    """A tracker's end status for a run that ended with ``exc``: FINISHED (none), KILLED (an
    interrupt or a pruned search trial) or FAILED."""
    if exc is None:
        return "FINISHED"
    optuna = sys.modules.get("optuna")
    pruned = optuna is not None and isinstance(exc, optuna.TrialPruned)
    return "KILLED" if pruned or not isinstance(exc, Exception) else "FAILED"


class RunLog:
    """Append-only metric and block logs in ``run_dir``; ``resume_epoch`` keeps rows up to that epoch.

    With ``blueprint`` (the checked blueprint trained) and ``data`` (its data record), rank 0
    also writes ``run.json`` and starts the trackers (:func:`~composer.train.tracking.trackers_for`),
    which receive every metric row; :meth:`end` (or leaving :meth:`tracked`) ends them."""

    def __init__(self, run_dir: Path, resume_epoch: int | None = None, *, blueprint=None, data: dict[str, Any] | None = None):
        self.dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.csv_path = run_dir / "metrics.csv"
        self.blocks_path = run_dir / "block_logs.jsonl"
        keep = resume_epoch if resume_epoch is not None else -1
        self.rows = _read_jsonl(self.metrics_path, keep)
        self.block_rows = _read_jsonl(self.blocks_path, keep)
        self._rewrite(self.metrics_path, self.rows)
        self._rewrite(self.blocks_path, self.block_rows)
        self._write_csv()
        self.trackers: list[tracking.Tracker] = []
        self.record: dict[str, Any] | None = None
        if blueprint is not None and tracking.is_rank_zero():
            self._start_tracking(blueprint, data or {}, resume_epoch)

    # -- run record and trackers ------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.dir / tracking.RUN_RECORD

    def _start_tracking(self, blueprint, data: dict[str, Any], resume_epoch: int | None) -> None:
        """Write ``run.json``, start the trackers and record where they report; an open
        :meth:`tracked` block will end them."""
        previous = read_run_record(self.dir) if resume_epoch is not None else None
        self.record = tracking.run_record(blueprint, data, self.dir)
        if resume_epoch is not None:
            self.record["resumed_after_epoch"] = resume_epoch
        self.trackers = tracking.trackers_for(blueprint, self.dir, resume_epoch=resume_epoch, previous=(previous or {}).get("trackers"))
        self.record["status"] = "RUNNING"
        opened = _OPEN.get()
        if opened is not None:
            opened.append(self)
        for tracker in self.trackers:
            tracker.start(self.record)
        self._write_record(status="RUNNING")

    def _write_record(self, status: str) -> None:
        assert self.record is not None
        self.record["status"] = status
        self.record["trackers"] = {t.name: t.describe() for t in self.trackers}
        write_json(self.record_path, self.record)

    def end(self, status: str = "FINISHED") -> None:
        """End the trackers with ``status`` (FINISHED, FAILED or KILLED) and record it in ``run.json``;
        a second call does nothing."""
        if self.record is None or self.record.get("status") != "RUNNING":
            return
        try:
            for tracker in self.trackers:
                tracker.end(status)
        finally:
            self._write_record(status)

    @staticmethod
    @contextmanager
    def tracked():
        """Ends the trackers of every run log made inside this block when it ends: FINISHED, or
        FAILED / KILLED (an interrupt, a pruned trial) when it raises; a tracker's error while
        ending a failed run does not hide the run's own error."""
        logs: list[RunLog] = []
        token = _OPEN.set(logs)
        try:
            yield
        except BaseException as exc:
            for log in logs:
                try:
                    log.end(_end_status(exc))
                except ComposerError as err:
                    print(f"warning: {err}", file=sys.stderr)
            raise
        finally:
            _OPEN.reset(token)
        for log in logs:
            log.end(_end_status(None))

    @staticmethod
    def _rewrite(path: Path, rows: list[dict]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with disk_write(path, f"the previous {path.name} and last.ckpt"):
            tmp.write_text("".join(json.dumps(r, default=_clean) + "\n" for r in rows), encoding="utf-8")
            os.replace(tmp, path)

    def add_metrics(self, rows: list[dict]) -> None:
        rows = [{k: _clean(v) for k, v in r.items()} for r in rows]
        self.rows += rows
        with disk_write(self.metrics_path, "the earlier epochs' rows and last.ckpt"), open(self.metrics_path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        self._write_csv()
        if rows and self.trackers:
            step = max(int(r.get("epoch", 0)) for r in rows)
            for tracker in self.trackers:
                tracker.log_metrics(rows, step)

    def add_block_rows(self, rows: list[dict]) -> None:
        self.block_rows += rows
        with disk_write(self.blocks_path, "the earlier epochs' rows and last.ckpt"), open(self.blocks_path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")

    def _write_csv(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        with disk_write(self.csv_path, f"the previous {self.csv_path.name}, metrics.jsonl and last.ckpt"), open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.csv_path)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reader(splits, blueprint) -> tuple[str, list[str]]:
    """How ``splits`` were read, and the files they came from (absolute paths)."""
    source = str(splits.source or "")
    if source == "synthetic":
        return "synthetic", []
    if source.startswith("csd("):
        paths = getattr(blueprint.training.data, "paths", None) or {}
        return "csd", [str(Path(p).resolve()) for p in paths.values()]
    if source and Path(source).is_file():
        mag = any("(MAG layout" in note for note in splits.notes)
        return ("mag_pickle" if mag else "pickle"), [str(Path(source).resolve())]
    return "python", []


def data_record(splits, blueprint) -> dict[str, Any]:
    """What a run records about its data (``splits``: a :class:`~composer.data.DataSplits`):

    ``{"source", "reader", "path", "files": {path: sha256}, "sha256", "sizes", "splits", "notes"}``;
    ``reader`` is ``synthetic``, ``pickle``, ``mag_pickle``, ``csd`` or ``python`` (splits built in
    Python, which only the same Python call can give again); ``path`` is the file of a pickle
    (absolute), else None; ``sha256`` covers the tensors and ids (what the model saw)."""
    reader, files = _reader(splits, blueprint)
    fp = splits.fingerprint()
    return {
        "source": fp["source"],
        "reader": reader,
        "path": files[0] if reader in ("pickle", "mag_pickle") else None,
        "files": {f: file_sha256(f) for f in files},
        "sha256": fp["sha256"],
        "sizes": fp["sizes"],
        "splits": list(fp["sizes"]),
        "notes": list(splits.notes),
    }


def read_run_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run record of a run folder (``run.json``, :func:`composer.train.tracking.run_record`),
    or None when it has none or it cannot be read."""
    path = Path(run_dir) / tracking.RUN_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def read_data_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The data record of a run folder (``data.json``), or None when the folder has none (a run
    from before records, or a weights file outside a run folder)."""
    path = Path(run_dir) / DATA_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def describe_data(record: dict[str, Any]) -> str:
    """``feats.pkl (pickle /abs/feats.pkl; test 8, valid 8; sha256 1a2b3c4d5e6f)``."""
    sizes = ", ".join(f"{k} {v}" for k, v in (record.get("sizes") or {}).items())
    where = record.get("path") or ", ".join(record.get("files") or {}) or record.get("source") or "data"
    name = Path(where).name if record.get("path") else (record.get("source") or "data")
    return f"{name} ({record.get('reader', '?')}{' ' + where if where != name else ''}; {sizes}; sha256 {str(record.get('sha256', '?'))[:12]})"
