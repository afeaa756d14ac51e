"""Reading YAML specs, the one loader of every spec kind (architecture, device, mapping, constraints, sweep,
measurement plan): safe, refuses duplicate keys, reads 1e9 as a float (YAML 1.2), remembers the line of every key
and item (:func:`line_of`), and names the file, line and column of a syntax problem; and the one collector of
what is wrong in a spec (:class:`Problems`), which every spec reader fills and raises. It sits in einsum/, the
bottom layer, because every layer reads specs (workloads reads Hugging Face configs, simulator the hardware)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from einsum.errors import SpecError


class LineDict(dict):
    """A mapping from YAML that remembers the line of each key (for messages that name ``file:line``)."""

    lines: dict[Any, int]


class LineList(list):
    """A sequence from YAML that remembers the line of each item."""

    lines: list[int]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser where PyYAML has it: ~10x faster
    """Safe loader: 1e9 is a float (YAML 1.2), duplicate keys are refused, containers know their lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        out, lines = LineDict(), {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {lines[key]})", key_node.start_mark
                )
            lines[key] = key_node.start_mark.line + 1
            out[key] = self.construct_object(value_node, deep=True)
        out.lines = lines
        return out

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> list[Any]:
        out = LineList(self.construct_object(child, deep=True) for child in node.value)
        out.lines = [child.start_mark.line + 1 for child in node.value]
        return out


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_sequence)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def line_of(container: Any, key: Any) -> int | None:
    """The line a key of a mapping (or an index of a sequence) read by this module stands on, if known."""
    if isinstance(container, LineDict):
        return container.lines.get(key)
    if isinstance(container, LineList) and isinstance(key, int) and 0 <= key < len(container.lines):
        return container.lines[key]
    return None


def read_yaml(path: str | Path, origin: str) -> Any:
    """Parse a YAML file; a missing file or bad syntax raises SpecError naming ``origin`` (and line:column)."""
    return read_yaml_text(path, origin)[0]


def read_yaml_mapping(path: str | Path, origin: str, what: str) -> LineDict:
    """A YAML file whose top level must be a mapping (``what`` says whose keys, for the message); lines kept."""
    data = read_yaml(path, origin)
    if not isinstance(data, LineDict):
        raise SpecError(f"{origin}: expected a mapping of {what}, got {show(data)}")
    return data


def read_yaml_text(path: str | Path, origin: str, loader: type | None = None) -> tuple[Any, str]:
    """Parse a YAML file; returns (data, the text as read). ``loader``: a subclass of this module's safe loader
    (e.g. one that also reads a format's own tags), else this module's."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{origin}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{origin}: not a YAML text file (byte {exc.start} is not UTF-8); a spec is UTF-8 text"
        ) from None
    return _parse(text, origin, loader), text


def _parse(text: str, origin: str, loader: type | None = None) -> Any:
    try:
        return yaml.load(text, Loader=loader or _Loader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f"{origin}:{mark.line + 1}:{mark.column + 1}"
        elif isinstance(exc, yaml.reader.ReaderError):  # a bad character: only its offset is known
            where = f"{origin}:{text.count(chr(10), 0, exc.position) + 1}"
        else:
            where = origin
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc
        raise SpecError(f"{where}: invalid YAML: {problem}") from None


# ----------------------------------------------------------------------------------------------- checking specs

REQUIRED: Any = object()
"""Default of :meth:`Problems.value` for a key that must be given."""


def finite(value: Any) -> bool:
    """A real number (int or float, not bool), not inf or nan."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def show(value: Any) -> str:
    """A value as a message quotes it: its repr cut at 60 characters, then its type unless it is a number."""
    text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    kind = next(t.__name__ for t in type(value).__mro__ if t.__module__ == "builtins")  # a LineDict is a dict
    return text if finite(value) else f"{text} ({kind})"


def join(path: str, key: Any) -> str:
    """The dotted key of ``key`` under ``path`` (``levels[0]`` + ``name`` -> ``levels[0].name``)."""
    return f"{path}.{key}" if path else str(key)


def within(low: float, high: float, unit: str) -> tuple[Callable[[Any], bool], str]:
    """A check (test, what is valid) of a number in the physical range [low, high] of ``unit``."""
    return (lambda v: finite(v) and low <= v <= high), f"a number in [{low:g}, {high:g}] {unit}"


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "positive": (lambda v: finite(v) and v > 0, "a positive number"),
    "nonnegative": (lambda v: finite(v) and v >= 0, "a number >= 0"),
    "fraction": (lambda v: finite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "text": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    # Physical ranges: wide enough for any chip built or planned, narrow enough to catch a wrong unit or exponent.
    "clock_hz": within(1e6, 1e11, "Hz (1 MHz to 100 GHz)"),
    "bytes_per_s": within(1e6, 1e16, "B/s (1 MB/s to 10 PB/s)"),
    "memory_bytes": within(1e3, 1e15, "bytes (1 kB to 1 PB)"),
    "seconds_overhead": within(1e-10, 1.0, "s (0.1 ns to 1 s)"),
    "tflops": within(1e-6, 1e6, "TFLOP/s (1 MFLOP/s to 1 EFLOP/s)"),
}
"""Value kinds every spec reader checks against: kind -> (test, what a valid value is, for messages)."""


class Problems:
    """Every problem found while reading one spec, raised together as one SpecError.

    Each problem names the dotted key at fault and what would be valid; where the YAML reader saw the
    key (a :class:`LineDict` or :class:`LineList` container), the message starts ``file:line:``. One
    problem reads ``origin[:line]: key: what``; several are listed under ``origin: N problems in the KIND:``.

    >>> p = Problems("arch.yaml", "architecture spec")
    >>> levels = read_yaml_text_data("levels:\\n  - name: dram\\n    size: 3\\n")["levels"]
    >>> _ = p.mapping(levels[0], "levels[0]", ("name", "capacity_words"))
    >>> p.value(levels[0], "levels[0]", "capacity_words", "count")
    >>> print(p.message())
    arch.yaml: 2 problems in the architecture spec:
    arch.yaml:3: levels[0].size: unknown key; allowed keys: name, capacity_words
    arch.yaml: levels[0].capacity_words: missing; expected a positive integer
    """

    def __init__(self, origin: str, kind: str) -> None:
        self.origin = origin
        self.kind = kind
        self.items: list[tuple[int | None, str, str]] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, key: str, what: str, container: Any = None, item: Any = None) -> None:
        """Record that ``key`` (dotted) is at fault: ``what``; its line is ``container``'s ``item``, if known."""
        self.items.append((line_of(container, item), key, what))

    def mapping(
        self, value: Any, key: str, allowed: tuple[str, ...] | None, parent: Any = None, item: Any = None
    ) -> dict[Any, Any] | None:
        """``value`` if it is a mapping (recording keys not in ``allowed``, when given); None after recording why
        not. ``parent[item]`` is where ``value`` stands, for the line."""
        if not isinstance(value, dict):
            self.add(key, f"expected a mapping, got {show(value)}", parent, item)
            return None
        for k in value if allowed is not None else ():
            if k not in allowed:
                self.add(join(key, k), f"unknown key; allowed keys: {', '.join(allowed)}", value, k)
        return value

    def value(
        self,
        m: Mapping[Any, Any],
        path: str,
        key: str,
        kind: str | tuple[Callable[[Any], bool], str],
        default: Any = REQUIRED,
        null: bool = False,
    ) -> Any:
        """``m[key]`` checked against ``kind``: a name in :data:`CHECKS` or a reader's own (test, what is valid).
        Numbers of a named real kind come back as float (not those of count, int or a reader's own check);
        ``default`` when absent; None, recorded, when missing or invalid."""
        test, what = CHECKS[kind] if isinstance(kind, str) else kind
        what += " or null" if null else ""
        if key not in m:
            if default is REQUIRED:
                self.add(join(path, key), f"missing; expected {what}")
                return None
            return default
        value = m[key]
        if (value is None and null) or test(value):
            real = isinstance(kind, str) and kind not in ("count", "int")  # a reader's own check keeps its type
            return float(value) if real and finite(value) else value
        self.add(join(path, key), f"expected {what}, got {show(value)}", m, key)
        return None

    def message(self) -> str:
        """The problems as one text (see the class docstring)."""
        lines = [
            f"{self.origin}{'' if line is None else f':{line}'}: {key + ': ' if key else ''}{what}"
            for line, key, what in self.items
        ]
        head = [f"{self.origin}: {len(lines)} problems in the {self.kind}:"] if len(lines) > 1 else []
        return "\n".join(head + lines)

    def raise_if_any(self) -> None:
        """Raise one :class:`~einsum.errors.SpecError` listing every problem, if there is any."""
        if self.items:
            raise SpecError(self.message())


def read_yaml_text_data(text: str, origin: str = "<text>", loader: type | None = None) -> Any:
    """Parse YAML text with this module's loader (lines remembered); bad syntax raises SpecError."""
    return _parse(text, origin, loader)
