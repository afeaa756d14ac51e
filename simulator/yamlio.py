"""Reading YAML specs: a safe loader that refuses duplicate keys and reads 1e9 as a float (YAML 1.2), and
errors that name the file, line and column of a syntax problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from einsum.errors import SpecError


class _Loader(yaml.SafeLoader):
    """Safe loader that reads 1e9 as a float (YAML 1.2) and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path, origin: str) -> Any:
    """Parse a YAML file; a missing file or bad syntax raises SpecError naming ``origin`` (and line:column)."""
    return read_yaml_text(path, origin)[0]


def read_yaml_text(path: str | Path, origin: str, loader: type[yaml.SafeLoader] = _Loader) -> tuple[Any, str]:
    """Parse a YAML file with ``loader`` (a SafeLoader subclass); returns (data, the text as read)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{origin}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=loader)  # loader is a SafeLoader
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
