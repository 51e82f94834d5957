"""Paths into a blueprint's data (``blocks.fusion.layers``, ``losses.dlfr.weight``) and ``--set``.

``--set path=value`` changes a field that exists, or a field the schema defines but the file
leaves at its default (``training.monitor.metric``). It never adds an entry to a collection of
names the user chooses — ``vars``, ``loss_groups``, ``blocks``, ``modalities``, ``outputs``,
``templates``, ``training.views``, ``training.data.paths``, ``search.space`` — because a
misspelt name there would be accepted and change nothing: that is an error with a suggestion.
To add such an entry on purpose, write a ``+`` before the path: ``--set +vars.width=64``.
"""

from __future__ import annotations

from typing import Any, Iterable

from composer.blueprint._yaml import parse_scalar
from composer.errors import BlueprintError, ComposerError, Problem, did_you_mean, format_path
from composer.ref import SEPARATOR

__all__ = ["split_path", "resolve_path", "get_path", "set_path", "apply_override", "apply_setting", "NAMED_COLLECTIONS", "CREATE_PREFIX"]

#: Mappings whose keys are names the user chooses (a new key is a new entry, not a field).
NAMED_COLLECTIONS = {
    ("vars",): "variable",
    ("loss_groups",): "loss group",
    ("blocks",): "block",
    ("modalities",): "modality",
    ("outputs",): "output",
    ("templates",): "template",
    ("training", "views"): "view",
    ("training", "data", "paths"): "data file",
    ("search", "space"): "search-space entry",
}
#: ``--set +path=value`` may add an entry to a named collection.
CREATE_PREFIX = "+"


def split_path(path: str) -> list[str | int]:
    """``losses.0.weight`` -> ``['losses', 0, 'weight']``."""
    parts: list[str | int] = []
    for part in path.split("."):
        if part == "":
            raise ComposerError(f"bad path '{path}': empty component")
        parts.append(int(part) if part.isdigit() else part)
    return parts


def resolve_path(data: Any, path: list[str | int], text: str | None = None) -> list[str | int]:
    """``losses.<name>...`` -> ``losses.<index>...`` for the loss of that name (names are unique).

    Raises :class:`BlueprintError` naming the known loss names when none matches."""
    if len(path) >= 2 and path[0] == "losses" and isinstance(path[1], str) and isinstance(data, dict):
        losses = data.get("losses") if isinstance(data.get("losses"), list) else []
        names = [l.get("name") for l in losses if isinstance(l, dict)]
        if path[1] not in names:
            known = [n for n in names if n]
            raise BlueprintError([Problem(tuple(path), (
                f"{text or format_path(path)}: no loss is named '{path[1]}'"
                + (f" (named losses: {', '.join(known)})" if known else " (give a loss `name:` to address it by name)")
            ), did_you_mean(str(path[1]), known))])
        return ["losses", names.index(path[1]), *path[2:]]
    if len(path) >= 3 and path[0] == "blocks" and isinstance(data, dict) and isinstance(data.get("blocks"), dict):
        blocks = data["blocks"]
        if path[1] not in blocks:  # an expanded template use: blocks.pair.ab.layers -> blocks.pair/ab.layers
            for end in range(len(path) - 1, 2, -1):
                joined = SEPARATOR.join(str(p) for p in path[1:end])
                if joined in blocks:
                    return ["blocks", joined, *path[end:]]
    return list(path)


def get_path(data: Any, path: Iterable[str | int]) -> Any:
    for part in path:
        data = data[part]
    return data


class _NewName(KeyError):
    """A missing key in a named collection: ``args[0]`` is the path up to it, ``kind`` the entry's kind."""

    def __init__(self, path: list, kind: str):
        super().__init__(path)
        self.kind = kind


def set_path(data: Any, path: list[str | int], value: Any, *, create: bool = True, create_names: bool = True) -> None:
    """Set ``value`` at ``path`` in nested dicts/lists; missing mapping keys are created.

    ``create_names=False``: a missing key in one of :data:`NAMED_COLLECTIONS` raises instead
    (``--set`` without ``+``). A missing index, or a missing key with ``create=False``, raises ``KeyError``."""
    node = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise KeyError(path[: i + 1])
        elif not isinstance(node, dict):
            raise KeyError(path[: i + 1])
        elif part not in node:
            kind = NAMED_COLLECTIONS.get(tuple(path[:i]))
            if kind is not None and not create_names:
                raise _NewName(path[: i + 1], kind)
            if not create and not last:
                raise KeyError(path[: i + 1])
            if not last:
                node[part] = {}
        if last:
            node[part] = value
        else:
            node = node[part]


def apply_override(data: dict, text: str) -> tuple[list[str | int], Any]:
    """Apply one ``path=value`` override to raw blueprint data (value read as YAML); a leading
    ``+`` on the path may add an entry to a named collection (see the module's docstring)."""
    if "=" not in text:
        raise ComposerError(f"--set expects path=value, got '{text}'")
    path_text, _, value_text = text.partition("=")
    return apply_setting(data, path_text, parse_scalar(value_text))


def apply_setting(data: dict, path_text: str, value: Any, *, where: tuple = (), file: str | None = "--set") -> tuple[list[str | int], Any]:
    """Set ``value`` at the path ``path_text`` (``--set``'s rules); problems are reported at
    ``where`` (default: the path itself) in ``file``."""
    path_text = str(path_text).strip()
    adding = path_text.startswith(CREATE_PREFIX)
    path_text = path_text.removeprefix(CREATE_PREFIX)
    try:
        path = resolve_path(data, split_path(path_text), f"{file or ''} {path_text}".strip())
    except BlueprintError as exc:
        if where:
            raise BlueprintError([Problem(where, p.message, p.suggestion, file=file) for p in exc.problems]) from None
        raise
    try:
        set_path(data, path, value, create_names=adding)
    except _NewName as exc:
        bad = exc.args[0]
        parent = get_path(data, bad[:-1])
        hint = did_you_mean(str(bad[-1]), [str(o) for o in parent])
        known = f" ({exc.kind}s: {', '.join(map(str, parent))})" if parent and hint is None else ""
        spelled = f"--set {CREATE_PREFIX}{path_text}=..." if file == "--set" else f"{CREATE_PREFIX}{path_text}"
        raise BlueprintError([Problem(where or tuple(path), (
            f"the blueprint has no {exc.kind} '{bad[-1]}'{known}; to add one on purpose write {spelled}"
        ), hint, file=file)]) from None
    except KeyError as exc:
        bad = exc.args[0]
        try:
            parent = get_path(data, bad[:-1]) if len(bad) > 1 else data
        except (KeyError, IndexError, TypeError):
            parent = None
        options = list(parent) if isinstance(parent, dict) else []
        hint = did_you_mean(str(bad[-1]), [str(o) for o in options])
        raise BlueprintError(
            [Problem(where or tuple(path), f"{path_text}: no such place in the blueprint", hint, file=file)]
        ) from None
    return path, value
