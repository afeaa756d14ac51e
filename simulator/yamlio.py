"""Reading YAML specs, the one loader of every spec kind (architecture, device, mapping, constraints, sweep,
measurement plan): safe, refuses duplicate keys, reads 1e9 as a float (YAML 1.2), remembers the line of every key
and item (:func:`line_of`), and names the file, line and column of a syntax problem."""

from __future__ import annotations

import re
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


def read_yaml_text(path: str | Path, origin: str) -> tuple[Any, str]:
    """Parse a YAML file; returns (data, the text as read)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{origin}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader
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
    return data, text
