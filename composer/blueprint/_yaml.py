"""YAML reading that remembers where every value came from.

:func:`read_yaml` returns plain Python data (dicts, lists, scalars) and a *source map*
from YAML paths (tuples of keys and indices) to 1-based line numbers. Duplicate keys are
errors rather than silent overwrites. Only YAML's safe types are constructed: loading a
blueprint never executes code.
"""

from __future__ import annotations

from typing import Any

import yaml

from composer.errors import BlueprintError, Problem

__all__ = ["SourceMap", "read_yaml", "parse_scalar"]


class SourceMap:
    """YAML path -> line, with lookup that falls back to the nearest known parent."""

    def __init__(self, file: str | None = None):
        self.file = file
        self.lines: dict[tuple, int] = {}

    def line(self, path: tuple) -> int | None:
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def locate(self, problem: Problem) -> Problem:
        if problem.file is None and problem.line is None:
            problem.file = self.file
            problem.line = self.line(problem.path)
        return problem


def _construct(node: yaml.Node, path: tuple, smap: SourceMap, problems: list[Problem]) -> Any:
    smap.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader.construct_scalar(_LOADER, key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or not isinstance(key_node, yaml.ScalarNode):
                problems.append(Problem(path, "mapping keys must be plain names", line=key_node.start_mark.line + 1, file=smap.file))
                continue
            key = _LOADER.construct_object(key_node)
            if isinstance(key, (int, float, bool)) or key is None:
                key = str(key_node.value)
            if key in out:
                problems.append(
                    Problem(path + (key,), f"duplicate key '{key}' (first defined on line {smap.lines[path + (key,)]})",
                            file=smap.file, line=key_node.start_mark.line + 1)
                )
                continue
            smap.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), smap, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), smap, problems) for i, item in enumerate(node.value)]
    return _LOADER.construct_object(node, deep=True)


_LOADER = yaml.SafeLoader("")


def read_yaml(text: str, file: str | None = None) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data and a source map; syntax errors become a BlueprintError."""
    smap = SourceMap(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise BlueprintError([Problem((), f"YAML syntax error: {reason}", file=file, line=line)]) from None
    if node is None:
        return {}, smap
    problems: list[Problem] = []
    data = _construct(node, (), smap, problems)
    if problems:
        raise BlueprintError(problems)
    return data, smap


def parse_scalar(text: str) -> Any:
    """A command-line value read as a YAML scalar or flow collection (``4``, ``true``, ``[1, 2]``)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
