"""Derived-value expressions of a sweep spec, and reading a preset's value at a dotted path.

Both the spec reader (which checks a ``derived:`` expression once) and the point generator (which evaluates it at
every point) use them; they live here so that neither imports the other.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

from einsum.errors import SpecError
from simulator.specs import ArchSpec

MISSING = object()


def base_value(source: ArchSpec | Mapping[str, Any], dotted: str) -> Any:
    """A preset's value at a dotted path (list entries by name or [index]); MISSING when absent.

    source: an architecture, or a device's plain data.
    """
    node: Any = source if isinstance(source, Mapping) else source.to_dict(resolved=True)  # derived figures too
    for part in dotted.split("."):
        name, _, rest = part.partition("[")
        steps: list[Any] = [name] if name else []
        steps += [int(i) for i in re.findall(r"\d+", "[" + rest)] if rest else []
        for step in steps:
            if (isinstance(node, Mapping) and step in node) or (
                isinstance(node, list) and isinstance(step, int) and step < len(node)
            ):
                node = node[step]
            elif isinstance(node, list) and any(isinstance(x, dict) and x.get("name") == step for x in node):
                node = next(x for x in node if isinstance(x, dict) and x.get("name") == step)
            else:
                return MISSING
    return node


class ExpressionError(SpecError):
    """A derived-value expression that does not parse or cannot be evaluated."""


MAX_CHARS = 1000
"""The longest expression read (a derived value is a short formula; this bounds parsing and evaluation)."""
MAX_BITS = 1024
"""Every intermediate and final value stays within 2**1024 (a float's range): an integer power whose result
would exceed it is refused before it is computed, so ``10 ** 10 ** 10`` is an error, not a hang."""
MAX_ROUND_DIGITS = 400
"""round(x, n) takes |n| up to this (a larger n means nothing for a finite float and costs 10**n)."""


_FUNCTIONS = {
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "sqrt": math.sqrt,
    "log2": math.log2,
    "ceil": math.ceil,
    "floor": math.floor,
}
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class Expression:
    """Arithmetic over axis values: numbers, + - * / // % **, ``min max round int float sqrt log2 ceil
    floor``, ``base('path')`` (the preset's value) and ``value('path')`` (this point's value at the path).

    >>> from simulator.specs import load_arch
    >>> e = Expression("base('levels.global_buffer.area_um2') * words / 8388608", {"words"}, load_arch("fusemax-cloud"))
    >>> e.evaluate({"words": 4194304}, {}, integer=False)
    42100687.26
    """

    def __init__(self, text: str, names: set[str], arch: ArchSpec | None):
        self.text = text
        if len(text) > MAX_CHARS:
            raise ExpressionError(
                f"expression {text[:60]!r}... is {len(text)} characters long; at most {MAX_CHARS} are read"
            )
        try:
            self.tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(f"expression {text!r} does not parse: {exc.msg}") from None
        except (RecursionError, MemoryError):
            raise ExpressionError(f"expression {text!r} is nested too deeply") from None
        self.bases: dict[str, Any] = {}
        try:
            self._check(self.tree, names, arch)
        except RecursionError:
            raise ExpressionError(f"expression {text!r} is nested too deeply") from None

    def _check(self, node: ast.AST, names: set[str], arch: ArchSpec | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            self._bounded(node.value, node)
            return
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ExpressionError(
                    f"expression {self.text!r}: unknown name {node.id!r}; axes and earlier derived values: "
                    f"{', '.join(sorted(names)) or 'none'}"
                )
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left, names, arch)
            self._check(node.right, names, arch)
            return
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand, names, arch)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            fn = node.func.id
            if fn in ("base", "value"):
                arg = node.args[0] if len(node.args) == 1 else None
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    raise ExpressionError(f"expression {self.text!r}: {fn}() takes one quoted dotted path")
                if arch is not None:
                    base = base_value(arch, arg.value)
                    if base is MISSING or isinstance(base, bool) or not isinstance(base, int | float):
                        raise ExpressionError(
                            f"expression {self.text!r}: {fn}({arg.value!r}): the preset has no number at that path"
                        )
                    self.bases[arg.value] = base
                return
            if fn in _FUNCTIONS:
                for arg in node.args:
                    self._check(arg, names, arch)
                return
            allowed = ", ".join((*_FUNCTIONS, "base", "value"))
            raise ExpressionError(f"expression {self.text!r}: unknown function {fn!r}; allowed: {allowed}")
        raise ExpressionError(
            f"expression {self.text!r}: {ast.unparse(node)!r} is not allowed; use numbers, axis names, "
            "+ - * / // % ** and the functions min, max, round, int, float, sqrt, log2, ceil, floor, base, value"
        )

    def evaluate(self, names: Mapping[str, Any], overrides: Mapping[str, Any], integer: bool) -> int | float:
        """The value at one point; integer: the path holds an integer, so the result must be integral."""
        try:
            result = self._eval(self.tree, names, overrides)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise ExpressionError(f"expression {self.text!r}: {exc}") from None
        if isinstance(result, bool) or not isinstance(result, int | float) or not math.isfinite(result):
            raise ExpressionError(f"expression {self.text!r} gives {result!r}, not a finite number")
        if integer and isinstance(result, int) and not -(2**63) <= result < 2**63:
            raise ExpressionError(f"expression {self.text!r} gives {result}, beyond a 64-bit integer")
        if integer:
            if float(result).is_integer():
                return int(result)
            raise ExpressionError(
                f"expression {self.text!r} gives {result!r}, but the path holds an integer; wrap it in round(...)"
            )
        return float(result)

    def _bounded(self, value: Any, node: ast.AST) -> Any:
        """value, if it is a real number within 2**MAX_BITS; else the error naming the part of the expression."""
        if isinstance(value, complex):
            raise ExpressionError(f"expression {self.text!r}: {ast.unparse(node)} is not a real number")
        if isinstance(value, int) and value.bit_length() > MAX_BITS:
            raise ExpressionError(
                f"expression {self.text!r}: {ast.unparse(node)} is about 10**{value.bit_length() * math.log10(2):.0f}; "
                f"values are limited to 2**{MAX_BITS} (about 1.8e308)"
            )
        return value

    def _power(self, base: Any, exponent: Any, node: ast.AST) -> Any:
        """base ** exponent, refused before it is computed when the result would pass 2**MAX_BITS."""
        if isinstance(base, int | float) and isinstance(exponent, int | float) and exponent > 0 and abs(base) > 1:
            bits = float(exponent) * math.log2(abs(base))
            if bits > MAX_BITS:
                raise ExpressionError(
                    f"expression {self.text!r}: {ast.unparse(node)} would be about 2**{bits:.3g} "
                    f"({_show(base)} ** {_show(exponent)}); values are limited to 2**{MAX_BITS} (about 1.8e308)"
                )
        return base**exponent

    def _eval(self, node: ast.AST, names: Mapping[str, Any], overrides: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return names[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, names, overrides), self._eval(node.right, names, overrides)
            if isinstance(node.op, ast.Pow):
                return self._bounded(self._power(left, right, node), node)
            return self._bounded(_BINARY[type(node.op)](left, right), node)
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, names, overrides))
        fn = node.func.id  # a Call, as _check allowed
        if fn == "base":
            return self.bases[node.args[0].value]
        if fn == "value":
            path = node.args[0].value
            return overrides[path] if path in overrides else self.bases[path]
        args = [self._eval(a, names, overrides) for a in node.args]
        if fn == "round" and len(args) == 2 and isinstance(args[1], int) and abs(args[1]) > MAX_ROUND_DIGITS:
            raise ExpressionError(
                f"expression {self.text!r}: {ast.unparse(node)}: round to at most {MAX_ROUND_DIGITS} digits"
            )
        return self._bounded(_FUNCTIONS[fn](*args), node)


def _show(value: Any) -> str:
    """A number as a message shows it (a long integer shortened)."""
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


# --------------------------------------------------------------------------------------------------- sampling
