"""What a mapper returns, and the registry of mappers: ``(case, target) -> Design``.

A **design** is one mapping of a case onto a target and its cost, the same type for spatial arrays and
devices: the mapping (loop nests, binding and placement on an array; kernel, tiles, CTAs and splits on a
device) as plain data that ``--mapping`` loads again, and the numbers every report compares. A figure a
target has no model for (energy and area on devices) is None, never 0.

A **mapper** is registered under a name with the target kind it maps onto and a test ``applies(case,
target)`` that returns None when it can map the case, else the reason it cannot (shown to the user).
:func:`choose_mapper` takes the first registered mapper of the target's kind that applies, or the one named.

>>> [m.name for m in MAPPERS.values() if m.kind == "device"]
['kernel']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from einsum.errors import AttnscopeError, RegistryError
from simulator.targets import Target
from workloads.cases import Case

__all__ = ["MAPPERS", "Design", "Mapper", "MapperError", "choose_mapper", "register_mapper"]

OBJECTIVES = ("latency", "energy", "edp")
"""What a search minimises: latency (s), energy (J), or their product."""


class MapperError(AttnscopeError):
    """A mapper cannot map a case onto a target (the message says why and what would)."""


@dataclass(frozen=True)
class Design:
    """One mapping of a case onto a target and its cost. Seconds, bytes, joules, mm^2."""

    workload: str
    shape: Mapping[str, int]
    target: str
    target_kind: str
    mapper: str
    latency_s: float
    bound: str
    """The ceiling that set the latency: ``memory`` (DRAM), an array, or a GPU unit (``tensor``, ``sfu``...)."""
    dram_bytes: float
    energy_j: float | None
    """None where the target has no energy model (devices)."""
    area_mm2: float | None
    """The target's area; None where it has no area model (devices)."""
    utilization: float
    """Busy fraction of the bound compute resource over the latency (arrays: the busiest array; devices: tensor
    cores), in [0, 1]."""
    feasible: bool
    """False when the mapping does not fit the target (a buffer overflows); its numbers are then not a result."""
    onchip_bytes: float
    """Largest on-chip footprint: global-buffer occupancy on arrays; resident CTAs' shared memory on devices."""
    spill_bytes: float
    """DRAM traffic beyond the compulsory (every input read once, every output written once)."""
    mapping: Mapping[str, Any]
    """The mapping as plain data (``--save-mapping`` writes it; ``--mapping`` reads it back)."""
    description: str = ""
    notes: tuple[str, ...] = ()
    detail: Any = field(default=None, compare=False, repr=False)
    """The model's own result (a CascadeCost or a KernelPrediction), for reports that want more."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; the keys of ``attnscope map --json``."""
        return {
            "workload": self.workload,
            "shape": dict(self.shape),
            "target": self.target,
            "target_kind": self.target_kind,
            "mapper": self.mapper,
            "latency_s": self.latency_s,
            "bound": self.bound,
            "dram_bytes": self.dram_bytes,
            "energy_j": self.energy_j,
            "area_mm2": self.area_mm2,
            "utilization": self.utilization,
            "feasible": self.feasible,
            "onchip_bytes": self.onchip_bytes,
            "spill_bytes": self.spill_bytes,
            "spilled_bytes_by_level": dict(getattr(self.detail, "spill_bytes_by_level", None) or {}),
            "infeasible": list(getattr(self.detail, "infeasible", None) or ()),
            "description": self.description,
            "notes": list(self.notes),
            "mapping": _plain(self.mapping),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


Applies = Callable[[Case, Target], "str | None"]
Run = Callable[..., Design]


@dataclass(frozen=True)
class Mapper:
    """A registered mapper: its name, the target kind it maps onto, when it applies, and how it runs."""

    name: str
    kind: str
    """``arch`` or ``device``."""
    summary: str
    applies: Applies = field(repr=False)
    run: Run = field(repr=False)
    """``run(case, target, objective=..., mapping=None) -> Design``."""
    auto: bool = True
    """Whether :func:`choose_mapper` may pick it when none is named (templates are asked for by name)."""


_MAPPERS: dict[str, Mapper] = {}
MAPPERS: Mapping[str, Mapper] = MappingProxyType(_MAPPERS)
"""The registered mappers, in registration order (the order :func:`choose_mapper` tries them)."""


def register_mapper(mapper: Mapper) -> Mapper:
    """Add a mapper; names are unique."""
    if mapper.name in _MAPPERS:
        raise RegistryError(f"mapper {mapper.name!r} is already registered")
    if mapper.kind not in ("arch", "device"):
        raise RegistryError(f"mapper {mapper.name!r}: kind must be arch or device, got {mapper.kind!r}")
    _MAPPERS[mapper.name] = mapper
    return mapper


def choose_mapper(case: Case, target: Target, name: str | None = None) -> Mapper:
    """The named mapper (checked against the case and target), or the first automatic one that applies."""
    if name is not None and name != "auto":
        mapper = _MAPPERS.get(name)
        if mapper is None:
            raise RegistryError(f"unknown mapper {name!r}; mappers: {', '.join(_MAPPERS)}")
        if mapper.kind != target.kind:
            others = ", ".join(m.name for m in _MAPPERS.values() if m.kind == target.kind)
            raise MapperError(
                f"mapper {name!r} maps onto {'spatial arrays' if mapper.kind == 'arch' else 'devices'}; "
                f"{target.name} is {'a spatial array' if target.kind == 'arch' else 'a device'} (mappers for it: "
                f"{others})"
            )
        reason = mapper.applies(case, target)
        if reason is not None:
            raise MapperError(f"mapper {name!r} does not apply to {case.name} on {target.name}: {reason}")
        return mapper
    reasons = []
    for mapper in _MAPPERS.values():
        if mapper.kind != target.kind or not mapper.auto:
            continue
        reason = mapper.applies(case, target)
        if reason is None:
            return mapper
        reasons.append(f"{mapper.name}: {reason}")
    raise MapperError(f"no mapper maps {case.name} onto {target.name}: " + "; ".join(reasons))
