"""calculator: arithmetic on a parsed expression tree, never `eval`.

Only the node types listed below are evaluated; anything else (names, attributes, calls of
non-whitelisted functions, strings, comprehensions, lambdas) is refused before any work is done.
Integer growth is checked *before* each power or product, so no expression can make the
process spend seconds or gigabytes on one huge number.
"""

from __future__ import annotations

import ast
import math
import operator
import threading
import warnings
from collections.abc import Callable

from dytopo.errors import ToolError
from dytopo.syntax import parse
from dytopo.tools import tool

Number = int | float

MAX_CHARS = 500
# About 3000 decimal digits: far beyond everyday arithmetic, far below anything slow, and under
# Python's 4300-digit int-to-str limit so every result can be printed.
MAX_BITS = 10_000
MAX_ROUND_DIGITS = 100
_PARSE_LOCK = threading.Lock()

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
# name -> (function, fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 2),
    "exp": (math.exp, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
    "min": (min, 2, 50),
    "max": (max, 2, 50),
}
_ALLOWED = (
    "numbers, + - * / // % **, parentheses, the functions "
    + ", ".join(_FUNCTIONS)
    + " and the constants pi and e"
)


def _refuse(what: str) -> ToolError:
    return ToolError(f"calculator does not allow {what}; it understands {_ALLOWED}")


def _bits(value: Number) -> float:
    """log2 of the magnitude; math.log2 is exact enough and fast even for huge ints."""
    return math.log2(abs(value)) if value else 0.0


def _check_growth(op: type[ast.operator], left: Number, right: Number) -> None:
    if not (isinstance(left, int) and isinstance(right, int)):
        return  # float overflow raises OverflowError by itself, instantly
    if op is ast.Pow and right > 0 and abs(left) > 1 and right * _bits(left) > MAX_BITS:
        raise ToolError(
            f"calculator refuses {left} ** {right}: the result would have more than "
            f"{MAX_BITS} bits (about 3000 digits)"
        )
    if op is ast.Mult and _bits(left) + _bits(right) > MAX_BITS:
        raise ToolError(f"calculator refuses a product of more than {MAX_BITS} bits")


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        # bool is an int subclass, complex is a number: neither belongs in this calculator
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _real(value)  # 1e999 parses as inf
        raise _refuse(f"the literal {value!r}")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        _check_growth(type(node.op), left, right)
        return _real(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise _refuse(f"the name {node.id!r}")
    if isinstance(node, ast.Call):
        return _call(node)
    raise _refuse(_describe(node))


def _real(value: Number | complex) -> Number:
    if isinstance(value, complex):  # e.g. (-8) ** (1/3)
        raise ToolError("calculator works with real numbers only; that result is complex")
    if isinstance(value, float) and not math.isfinite(value):  # 1e308 * 10 overflows quietly
        raise OverflowError
    return value


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        raise _refuse(f"calling {ast.unparse(node.func)[:60]}")
    name = node.func.id
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise _refuse(f"keyword or * arguments in {name}()")
    fn, fewest, most = _FUNCTIONS[name]
    if not fewest <= len(node.args) <= most:
        expected = str(fewest) if fewest == most else f"{fewest} to {most}"
        raise ToolError(f"{name}() takes {expected} arguments, got {len(node.args)}")
    args = [_evaluate(a) for a in node.args]
    if name == "round" and len(args) == 2:
        digits = args[1]
        # round(x, -10**9) would build 10**(10**9) internally
        if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
            raise ToolError(f"round()'s digits must be a whole number within ±{MAX_ROUND_DIGITS}")
    return _real(fn(*args))


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"attribute access (.{node.attr})"
    if isinstance(node, ast.Subscript):
        return "subscripts ([...])"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the operator {type(node.op).__name__}"
    return f"{type(node).__name__} expressions"


def _parse(expression: str) -> ast.Expression:
    try:
        expression.encode("utf-8")
    except UnicodeEncodeError as exc:  # ast.parse would fail on it with an unrelated message
        bad = expression[exc.start]
        raise ToolError(
            f"calculator cannot read the character {bad!r} at position {exc.start}: it is not "
            "valid Unicode (a lone surrogate); write the expression in plain text"
        ) from None
    # A tokenizer warning ("invalid decimal literal" for `1if`) would go to stderr; as an error
    # it becomes the reason for the refusal. The lock: warning filters are process-wide and
    # sync tools run in threads.
    with _PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return parse(expression.strip(), mode="eval")
        except SyntaxError as exc:
            raise ToolError(f"calculator cannot parse the expression: {exc.msg}") from None
        except ValueError as exc:  # NUL bytes, before Python 3.11.4 made them a SyntaxError
            raise ToolError(f"calculator cannot parse the expression: {exc}") from None
        except (RecursionError, MemoryError):
            raise ToolError("calculator cannot parse the expression: too deeply nested") from None


def _format(value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    # 15 significant digits hide binary rounding noise (0.1 + 0.2 -> 0.3)
    return format(value, ".15g")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (integers) or in double precision.

    Args:
        expression: e.g. "2 * (3 + 4) ** 2", "sqrt(2) / 3", "log(1000, 10)", "max(3, 7.5)".
    """
    if len(expression) > MAX_CHARS:
        raise ToolError(f"calculator takes expressions of at most {MAX_CHARS} characters")
    try:
        return _format(_evaluate(_parse(expression)))
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large for a floating-point number") from None
    except ValueError as exc:  # math domain errors: sqrt(-1), log(0)
        raise ToolError(f"math error: {exc}") from None
    except RecursionError:
        raise ToolError("the expression is too deeply nested") from None
