"""How much memory reading a data file may claim: a small file never allocates a lot.

A pickle can reference one array many times and an HDF5 dataset can be compressed, so the
tensors built from a file may be far larger than the file. Readers add up what they are about
to allocate and stop when it passes :func:`allocation_limit`: 100 times the size of the files
read (at least 1 GiB), never more than the memory budget (``COMPOSER_MAX_MEMORY`` or 75% of
physical memory, see docs/guarantees.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from composer.errors import DataError

__all__ = ["Budget", "allocation_limit"]

RATIO = 100
FLOOR = 2**30


def allocation_limit(files: Iterable[str | Path]) -> int:
    from composer.graph.size import memory_budget

    size = sum(Path(f).stat().st_size for f in files)
    return min(memory_budget(), max(FLOOR, RATIO * size))


class Budget:
    """A running total of bytes against :func:`allocation_limit` of ``files``."""

    def __init__(self, files: Iterable[str | Path]):
        self.files = [str(f) for f in files]
        self.limit = allocation_limit(self.files)
        self.used = 0

    def take(self, nbytes: int, what: str) -> None:
        self.used += int(nbytes)
        if self.used > self.limit:
            raise DataError(
                f"{', '.join(self.files)}: {what} would bring the data read to {self.used:,} bytes, more than the "
                f"{self.limit:,} allowed for files of this size (100 times their size, at least 1 GiB, within "
                "COMPOSER_MAX_MEMORY); refusing to allocate it"
            )
