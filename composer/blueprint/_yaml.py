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
    """YAML path -> line, with lookup that falls back to the nearest known parent.

    ``files`` names another file for paths whose values were written there (templates
    imported from a file, and the blocks expanded from them)."""

    def __init__(self, file: str | None = None):
        self.file = file
        self.lines: dict[tuple, int] = {}
        self.files: dict[tuple, str] = {}

    def copy(self) -> "SourceMap":
        other = SourceMap(self.file)
        other.lines, other.files = dict(self.lines), dict(self.files)
        return other

    def _known(self, path: tuple) -> tuple | None:
        while True:
            if path in self.lines:
                return path
            if not path:
                return None
            path = path[:-1]

    def line(self, path: tuple) -> int | None:
        known = self._known(tuple(path))
        return None if known is None else self.lines[known]

    def locate(self, problem: Problem) -> Problem:
        if problem.file is None and problem.line is None:
            known = self._known(tuple(problem.path))
            problem.file = self.files.get(known, self.file) if known is not None else self.file
            problem.line = None if known is None else self.lines[known]
        return problem


#: Bounds on what one YAML document may make us build (a blueprint is a few hundred lines).
MAX_YAML_CHARS = 1_000_000
MAX_YAML_NODES = 200_000  # values after alias expansion
MAX_YAML_DEPTH = 64

_STANDARD_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Budget:
    """Counts the values built (aliases expanded) so a small file cannot ask for a huge tree."""

    def __init__(self) -> None:
        self.nodes = 0


class _TooLarge(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def _construct(node: yaml.Node, path: tuple, smap: SourceMap, problems: list[Problem], budget: _Budget, stack: tuple = ()) -> Any:
    line = node.start_mark.line + 1
    budget.nodes += 1
    if budget.nodes > MAX_YAML_NODES:
        raise _TooLarge(Problem(path, f"the document expands to more than {MAX_YAML_NODES:,} values (aliases included); "
                                      "a blueprint is far smaller", file=smap.file, line=line))
    if len(path) > MAX_YAML_DEPTH:
        raise _TooLarge(Problem(path[:8], f"values nested more than {MAX_YAML_DEPTH} levels deep", file=smap.file, line=line))
    if any(node is seen for seen in stack):
        raise _TooLarge(Problem(path, "an alias refers to a value that contains it (a recursive YAML structure)", file=smap.file, line=line))
    smap.lines.setdefault(path, line)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _STANDARD_COLLECTION_TAGS:
        problems.append(Problem(path, f"unsupported YAML tag '{node.tag}': a blueprint holds plain mappings, lists and scalars", file=smap.file, line=line))
        return None
    inner = stack + (node,)
    if isinstance(node, yaml.MappingNode):
        return _construct_mapping(node, path, smap, problems, budget, inner)
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), smap, problems, budget, inner) for i, item in enumerate(node.value)]
    try:
        return _LOADER.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(path, f"unsupported YAML value: {reason}", file=smap.file, line=line))
        return None


def _construct_mapping(node: yaml.MappingNode, path: tuple, smap: SourceMap, problems: list[Problem], budget: _Budget, stack: tuple) -> dict:
    """A mapping with duplicate keys refused and YAML merge keys (``<<: *base``) applied.

    Merged keys come first; keys written in the mapping override them (YAML's merge rule);
    with a list of merged mappings, the first that defines a key wins.
    """
    out: dict = {}
    merged: dict = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            problems.append(Problem(path, "mapping keys must be plain names", line=key_node.start_mark.line + 1, file=smap.file))
            continue
        if key_node.tag == _MERGE_TAG:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                value = _construct(source, path, smap, problems, budget, stack)
                if not isinstance(value, dict):
                    problems.append(Problem(path, "a merge key (<<) takes a mapping or a list of mappings", file=smap.file, line=key_node.start_mark.line + 1))
                    continue
                for k, v in value.items():
                    merged.setdefault(k, v)
            continue
        try:
            key = _LOADER.construct_object(key_node)
        except yaml.YAMLError as exc:
            problems.append(Problem(path, f"unsupported mapping key: {getattr(exc, 'problem', exc)}", file=smap.file, line=key_node.start_mark.line + 1))
            continue
        if isinstance(key, (int, float, bool)) or key is None:
            key = str(key_node.value)
        if not isinstance(key, str):
            problems.append(Problem(path, "mapping keys must be plain names", line=key_node.start_mark.line + 1, file=smap.file))
            continue
        if key in out:
            problems.append(
                Problem(path + (key,), f"duplicate key '{key}' (first defined on line {smap.lines[path + (key,)]})",
                        file=smap.file, line=key_node.start_mark.line + 1)
            )
            continue
        smap.lines[path + (key,)] = key_node.start_mark.line + 1
        out[key] = _construct(value_node, path + (key,), smap, problems, budget, stack)
    return {**{k: v for k, v in merged.items() if k not in out}, **out}


_LOADER = yaml.SafeLoader("")


def read_yaml(text: str, file: str | None = None) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data and a source map; syntax errors become a BlueprintError.

    The text, the number of values it expands to (aliases included) and their nesting are
    bounded (:data:`MAX_YAML_CHARS`, :data:`MAX_YAML_NODES`, :data:`MAX_YAML_DEPTH`), so a
    small hostile file cannot exhaust memory or the stack.
    """
    smap = SourceMap(file)
    if len(text) > MAX_YAML_CHARS:
        raise BlueprintError([Problem((), f"the document has {len(text):,} characters; a blueprint may have at most {MAX_YAML_CHARS:,}", file=file)])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise BlueprintError([Problem((), f"YAML syntax error: {reason}", file=file, line=line)]) from None
    except RecursionError:
        raise BlueprintError([Problem((), f"values nested too deeply (a blueprint nests at most {MAX_YAML_DEPTH} levels)", file=file)]) from None
    if node is None:
        return {}, smap
    problems: list[Problem] = []
    try:
        data = _construct(node, (), smap, problems, _Budget())
    except _TooLarge as exc:
        raise BlueprintError([exc.problem]) from None
    if problems:
        raise BlueprintError(problems)
    return data, smap


def parse_scalar(text: str) -> Any:
    """A command-line value read as a YAML scalar or flow collection (``4``, ``true``, ``[1, 2]``)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
