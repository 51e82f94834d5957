"""The run folder's text outputs: per-epoch metrics (JSONL + CSV), block logs, summary.

``metrics.jsonl`` has one JSON object per epoch per split (``{"epoch", "split", "loss",
...metrics}``); ``metrics.csv`` holds the same rows with the union of the columns and is
rewritten after each epoch. ``block_logs.jsonl`` holds the rows returned by blocks'
``composer_epoch_end`` hooks. On resume, rows after the checkpoint's epoch (from an
interrupted epoch) are dropped so the files match an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "write_json", "make_console"]


def make_console():
    """A rich console; 150 columns wide when output is not a terminal, so metric tables fit."""
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=150)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + replace)."""
    tmp = path.with_name(f".{path.name}.tmp")
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


class RunLog:
    """Append-only metric and block logs in ``run_dir``; ``resume_epoch`` keeps rows up to that epoch."""

    def __init__(self, run_dir: Path, resume_epoch: int | None = None):
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

    @staticmethod
    def _rewrite(path: Path, rows: list[dict]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, default=_clean) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)

    def add_metrics(self, rows: list[dict]) -> None:
        rows = [{k: _clean(v) for k, v in r.items()} for r in rows]
        self.rows += rows
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        self._write_csv()

    def add_block_rows(self, rows: list[dict]) -> None:
        self.block_rows += rows
        with open(self.blocks_path, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")

    def _write_csv(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.csv_path)
