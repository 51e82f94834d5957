"""User-facing errors.

Every error a user can cause (a bad blueprint, a bad command-line override, a malformed
data file, a missing weight file) is a :class:`ComposerError`. A blueprint error carries
one or more :class:`Problem` values, each naming the YAML path, the ``file:line`` where
the value sits, what was expected and, when a close match exists, a suggestion. All
problems found in one pass are reported together.
"""

from __future__ import annotations

import difflib
import errno
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

__all__ = [
    "ComposerError",
    "BlueprintError",
    "DataError",
    "DiskFullError",
    "Problem",
    "disk_write",
    "did_you_mean",
    "format_path",
]


class ComposerError(Exception):
    """Base class of every error caused by user input; the CLI prints it without a traceback."""

    exit_code = 1


def format_path(path: Sequence[str | int]) -> str:
    """``('blocks', 'fusion', 'in', 0)`` -> ``blocks.fusion.in[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """Closest candidate to a misspelled ``name`` or None."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=cutoff)
    return matches[0] if matches else None


@dataclass
class Problem:
    """One thing wrong with a blueprint.

    ``path`` is the YAML path (tuple of keys and list indices), ``message`` says what is
    wrong and what was expected, ``suggestion`` is a close match for a misspelled name.
    ``file`` and ``line`` are filled in from the YAML source map when known.
    """

    path: tuple[str | int, ...]
    message: str
    suggestion: str | None = None
    file: str | None = None
    line: int | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        level = "warning: " if self.severity == "warning" else ""
        text = f"{where}{level}{format_path(self.path)}: {self.message}"
        if self.suggestion is not None:
            text += f" (did you mean '{self.suggestion}'?)"
        return text


class BlueprintError(ComposerError):
    """A blueprint failed validation; ``problems`` lists everything found, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
        n = sum(p.severity == "error" for p in self.problems)
        header = f"{n} problem{'s' if n != 1 else ''} in blueprint"
        super().__init__(header + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class DataError(ComposerError):
    """A data file or batch does not match what the blueprint expects."""


class DiskFullError(ComposerError):
    """The disk (or the user's quota) filled while Composer wrote a file."""


#: Free bytes below which a failed write is put down to a full disk (torch's writers hide the errno).
NEARLY_FULL = 1 << 20


def _is_disk_full(exc: BaseException, path: object) -> bool:
    """An ``OSError`` with ``ENOSPC``/``EDQUOT``, a library's wrapper of one (safetensors' Rust
    ``StorageFull`` says ``No space left on device (os error 28)``), or any failure while the
    folder of ``path`` has less than :data:`NEARLY_FULL` bytes free."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    folder = os.path.dirname(os.path.abspath(str(path))) or "."
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


@contextmanager
def disk_write(path: object, kept: str) -> Iterator[None]:
    """Turn a full disk inside the block into :class:`DiskFullError`:
    ``no space left on device while writing <path>; kept: <kept>``.

    ``kept`` says what is still intact (``the previous last.ckpt``); any other error passes."""
    try:
        yield
    except ComposerError:
        raise
    except Exception as exc:
        if not _is_disk_full(exc, path):
            raise
        raise DiskFullError(f"no space left on device while writing {path}; kept: {kept}") from None
