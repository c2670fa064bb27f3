"""A calculator that walks the ``ast`` of an arithmetic expression; it never calls ``eval``.

Results follow Python's arithmetic: ``/`` always gives a float (``6/3`` is
``"2.0"``, ``10/4`` is ``"2.5"``), ``//`` and ``%`` on ints give ints, and
floats are printed with ``repr`` (shortest round-tripping form, so
``0.1+0.2`` is ``"0.30000000000000004"``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from tools.base import Tool, ToolFailure

Number = int | float

ALLOWED = "only numbers and + - * / // % ** (with parentheses) are allowed"
MAX_INT_DIGITS = 4_000
"""Largest integer result, in decimal digits (Python refuses to print ints over 4,300 digits)."""

_LOG10_2 = math.log10(2)

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_SYMBOLS: dict[type[ast.operator], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.MatMult: "@",
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class CalculatorArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(
        min_length=1,
        max_length=500,
        description="An arithmetic expression, e.g. '(2 + 3) * 4 ** 2 / 7'.",
    )


class CalculatorTool(Tool):
    name = "calculator"
    description = (
        "Evaluate an arithmetic expression exactly. Supports numbers, parentheses, "
        "+ - * / // % and ** (power; ^ is not power). No variables or functions."
    )
    Args = CalculatorArgs

    async def run(self, args: CalculatorArgs) -> str:
        return format_number(evaluate(args.expression))


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression.

    Raises:
        ToolFailure: the expression is malformed, uses anything but numbers and the
            allowed operators, divides by zero or has a result too large to hold.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolFailure(f"invalid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ToolFailure("the expression is too deeply nested") from None
    try:
        return _eval(tree.body)
    except RecursionError:
        raise ToolFailure("the expression is too deeply nested") from None


def format_number(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(value + 0.0)  # NOTE: + 0.0 turns -0.0 into 0.0.


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op is ast.BitXor:
            raise ToolFailure("'^' is not supported; use ** for powers (e.g. 2 ** 3)")
        if op is ast.Pow:
            return _checked(_power(_eval(node.left), _eval(node.right)))
        if op in _BINARY:
            return _checked(_apply(_BINARY[op], _eval(node.left), _eval(node.right)))
    raise ToolFailure(f"{_describe(node)} is not allowed: {ALLOWED}")


def _constant(value: object) -> Number:
    # NOTE: bool is a subclass of int; True and False are not numbers here.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _checked(value)
    kind = "a string" if isinstance(value, str | bytes) else f"the constant {value!r}"
    raise ToolFailure(f"{kind} is not allowed: {ALLOWED}")


def _apply(op: Callable[[Number, Number], Number], left: Number, right: Number) -> Number:
    try:
        return op(left, right)
    except ZeroDivisionError:
        raise ToolFailure("division by zero") from None
    except OverflowError:
        raise ToolFailure("the result is too large") from None


def _power(base: Number, exponent: Number) -> Number:
    if base < 0 and isinstance(exponent, float) and not exponent.is_integer():
        raise ToolFailure("a negative number to a fractional power is not a real number")
    # NOTE: guard before computing: 9 ** 9 ** 9 would take minutes and gigabytes.
    int_power = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if int_power and exponent * math.log10(abs(base)) >= MAX_INT_DIGITS:
        raise ToolFailure(f"the result is too large (more than {MAX_INT_DIGITS} digits)")
    return _apply(operator.pow, base, exponent)


def _checked(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolFailure("the result is too large (beyond the float range, about 1.8e308)")
    if isinstance(value, int) and value.bit_length() * _LOG10_2 > MAX_INT_DIGITS:
        raise ToolFailure(f"the result is too large (more than {MAX_INT_DIGITS} digits)")
    return value


def _describe(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, ast.BinOp):
        return f"the operator {_SYMBOLS.get(type(node.op), type(node.op).__name__)!r}"
    if isinstance(node, ast.UnaryOp):
        return "the operator 'not'" if isinstance(node.op, ast.Not) else "the operator '~'"
    if isinstance(node, ast.Compare | ast.BoolOp):
        return "a comparison or logical operator"
    return f"the syntax {type(node).__name__}"
