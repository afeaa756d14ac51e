"""Per-point mapping strategies: name -> how one architecture point is mapped and costed.

A strategy takes plain data (the architecture, a registered cascade name, its rank sizes and the
strategy's validated parameters) and returns a :class:`~simulator.cost.CascadeCost`. Register more with
:func:`register_strategy` (e.g. a mapper search with a budget); a sweep spec names one under ``mapping``.

Registered here:

- ``fixed-binding``: the FuseMax-family mapping of :mod:`validate.fusemax.configs` (config ``binding``,
  ``arch`` or ``cascade``): P = P2 x P1 x P0, M = M1 x M0 with M0 = P0 = the 2-D array's width, the largest
  P1 whose query-row state fits the global buffer. Same numbers as ``fusemax_family``; the lowered cascade
  is cached per (cascade, sizes), so a sweep lowers each shape once per worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from einsum.errors import RegistryError
from einsum.lower import LoweredCascade, lower
from simulator.cost import CascadeCost
from simulator.specs import ArchSpec
from workloads import get_cascade


@dataclass(frozen=True)
class Param:
    """One parameter of a strategy."""

    default: Any
    allowed: tuple[Any, ...]  # the values it may take
    doc: str

    def check(self, value: Any) -> str | None:
        """None if value is allowed, else what is allowed."""
        if value in self.allowed and type(value) is type(self.default):
            return None
        return f"got {value!r}; allowed: {', '.join(map(str, self.allowed))}"


@dataclass(frozen=True)
class Strategy:
    """A registered way to map and cost one point."""

    name: str
    summary: str
    params: Mapping[str, Param]
    cascades: tuple[str, ...] | None  # the cascades it can map; None = any registered cascade
    evaluate: Callable[[ArchSpec, str, Mapping[str, int], Mapping[str, Any]], CascadeCost]


_STRATEGIES: dict[str, Strategy] = {}
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(_STRATEGIES)
"""Registered strategies by name."""


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a strategy; names are never replaced."""
    if strategy.name in _STRATEGIES:
        raise RegistryError(f"mapping strategy {strategy.name!r} is already registered")
    _STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The strategy called name; a miss lists the registered ones."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise RegistryError(f"unknown mapping strategy {name!r}; registered: {', '.join(_STRATEGIES)}") from None


@lru_cache(maxsize=512)
def lowered_cascade(cascade: str, sizes: tuple[tuple[str, int], ...]) -> LoweredCascade:
    """A registered cascade lowered at sizes (cached: lowering costs as much as a fifth of a point)."""
    return lower(get_cascade(cascade).cascade, dict(sizes))


def _fixed_binding(arch: ArchSpec, cascade: str, sizes: Mapping[str, int], params: Mapping[str, Any]) -> CascadeCost:
    """validate.fusemax.configs.fusemax_family with the lowered cascade taken from the cache."""
    from validate.fusemax.configs import fusemax_family  # validate/ sits beside the flow: lazily

    width = arch.array("pe_2d").shape[-1]
    lowered = lowered_cascade(cascade, tuple(sorted({**sizes, "M0": width}.items())))
    return fusemax_family(params["config"], arch, sizes, lowered=lowered).cost


register_strategy(
    Strategy(
        name="fixed-binding",
        summary="FuseMax-family tiling and binding (validate.fusemax.configs), largest P1 that fits the buffer",
        params={
            "config": Param(
                "binding", ("binding", "arch", "cascade"), "which FuseMax configuration's binding and schedule"
            )
        },
        cascades=("fusemax",),
        evaluate=_fixed_binding,
    )
)
