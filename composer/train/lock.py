"""One owner per run folder: an exclusive advisory lock on ``<folder>/.lock``.

``train`` (new, ``--resume``, ``--overwrite``), ``evaluate`` when it writes, and the protocols
(``reproduce``, ``robustness``) hold the lock of the folder they write for as long as they run:
``fcntl.flock`` on the file, so the kernel releases it when the process ends, however it ends.
The file's body names the owner as JSON, ``{"pid", "host", "command", "started"}``, and is
emptied when the owner lets go. A second process is refused with that owner's description.
A body left by an owner that ended without letting go (``kill -9``) while the flock itself is
free is a *stale* lock: it is taken over and reported ("a stale lock of pid N (ended) was
taken over").

Within one process the lock is re-entrant: a protocol that holds its output folder's lock may
evaluate into it. Locks are advisory (POSIX ``flock``): they keep Composer processes apart,
not other programs; on a network file system that does not support ``flock`` they may not hold
across machines.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from composer.errors import ComposerError

__all__ = ["RunLock", "LOCK_NAME", "describe_owner"]

LOCK_NAME = ".lock"

#: Folders held: (resolved lock path, pid) -> [open lock file, nesting depth]. The pid keeps a
#: forked child (which inherits this dict) from taking its parent's lock for its own.
_HELD: dict[tuple[Path, int], list[Any]] = {}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _read_owner(path: Path) -> dict[str, Any] | None:
    """The JSON body of a lock file, or None when it is empty or unreadable."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        owner = json.loads(text) if text else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def describe_owner(owner: dict[str, Any] | None) -> str:
    """``pid 123 on host h (composer train, started 2025-01-01 12:00:00)``."""
    if not owner:
        return "another process (it left no description)"
    return (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} "
            f"({owner.get('command', '?')}, started {owner.get('started', '?')})")


class RunLock:
    """``with RunLock(folder, "train"):`` holds ``folder``'s lock; see the module docstring.

    ``command`` describes the owner to a process that is refused (e.g. ``"composer train"``);
    ``log(text)`` receives the note about a stale lock that was taken over.
    Raises :class:`~composer.errors.ComposerError` naming the holder when another process holds it.
    """

    def __init__(self, folder: str | Path, command: str, log: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.command = command
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.path = self.folder / LOCK_NAME
        self.took_over: dict[str, Any] | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        key = (self.path.resolve(), os.getpid())
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(self.path)
            handle.close()
            raise ComposerError(
                f"{self.folder} is in use by {describe_owner(owner)}; wait for it to finish, "
                f"or write to another folder (--out). Nothing in {self.folder} was changed"
            ) from None
        except BaseException:
            handle.close()
            raise
        self._take_over(_read_owner(self.path))
        body = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(body) + "\n")
        handle.flush()
        _HELD[key] = [handle, 1]
        return self

    def _take_over(self, previous: dict[str, Any] | None) -> None:
        """Report the body a previous owner left without letting go (the flock is ours now)."""
        if not previous:
            return
        self.took_over = previous
        pid, host = previous.get("pid"), previous.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            state = "ended"
        elif host == socket.gethostname():
            state = "no longer holding it"
        else:
            state = f"on host {host}, not holding it"
        self.log(f"{self.folder}: a stale lock of pid {pid} ({state}) was taken over "
                 f"(it was {previous.get('command', '?')}, started {previous.get('started', '?')})")

    def __exit__(self, *exc) -> None:
        import fcntl

        key = (self.path.resolve(), os.getpid())
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        handle = held[0]
        try:
            handle.seek(0)
            handle.truncate()  # an empty body: released cleanly, nothing stale to report
            handle.flush()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
