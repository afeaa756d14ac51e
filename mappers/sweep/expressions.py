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
    node: Any = source if isinstance(source, Mapping) else source.to_dict()
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
        try:
            self.tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(f"expression {text!r} does not parse: {exc.msg}") from None
        self.bases: dict[str, Any] = {}
        self._check(self.tree, names, arch)

    def _check(self, node: ast.AST, names: set[str], arch: ArchSpec | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
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
        if integer:
            if float(result).is_integer():
                return int(result)
            raise ExpressionError(
                f"expression {self.text!r} gives {result!r}, but the path holds an integer; wrap it in round(...)"
            )
        return float(result)

    def _eval(self, node: ast.AST, names: Mapping[str, Any], overrides: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return names[node.id]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](
                self._eval(node.left, names, overrides), self._eval(node.right, names, overrides)
            )
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, names, overrides))
        fn = node.func.id  # a Call, as _check allowed
        if fn == "base":
            return self.bases[node.args[0].value]
        if fn == "value":
            path = node.args[0].value
            return overrides[path] if path in overrides else self.bases[path]
        return _FUNCTIONS[fn](*(self._eval(a, names, overrides) for a in node.args))


# --------------------------------------------------------------------------------------------------- sampling
