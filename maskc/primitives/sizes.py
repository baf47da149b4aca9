"""Sizes and counts that may be expressions in n: `every: sqrt(n)`, `width: n / 64`, `per_row: log2(n)`.

The literature ties some parameters to the sequence length (the Sparse Transformer's l ≈ √n, the
Routing Transformer's √n clusters), so a parameter is a whole number or a small expression over
`n`, read with Python's `ast` and evaluated by the walk below (never `eval`).

Grammar: whole numbers, the name `n`, `+ - * / // %`, parentheses, and the functions `sqrt`,
`log2`, `min`, `max`, `ceil`, `floor`. Every step is integer arithmetic: `/` and `//` divide and
round down, `sqrt(x)` and `log2(x)` are rounded down; `ceil(...)` written directly around a
division, `sqrt` or `log2` rounds that one up instead (`ceil(n / 64)`, `ceil(sqrt(n))`), and
`floor(...)` around one of them says the default out loud. Expressions are evaluated when a
pattern is lowered, at the compile n, and the result must be in the parameter's range there.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

from pydantic import PlainValidator

from maskc import limits
from maskc.errors import SpecError
from maskc.origin import Origin

#: Longest expression text accepted (a parameter, not a program).
MAX_EXPRESSION_CHARS = 200
_FUNCTIONS = {"sqrt": 1, "log2": 1, "ceil": 1, "floor": 1, "min": None, "max": None}
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_GRAMMAR = "whole numbers, n, + - * / // %, parentheses, sqrt, log2, min, max, ceil, floor"


class ExpressionError(ValueError):
    """An expression in n that is not in the grammar, or that has no value at some n."""


def _check(node: ast.AST) -> None:
    """Refuse anything outside the grammar."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            raise ExpressionError(f"{node.value!r} is not a whole number")
    elif isinstance(node, ast.Name):
        if node.id != "n":
            raise ExpressionError(f"unknown name {node.id!r}: the only variable is n")
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        _check(node.operand)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, _OPERATORS):
        _check(node.left)
        _check(node.right)
    elif isinstance(node, ast.Call):
        _check_call(node)
    else:
        raise ExpressionError(f"`{ast.unparse(node)}` is not allowed (use {_GRAMMAR})")


def _check_call(node: ast.Call) -> None:
    name = node.func.id if isinstance(node.func, ast.Name) else None
    if name not in _FUNCTIONS or node.keywords:
        raise ExpressionError(f"`{ast.unparse(node)}`: functions are {', '.join(_FUNCTIONS)}")
    arity = _FUNCTIONS[name]
    if (arity is None and len(node.args) < 2) or (arity is not None and len(node.args) != arity):
        wanted = "two or more arguments" if arity is None else "one argument"
        raise ExpressionError(f"`{ast.unparse(node)}`: {name} takes {wanted}")
    if name in ("ceil", "floor") and not _rounds(node.args[0]):
        raise ExpressionError(
            f"`{ast.unparse(node)}`: {name} applies to a division, sqrt or log2 written directly inside it, "
            f"e.g. {name}(n / 64)"
        )
    for arg in node.args:
        _check(arg)


def _rounds(node: ast.AST) -> bool:
    """Whether the node is an operation that rounds: a division, sqrt or log2."""
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, (ast.Div, ast.FloorDiv))
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("sqrt", "log2")


@lru_cache(maxsize=256)
def parse_expression(text: str) -> ast.expr:
    """The checked syntax tree of an expression in n; ExpressionError says what is wrong."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"an expression in n is at most {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ExpressionError(f"{text!r} is neither a whole number nor an expression in n ({_GRAMMAR})") from None
    _check(tree.body)
    return tree.body


def _divide(a: int, b: int, up: bool) -> int:
    if b == 0:
        raise ExpressionError("division by zero")
    return -(-a // b) if up else a // b


def _sqrt(x: int, up: bool) -> int:
    if x < 0:
        raise ExpressionError(f"sqrt of a negative number ({x})")
    root = math.isqrt(x)
    return root + (up and root * root < x)


def _log2(x: int, up: bool) -> int:
    if x <= 0:
        raise ExpressionError(f"log2 of {x}, which is not positive")
    return (x - 1).bit_length() if up else x.bit_length() - 1


_BINARY: dict[type, Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
}


def _value(node: ast.AST, n: int, up: bool = False) -> int:
    """The node's integer value at n; `up` rounds this node's own division, sqrt or log2 up."""
    if isinstance(node, ast.Constant):
        return int(node.value)
    if isinstance(node, ast.Name):
        return n
    if isinstance(node, ast.UnaryOp):
        value = _value(node.operand, n)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        a, b = _value(node.left, n), _value(node.right, n)
        if isinstance(node.op, (ast.Div, ast.FloorDiv)):
            return _divide(a, b, up)
        if isinstance(node.op, ast.Mod):
            if b == 0:
                raise ExpressionError("modulo by zero")
            return a % b
        return _BINARY[type(node.op)](a, b)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    name, args = node.func.id, node.args
    if name in ("ceil", "floor"):
        return _value(args[0], n, up=name == "ceil")
    if name in ("min", "max"):
        values = [_value(arg, n) for arg in args]
        return min(values) if name == "min" else max(values)
    x = _value(args[0], n)
    return _sqrt(x, up) if name == "sqrt" else _log2(x, up)


def evaluate(value: int | str, n: int) -> int:
    """A parameter's value at sequence length n: the number itself, or the expression evaluated."""
    if isinstance(value, int):
        return value
    return _value(parse_expression(value), n)


def _validator(minimum: int) -> Callable[[Any], int | str]:
    def check(value: Any) -> int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"expected a whole number or an expression in n, got {type(value).__name__}")
        if isinstance(value, int):
            if value < minimum:
                bound = "greater than or equal to 0" if minimum == 0 else f"greater than {minimum - 1}"
                raise ValueError(f"must be {bound}, got {value}")
            return value
        try:
            parse_expression(value)
        except ExpressionError as err:
            raise ValueError(str(err)) from None
        return value

    return check


#: A size ≥ 0: a whole number or an expression in n.
Size = Annotated[int | str, PlainValidator(_validator(0))]
#: A size ≥ 1: a whole number or an expression in n.
PositiveSize = Annotated[int | str, PlainValidator(_validator(1))]


def size_at(value: int | str, n: int, path: Origin | str, minimum: int) -> int:
    """The value at n, or a SpecError at `path` when the expression has none or is below `minimum`."""
    try:
        result = evaluate(value, n)
    except ExpressionError as err:
        raise SpecError(f"`{value}` at n = {n}: {err}", path=path) from None
    if result < minimum:
        raise SpecError(f"`{value}` is {result} at n = {n}; it must be at least {minimum}", path=path)
    if result > limits.MAX_PARAMETER:
        raise SpecError(f"`{value}` at n = {n}: " + limits.exceeds("the value", result, "MAX_PARAMETER"), path=path)
    return result
