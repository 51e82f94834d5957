"""How much memory reading data may claim: a small file never allocates a lot.

A pickle can reference one array many times, view one buffer with many shapes and an HDF5
dataset can be compressed, so what is built from a file may be far larger than the file.
Readers add up what they are about to allocate, *before* allocating it, and stop when the total
passes the limit of a :class:`Budget`:

* ``COMPOSER_MAX_DATA`` (``"8GB"``, ``"512MB"`` or bytes) when set: the setting that raises
  (or lowers) every data limit;
* else, for data read from files: 100 times the size of the files (at least 1 GiB), never more
  than the memory budget (``COMPOSER_MAX_MEMORY`` or 75% of physical memory, see
  docs/guarantees.md);
* else (synthetic data, built from the blueprint's ``length`` and ``samples``): the memory budget.

A refusal names the limit, the value and ``COMPOSER_MAX_DATA``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterable

from composer.errors import DataError

__all__ = ["Budget", "allocation_limit", "SETTING"]

RATIO = 100
FLOOR = 2**30
SETTING = "COMPOSER_MAX_DATA"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _setting() -> int | None:
    """``COMPOSER_MAX_DATA`` in bytes, or None when it is not set."""
    text = os.environ.get(SETTING)
    if not text:
        return None
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise DataError(f"{SETTING}={text!r}: expected a size such as 8GB, 512MB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _limit(files: list[str]) -> tuple[int, str]:
    """The byte limit for data read from ``files`` (none: synthetic data) and how it was set."""
    from composer.graph.size import memory_budget

    explicit = _setting()
    if explicit is not None:
        return explicit, f"set by {SETTING}"
    budget = memory_budget()
    memory = "the memory budget, COMPOSER_MAX_MEMORY or 75% of physical memory"
    if not files:
        return budget, memory
    size = sum(Path(f).stat().st_size for f in files)
    scaled = max(FLOOR, RATIO * size)
    if scaled > budget:
        return budget, memory
    return scaled, f"{RATIO} times the {size:,} bytes read, at least 1 GiB"


def allocation_limit(files: Iterable[str | Path]) -> int:
    """Bytes that reading ``files`` may allocate (see the module docstring)."""
    return _limit([str(f) for f in files])[0]


class Budget:
    """A running total of bytes against the limit for ``files`` (no files: synthetic data)."""

    def __init__(self, files: Iterable[str | Path] = (), *, source: str | None = None):
        self.files = [str(f) for f in files]
        self.source = source or ", ".join(self.files) or "the data"
        self.limit, self.reason = _limit(self.files)
        self.used = 0

    def remaining(self) -> int:
        return self.limit - self.used

    def check(self, nbytes: int, what: str) -> None:
        """Refuse ``nbytes`` more without counting them (for a view that allocates nothing yet)."""
        if self.used + int(nbytes) > self.limit:
            raise DataError(
                f"{self.source}: {what} would bring the data read to {self.used + int(nbytes):,} bytes, more than the "
                f"limit of {self.limit:,} bytes ({self.reason}); refusing to allocate it. Set {SETTING} "
                f"(e.g. {SETTING}=64GB) to allow more"
            )

    def take(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` about to be allocated for ``what``; a :class:`DataError` past the limit."""
        self.check(nbytes, what)
        self.used += int(nbytes)


def synthetic_bytes(blueprint, samples: int) -> int:
    """Memory the generator needs for ``samples`` samples: 24 bytes per float element (the float64
    draw, the float32 result, one temporary, the split's copy); 33 per token step (draws, ids,
    mask, segments, the split's copy); the labels, extra labels included."""
    total = samples * 8 * max(blueprint.task.outputs, 1) * (1 + len(blueprint.training.data.extra_labels))
    for m in blueprint.modalities.values():
        if m.kind == "tokens":
            total += samples * m.length * 33
        elif m.kind == "sequence":
            total += samples * m.length * m.features * 24
        else:
            total += samples * math.prod([m.features, *m.spatial]) * 24
    return total
