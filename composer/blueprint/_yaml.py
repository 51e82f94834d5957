"""YAML reading that remembers where every value came from.

:func:`read_yaml` returns plain Python data (dicts, lists, scalars) and a *source map*
from YAML paths (tuples of keys and indices) to 1-based line numbers. Duplicate keys are
errors rather than silent overwrites. Only YAML's safe types are constructed: loading a
blueprint never executes code.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from composer.configs._limits import DEPTH, VALUES, YAML_CHARS
from composer.errors import BlueprintError, Problem

__all__ = ["SourceMap", "Budget", "read_yaml", "parse_scalar", "check_tree"]


class SourceMap:
    """YAML path -> line, with lookup that falls back to the nearest known parent.

    ``files`` names another file for paths whose values were written there (templates
    imported from a file, and the blocks expanded from them)."""

    def __init__(self, file: str | None = None):
        self.file = file
        self.lines: dict[tuple, int] = {}
        self.files: dict[tuple, str] = {}
        self.budget = Budget()

    def copy(self) -> "SourceMap":
        other = SourceMap(self.file)
        other.lines, other.files = dict(self.lines), dict(self.files)
        other.budget = self.budget.copy()  # what the copy's user adds (imports, expansion) counts on the copy
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


#: Defaults of the bounds on what a blueprint may make us build (a blueprint is a few hundred
#: lines); ``COMPOSER_MAX_YAML_CHARS``, ``COMPOSER_MAX_VALUES`` and ``COMPOSER_MAX_DEPTH`` raise them
#: (see :mod:`composer.configs._limits`).
MAX_YAML_CHARS = YAML_CHARS.default
MAX_YAML_NODES = VALUES.default  # values after alias expansion
MAX_YAML_DEPTH = DEPTH.default

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_STANDARD_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Budget:
    """What one blueprint has used so far: characters read and values built (aliases expanded),
    over the blueprint, every file it imports and every ``--set`` value, so the bounds hold for
    the whole and not per file. A :class:`SourceMap` from :func:`read_yaml` carries its budget."""

    def __init__(self) -> None:
        self.nodes = 0
        self.chars = 0
        self.max_nodes, self.max_chars, self.max_depth = VALUES.value(), YAML_CHARS.value(), DEPTH.value()

    def read(self, text: str, file: str | None) -> None:
        """Count ``text``'s characters; a BlueprintError once the total passes the limit."""
        self.chars += len(text)
        if self.chars > self.max_chars:
            what = f"the document has {len(text):,} characters" if self.chars == len(text) else (
                f"with this file the blueprint and its imports have {self.chars:,} characters")
            raise BlueprintError([Problem((), f"{what}; {YAML_CHARS.exceeded(self.chars, self.max_chars)}", file=file)])

    def spent(self) -> bool:
        return self.nodes > self.max_nodes or self.chars > self.max_chars

    def copy(self) -> "Budget":
        other = Budget.__new__(Budget)
        other.__dict__.update(self.__dict__)
        return other

    def count(self, n: int, path: tuple, file: str | None, line: int | None) -> None:
        self.nodes += n
        if self.nodes > self.max_nodes:
            raise _TooLarge(Problem(path, (
                f"the document expands to more than {self.max_nodes:,} values (aliases and imports included); "
                f"{VALUES.exceeded(self.nodes, self.max_nodes)}"), file=file, line=line))


class _TooLarge(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def _construct(node: yaml.Node, path: tuple, smap: SourceMap, problems: list[Problem], budget: Budget, stack: tuple = ()) -> Any:
    line = node.start_mark.line + 1
    budget.count(1, path, smap.file, line)
    if len(path) > budget.max_depth:
        raise _TooLarge(Problem(path[:8], f"values nested more than {budget.max_depth} levels deep; {DEPTH.exceeded(len(path), budget.max_depth)}",
                                file=smap.file, line=line))
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
        value = _LOADER.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(Problem(path, f"unsupported YAML value: {reason}", file=smap.file, line=line))
        return None
    except ValueError as exc:  # an integer of more than 4,300 digits
        problems.append(Problem(path, f"unsupported YAML value {node.value[:20]}...: {exc}", file=smap.file, line=line))
        return None
    if isinstance(value, str) and node.style is None and _NUMBER.fullmatch(value):
        value = float(value)  # YAML 1.1 reads 1e999 (no dot) as text; Pydantic would read that text as a float
        if math.isfinite(value):
            return node.value
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(Problem(path, f"{node.value[:40]!r} is not a finite number (a blueprint holds no infinities or NaN)", file=smap.file, line=line))
        return None
    return value


def _construct_mapping(node: yaml.MappingNode, path: tuple, smap: SourceMap, problems: list[Problem], budget: Budget, stack: tuple) -> dict:
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


def read_yaml(text: str, file: str | None = None, budget: Budget | None = None) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data and a source map; syntax errors become a BlueprintError.

    The text, the number of values it expands to (aliases included) and their nesting are
    bounded (``COMPOSER_MAX_YAML_CHARS``, ``COMPOSER_MAX_VALUES``, ``COMPOSER_MAX_DEPTH``), so a
    small hostile file cannot exhaust memory or the stack. Pass the ``budget`` of the blueprint a
    file belongs to (an imported file) so the bounds hold for all its files together; the
    returned map carries the budget.
    """
    smap = SourceMap(file)
    smap.budget = budget if budget is not None else Budget()
    smap.budget.read(text, file)
    node = _compose(text, file, smap.budget)
    if node is None:
        return {}, smap
    problems: list[Problem] = []
    try:
        data = _construct(node, (), smap, problems, smap.budget)
    except _TooLarge as exc:
        raise BlueprintError([exc.problem]) from None
    if problems:
        raise BlueprintError(problems)
    return data, smap


def _compose(text: str, file: str | None, budget: Budget) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise BlueprintError([Problem((), f"YAML syntax error: {reason}", file=file, line=line)]) from None
    except RecursionError:
        raise BlueprintError([Problem((), f"values nested too deeply (a blueprint nests at most {budget.max_depth} levels)", file=file)]) from None


def parse_scalar(text: str, budget: Budget | None = None) -> Any:
    """A command-line value read as a YAML scalar or flow collection (``4``, ``true``, ``[1, 2]``);
    text that is not YAML stays text.

    Read with the bounds of :func:`read_yaml`; aliases may not make a value hold more values than
    it has characters (so a ``--set`` value is never larger than what was typed). ``budget``:
    the blueprint's, to count the values against its total."""
    if not text.strip():
        return ""
    own = Budget()
    own.max_nodes = min(own.max_nodes, len(text) + 1)
    own.read(text, "--set")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise BlueprintError([Problem((), f"--set value nested too deeply (at most {own.max_depth} levels)", file="--set")]) from None
    if node is None:
        return None
    problems: list[Problem] = []
    smap = SourceMap("--set")
    try:
        value = _construct(node, (), smap, problems, own)
        if budget is not None:
            budget.count(own.nodes, (), "--set", None)
    except _TooLarge as exc:
        shown = f"{text[:40]!r}{'...' if len(text) > 40 else ''}"
        by_aliases = own.nodes > own.max_nodes and own.max_nodes <= len(text) + 1
        reason = (f"its aliases expand it to more values than it has characters ({len(text):,}); write the value out" if by_aliases
                  else exc.problem.message.replace("the document", "it"))
        raise BlueprintError([Problem((), f"--set value {shown}: {reason}", file="--set")]) from None
    if problems:
        raise BlueprintError([Problem((), f"--set value {text[:40]!r}: {p.message}", file="--set") for p in problems])
    return value


def check_tree(data: Any, what: str = "the blueprint", budget: Budget | None = None) -> None:
    """Refuse data (a blueprint after ``--set`` overrides, a blueprint given as a dict, variables
    after substitution) that holds more values or nests deeper than the bounds of
    :func:`read_yaml`. The walk is iterative and stops at the bound, so it is cheap even on a
    structure that shares one list a million times."""
    budget = budget or Budget()
    limit, depth_limit = budget.max_nodes, budget.max_depth
    count = 0
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        count += 1
        if count > limit:
            raise BlueprintError([Problem(path[:8], f"{what} holds more than {limit:,} values; {VALUES.exceeded(count, limit)}")])
        if len(path) > depth_limit:
            raise BlueprintError([Problem(path[:8], f"{what} nests values more than {depth_limit} levels deep; {DEPTH.exceeded(len(path), depth_limit)}")])
        if isinstance(node, dict):
            stack.extend((v, path + (k,)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, path + (i,)) for i, v in enumerate(node))
