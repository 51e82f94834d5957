"""A small, safe expression language for blueprints: ``${2 * d}``, ``${d // heads}``, constraints.

Expressions are parsed with :mod:`ast` and walked node by node; only numbers, strings, booleans,
names, dotted paths (``blocks.moe.experts``), arithmetic (``+ - * / // % **``), comparisons,
``and``/``or``/``not``, parentheses and the functions ``min``/``max``/``abs`` are accepted. Nothing
is ever passed to ``eval``; powers and results are bounded so a short expression cannot ask
for a huge number.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any, Callable

from composer.configs._limits import TEXT_CHARS

__all__ = ["ExprError", "evaluate", "names_in", "REFERENCE", "substitute"]

REFERENCE = re.compile(r"\$\{([^{}]*)\}")
MAX_MAGNITUDE = 10**15

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCTIONS = {"min": min, "max": max, "abs": abs}


class ExprError(ValueError):
    """An expression that cannot be read or evaluated; the message says why."""


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExprError(f"expected a number, got {value!r}")
    return value


def _check(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        raise ExprError("the result is not a number")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
        shown = f"{value:.3g}" if isinstance(value, float) else f"{str(value)[:4]}... ({len(str(abs(value)))} digits)"
        raise ExprError(f"the result {shown} is too large (at most {MAX_MAGNITUDE:.0e})")
    if isinstance(value, complex):
        raise ExprError("the result is not a real number")
    return value


def _eval(node: ast.AST, lookup: Callable[[str], Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, lookup)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        return _check(node.value)
    name = _dotted(node)
    if name is not None:
        if any(part.startswith("_") for part in name.split(".")):
            raise ExprError(f"'{name}': names may not start with '_'")
        if name in ("true", "false"):
            return name == "true"
        return lookup(name)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, lookup)
        if isinstance(node.op, ast.Not):
            return not value
        if isinstance(node.op, ast.USub):
            return -_number(value)
        if isinstance(node.op, ast.UAdd):
            return _number(value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _number(_eval(node.left, lookup)), _number(_eval(node.right, lookup))
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > MAX_MAGNITUDE):
            raise ExprError("power too large")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except OverflowError:
            raise ExprError(f"the result is too large (at most {MAX_MAGNITUDE:.0e})") from None
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, lookup) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, lookup)
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                raise ExprError(f"unsupported comparison {type(op).__name__}")
            right = _eval(right_node, lookup)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError:
                raise ExprError(f"cannot compare {left!r} with {right!r}") from None
            left = right
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        args = [_number(_eval(a, lookup)) for a in node.args]
        if not args:
            raise ExprError(f"{node.func.id}() needs arguments")
        if node.func.id == "abs":
            if len(args) != 1:
                raise ExprError(f"abs() takes one number, got {len(args)}")
            return abs(args[0])
        return _FUNCTIONS[node.func.id](args)  # min/max of the numbers given (one is allowed)
    raise ExprError(f"'{ast.unparse(node)}' is not allowed (numbers, names, + - * / // % **, comparisons, and/or/not, min/max/abs)")


def _parse(text: str) -> ast.Expression:
    if len(text) > 500:
        raise ExprError("expression longer than 500 characters")
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot read '{text}': {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # 5,000-digit literals, 200 nested parentheses
        raise ExprError(f"cannot read '{text[:60]}': {type(exc).__name__}") from None


def evaluate(text: str, lookup: Callable[[str], Any]) -> Any:
    """Value of an expression; ``lookup(name)`` gives a name's (or dotted path's) value or raises
    :class:`ExprError`."""
    return _eval(_parse(text), lookup)


def names_in(text: str) -> list[str]:
    """Names and dotted paths an expression reads."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        name = _dotted(node)
        if name is not None:
            found.append(name)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(_parse(text))
    return found


def substitute(text: str, lookup: Callable[[str], Any]) -> Any:
    """A string with ``${...}`` references: exactly one reference gives its typed value, references
    inside other text are interpolated as text."""
    whole = REFERENCE.fullmatch(text.strip())
    if whole:
        return evaluate(whole.group(1), lookup)
    limit, pieces, size, end = TEXT_CHARS.value(), [], 0, 0
    for match in REFERENCE.finditer(text):
        piece = str(evaluate(match.group(1), lookup))
        pieces += [text[end:match.start()], piece]
        size += match.start() - end + len(piece)
        end = match.end()
        if size > limit:
            raise ExprError(f"the interpolated text grows past {limit:,} characters; {TEXT_CHARS.exceeded(size, limit)}")
    pieces.append(text[end:])
    return "".join(pieces)
