"""What the Timeloop and AccelForge converters share: the result of an import or export (the files, and every
field that could not be represented, by dotted key), a safe YAML loader that also reads the formats' own tags
(``!Component``, ``!Memory``, ...), the few Jinja forms AccelForge specs use, safe arithmetic for the
expressions both formats allow in numbers, and the Einsum text a product of tensor accesses becomes."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from einsum import yamlio
from einsum.errors import SpecError
from einsum.yamlio import LineDict, Problems, read_yaml_text_data, show


@dataclass
class Converted:
    """What an import or export produced: plain data per output file, and what could not be carried over."""

    files: dict[str, Any] = field(default_factory=dict)
    """Output file name -> its content: YAML-ready data, or text (an ``.einsum`` file)."""
    unrepresented: list[tuple[str, str]] = field(default_factory=list)
    """(dotted key of the input, why it has no counterpart in the output): nothing is dropped silently."""
    assumed: list[tuple[str, str]] = field(default_factory=list)
    """(dotted key of the output, the value assumed and why): defaults the input did not give."""

    def drop(self, key: str, why: str) -> None:
        self.unrepresented.append((key, why))

    def assume(self, key: str, why: str) -> None:
        self.assumed.append((key, why))

    def write(self, out_dir: str | Path) -> list[str]:
        """Write every file under ``out_dir`` (created); returns their paths."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            paths = []
            for name, content in self.files.items():
                path = out / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content if isinstance(content, str) else dump_yaml(content), encoding="utf-8")
                paths.append(str(path))
        except OSError as exc:
            raise SpecError(f"--out {out_dir}: cannot write: {exc.strerror} ({exc.filename})") from None
        return paths

    def to_dict(self, paths: list[str] | None = None) -> dict[str, Any]:
        return {
            "files": paths if paths is not None else list(self.files),
            "unrepresented": [{"key": k, "why": w} for k, w in self.unrepresented],
            "assumed": [{"key": k, "why": w} for k, w in self.assumed],
        }


def dump_yaml(data: Any) -> str:
    """YAML text of plain data; a :class:`Tagged` mapping is written with its tag (``!Component``)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


class Tagged(dict):
    """A mapping that carries a YAML tag (``!Component``): what the formats' tagged nodes read into."""

    tag: str = ""

    def __init__(self, tag: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag = tag


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Tagged, lambda d, data: d.represent_mapping(data.tag, dict(data)))
_Dumper.add_representer(LineDict, lambda d, data: d.represent_dict(dict(data)))


class TagLoader(yamlio._Loader):
    """The spec loader (safe, duplicate keys refused, lines kept) that also reads ``!Name`` tags: a tagged mapping
    becomes a :class:`LineDict` with ``tag`` set; a tag on anything else is refused, naming its line."""


def _construct_tagged(loader: TagLoader, suffix: str, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"tag !{suffix} is allowed only on a mapping", node.start_mark
        )
    out = loader.construct_mapping(node, deep=True)
    out.tag = f"!{suffix}"
    return out


TagLoader.add_multi_constructor("!", _construct_tagged)


def tag_of(value: Any) -> str | None:
    """The tag a mapping was read with (``!Component``), or None."""
    return getattr(value, "tag", None)


def read_tagged(path: str | Path, origin: str | None = None, text: str | None = None) -> Any:
    """Parse a YAML file (or ``text``) with :class:`TagLoader`; bad syntax raises SpecError naming file:line."""
    origin = origin or str(path)
    if text is None:
        text = read_text(path, origin)
    return read_yaml_text_data(text, origin, TagLoader)


def read_text(path: str | Path, origin: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{origin}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{origin}: not a YAML text file (byte {exc.start} is not UTF-8)") from None


# ----------------------------------------------------------------------------------------------- expressions

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}


def arithmetic(text: Any, names: Mapping[str, Any] | None = None) -> float | int | None:
    """The value of a number or an arithmetic expression (``1024*1024*8``, ``1 / (8 * 614e9)``, ``inf``, names
    from ``names``); None when it is anything else (a function call, a comparison, an unknown name)."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return text
    if not isinstance(text, str) or len(text) > 200:
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    env = {"inf": math.inf, **(names or {})}

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Constant) and node.value == "inf":
            return math.inf
        if isinstance(node, ast.Name) and node.id in env:
            value = env[node.id]
            return arithmetic(value) if isinstance(value, str) else value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _BINOPS[type(node.op)](left, right)
        raise ValueError("not arithmetic")

    try:
        value = ev(tree)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


_SET_RE = re.compile(r"\{%-?\s*set\s+([A-Za-z_]\w*)\s*=\s*(.*?)\s*-?%\}")
_DEFAULT_RE = re.compile(r"([A-Za-z_]\w*)\s*\|\s*default\((.*)\)\Z")
_SUBST_RE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def render_jinja(text: str, origin: str, variables: Mapping[str, Any] | None = None) -> str:
    """Render the Jinja subset AccelForge's example specs use: ``{% set X = X | default(EXPR) %}``,
    ``{% set X = EXPR %}`` and ``{{EXPR}}`` with arithmetic ``EXPR``; ``variables`` override the defaults.
    Any other Jinja construct raises SpecError naming the line."""
    values: dict[str, Any] = dict(variables or {})
    out = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        m = _SET_RE.search(line)
        if m:
            name, expr = m.group(1), m.group(2)
            d = _DEFAULT_RE.fullmatch(expr)
            if d and d.group(1) == name and name in values:
                line = line[: m.start()] + line[m.end() :]
                out.append(line if line.strip() else "\n" * line.endswith("\n"))
                continue
            value = _jinja_value(d.group(2) if d else expr, values)
            if value is None:
                raise SpecError(
                    f"{origin}:{lineno}: {{% set {name} %}}: expected a number, a quoted string or arithmetic, "
                    f"got {expr!r}"
                )
            values[name] = value
            line = line[: m.start()] + line[m.end() :]
            out.append(line if line.strip() else "\n" * line.endswith("\n"))
            continue
        if "{%" in line:
            raise SpecError(
                f"{origin}:{lineno}: unsupported Jinja statement {line.strip()!r}; only "
                "{% set NAME = NAME | default(VALUE) %} and {{ EXPR }} are read (render the spec first)"
            )

        def subst(m: re.Match, lineno: int = lineno) -> str:
            value = _jinja_value(m.group(1), values)
            if value is None:
                raise SpecError(
                    f"{origin}:{lineno}: {{{{ {m.group(1)} }}}}: expected arithmetic of set names "
                    f"({', '.join(values) or 'none set'})"
                )
            return str(value)

        out.append(_SUBST_RE.sub(subst, line))
    return "".join(out)


def _jinja_value(expr: str, values: Mapping[str, Any]) -> Any:
    expr = expr.strip()
    if len(expr) >= 2 and expr[0] == expr[-1] and expr[0] in "'\"":
        return expr[1:-1]
    if expr in values:
        return values[expr]
    value = arithmetic(expr, values)
    if isinstance(value, float) and value.is_integer() and "." not in expr and "e" not in expr.lower():
        value = int(value)
    return value


# ----------------------------------------------------------------------------------------------- checks


def number(p: Problems, m: Mapping[str, Any], path: str, key: str, what: str, *, positive: bool = True) -> Any:
    """``m[key]`` as a finite number (arithmetic text allowed); None after recording the problem."""
    value = arithmetic(m.get(key))
    if value is None or (isinstance(value, float) and math.isnan(value)) or (positive and not value > 0):
        p.add(yamlio.join(path, key), f"expected {what}, got {show(m.get(key))}", m, key)
        return None
    return value


MAC_OPS = {"mac": {"mac": 1}, "mul": {"mac": 1}, "add": {"mac": 1}, "sub": {"mac": 1}, "neg": {"mac": 1}}
"""An imported MAC's operators: multiply-accumulate, its multiplier alone, its adder (add; sub and neg as additions
of a negation)."""


def ident(name: str) -> str:
    """A foreign name as an attnscope identifier: snake_case, lower case (``GlobalBuffer`` -> ``global_buffer``)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)  # PEInputBuffer -> PE_Input_Buffer
    return re.sub(r"[^a-z0-9_]", "_", snake.lower())


def default_name(path: str | Path) -> str:
    """An imported architecture's name: the file's stem, or its folder's name for a generic stem (arch.yaml)."""
    path = Path(path)
    generic = path.stem.lower() in ("arch", "architecture", "input", "spec") or ".arch" in path.name
    return ident(path.parent.name if generic and path.parent.name else path.stem.split(".")[0]).replace("_", "-")


def valid_name(text: str) -> bool:
    """Whether ``text`` can name a level, array or tensor in attnscope (an identifier)."""
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text))
