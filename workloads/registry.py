"""Registry of named cascades: name -> text, docstring, source paper and default rank sizes.

A cascade is parsed once per name (cached). Default sizes fill in what a user leaves out: partition parts
(``M0 = min(256, M)``) and any rank not given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

from einsum.cascade import Cascade
from einsum.errors import RegistryError, ShapeError

SizeDefaults = Callable[[dict[str, int], Cascade], dict[str, int]]


@dataclass(frozen=True)
class CascadeEntry:
    """A registered cascade: its text and what it means."""

    name: str
    text: str
    summary: str
    source: str
    defaults: SizeDefaults = field(repr=False)
    base_sizes: Mapping[str, int] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    @property
    def cascade(self) -> Cascade:
        return _parsed(self.name)

    def sizes(self, given: Mapping[str, int] | None = None) -> dict[str, int]:
        """Complete rank sizes: ``given`` over the entry's base sizes, then derived defaults."""
        sizes = dict(self.base_sizes)
        sizes.update(given or {})
        sizes = self.defaults(sizes, self.cascade)
        return self.cascade.rank_sizes(sizes)


CASCADES: dict[str, CascadeEntry] = {}


def register_cascade(entry: CascadeEntry) -> CascadeEntry:
    """Add a cascade to the registry; names are unique."""
    if entry.name in CASCADES:
        raise RegistryError(f"cascade {entry.name!r} is already registered")
    CASCADES[entry.name] = entry
    return entry


def get_cascade(name: str) -> CascadeEntry:
    """Look up a registered cascade; a miss lists the registered names."""
    try:
        return CASCADES[name]
    except KeyError:
        raise RegistryError(f"unknown cascade {name!r}; registered cascades: {', '.join(sorted(CASCADES))}") from None


@cache
def _parsed(name: str) -> Cascade:
    entry = CASCADES[name]
    return Cascade.from_text(entry.text, name=name, doc=entry.summary, origin=f"<cascade {name}>")


def parse_shape(text: str) -> dict[str, int]:
    """Parse ``B=1,H=2,M=128`` into a dict; ``K`` and ``M`` suffixes mean 2^10 and 2^20."""
    sizes: dict[str, int] = {}
    if not text.strip():
        return sizes
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ShapeError(f"shape item {item.strip()!r} is not RANK=SIZE (e.g. B=1,H=2,M=128)")
        if not key.isupper() or not key.replace("_", "").isalnum():
            raise ShapeError(f"shape item {item.strip()!r}: rank names are UPPER case, e.g. M=128")
        if key in sizes:
            raise ShapeError(
                f"shape item {item.strip()!r}: {key} is given twice ({key}={sizes[key]} before); give each rank once"
            )
        sizes[key] = parse_size(value, f"shape item {item.strip()!r}")
    return sizes


def parse_size(value: str, where: str) -> int:
    """An integer with an optional K (2^10) or M (2^20) suffix, e.g. ``4K``."""
    text = value.strip()
    scale = 1
    if text[-1:] in ("K", "k"):
        scale, text = 1 << 10, text[:-1]
    elif text[-1:] == "M":
        scale, text = 1 << 20, text[:-1]
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ShapeError(f"{where}: size {value!r} must be a positive integer (optionally with K or M)")
    return int(text) * scale
